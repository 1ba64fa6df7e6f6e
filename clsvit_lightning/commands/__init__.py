"""The project's own ``clsvit`` subcommands (everything that is not a Lightning Trainer entry point)."""
