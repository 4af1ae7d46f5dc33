"""Users, API keys with roles, and per-key rate limits."""
