"""Database layer: typed SQLAlchemy models, sessions, queries and Alembic migrations."""
