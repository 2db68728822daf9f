"""Zero-shot rank-classification scoring and evaluation."""
