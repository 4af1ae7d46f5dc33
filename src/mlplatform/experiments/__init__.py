"""Experiments: A/B tests, canaries and shadow traffic, with per-variant statistics."""
