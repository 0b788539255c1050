"""Alembic migrations, shipped inside the package so `cxr-screen db upgrade` works anywhere."""
