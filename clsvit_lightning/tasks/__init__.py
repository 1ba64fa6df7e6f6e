"""LightningModules: the training logic of each protocol (the networks are plain nn.Modules)."""
