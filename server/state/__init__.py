"""Coordinator state: an interface with an in-memory and a SQL (SQLAlchemy) backend."""
