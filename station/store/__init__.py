"""The station's local store: one SQLite database (WAL, fsync on every commit) that every
component keeps its own tables in, plus the helpers for files that must survive a power
cut (the outbox's packages)."""
