"""Stage 2: the subject model, the paper's one-layer transformer, and its training."""
