"""The method: the three levels (engine), the hypergradient, models, batches, metrics, the final fine-tune."""
