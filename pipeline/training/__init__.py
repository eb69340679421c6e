"""Training: clip datasets, replayable augmentation, checkpoints that rebuild their model, the fold trainer."""
