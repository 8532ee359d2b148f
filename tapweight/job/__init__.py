"""A run's life: resolving a job, the run folder, its log, checkpoints, reports, saved models."""
