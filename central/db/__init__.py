"""The registry's state: SQLAlchemy 2 models, engines, Alembic migrations, and the few
operations whose safety depends on how the database locks (personal-number sequences, the
work queue, one-time enrollment tokens).

SQLite (one file, WAL) is the embedded default; PostgreSQL is the same schema at scale.
"""
