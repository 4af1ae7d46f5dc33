"""Model monitoring: drift of logged features against a version's reference sample."""
