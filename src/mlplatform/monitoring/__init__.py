"""Monitoring: feedback, performance per model and version, drift and alerts."""
