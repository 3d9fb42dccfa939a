"""Reusable pieces for LoRA of different ranks and depths per device: exact and padded sums."""
