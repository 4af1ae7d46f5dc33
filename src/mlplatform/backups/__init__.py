"""Logical backups of the database to storage, restores into an empty database, scheduled runs."""
