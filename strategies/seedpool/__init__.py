"""Shared machinery of the seed-based strategies: seed pool, trainable set, versioned sync."""
