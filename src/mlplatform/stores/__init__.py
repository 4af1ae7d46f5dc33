"""Backends for shared state, each chosen by URL scheme."""
