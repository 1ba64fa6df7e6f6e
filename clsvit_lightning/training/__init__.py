"""Training utilities shared by the tasks: schedules and optimizer parameter groups (no Lightning)."""
