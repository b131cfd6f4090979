"""Evaluations of frozen representations. Evaluators read checkpoints and features, never the
training loop."""
