"""Serving: in-process predictions, model and prediction caches, prediction logs, inference protocols."""
