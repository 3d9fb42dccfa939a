"""Alembic migrations of the coordinator schema, shipped inside the package (no alembic.ini)."""
