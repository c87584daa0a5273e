"""Training: trainer, optimiser/schedule, checkpoints, metrics, DDP."""
