"""Alerts: rules evaluated by the scheduled checks, alerts deduplicated per (rule, model), notifications."""
