"""Evaluation: metrics over trials, comparison of modes and model versions, the report."""
