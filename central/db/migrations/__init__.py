"""Alembic environment and revisions of the registry schema (run through central.db.migrate)."""
