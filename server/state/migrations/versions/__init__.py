"""Alembic revision scripts, oldest first by date in their file names."""
