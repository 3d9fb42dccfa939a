"""Differential privacy: mechanisms, accountant ledger and empirical audit."""
