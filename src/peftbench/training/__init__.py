"""Training: the loop (train.py) and the method-specific needs keyed by method (methods.py)."""
