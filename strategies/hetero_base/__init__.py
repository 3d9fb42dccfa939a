"""Reusable pieces for LoRA of different ranks and depths per device: exact and padded sums.

``hetero_base`` is a shared base, not a registered strategy: the layouts, the exact low-rank
aggregation and the zero-padded sums that the registered ``legend`` and ``hetlora`` strategies
are built from. ``hetlora`` (``fedft.strategies.hetlora``) is one of them: the HetLoRA
baseline (per-device rank, zero-padding, norm-weighted mean).
"""
