"""Evaluation (`matting eval`): scoring models and settings against ground truth; the metrics and the HTML report."""
