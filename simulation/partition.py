"""Split a dataset among virtual clients: iid, Dirichlet over categories, or by category."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from fedft.core.errors import UsageError
from fedft.runtime.data import Example

PARTITION_HELP = (
    "iid | dirichlet:ALPHA (non-IID over categories; smaller ALPHA = more skew) | category"
)
_DIRICHLET_TRIES = 100
_MIN_ALPHA = 1e-3


def parse_partition(spec: str) -> tuple[str, float]:
    """Parse a partition spec into (kind, alpha); alpha is only meaningful for dirichlet."""
    kind, _, arg = spec.partition(":")
    if kind in ("iid", "category") and not arg:
        return kind, 0.0
    if kind == "dirichlet":
        try:
            alpha = float(arg)
        except ValueError:
            raise UsageError(
                f"partition {spec!r}: ALPHA must be a number, e.g. dirichlet:0.5"
            ) from None
        # Below ~1e-3 numpy's Dirichlet sampler underflows to NaN weights.
        if not (math.isfinite(alpha) and alpha >= _MIN_ALPHA):
            raise UsageError(f"partition {spec!r}: ALPHA must be a finite number >= {_MIN_ALPHA}")
        return kind, alpha
    raise UsageError(f"unknown partition {spec!r}; use {PARTITION_HELP}")


def _by_category(examples: Sequence[Example]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        groups[ex.category].append(i)
    return dict(sorted(groups.items()))


def partition(
    examples: Sequence[Example], num_clients: int, spec: str, *, seed: int
) -> list[list[int]]:
    """Return, for each client, the indices of its examples; every client gets at least one."""
    if num_clients < 1:
        raise UsageError(f"--clients must be >= 1, got {num_clients}")
    kind, alpha = parse_partition(spec)
    rng = np.random.default_rng(seed)
    if kind == "iid":
        order = rng.permutation(len(examples))
        parts = [sorted(int(i) for i in chunk) for chunk in np.array_split(order, num_clients)]
    elif kind == "category":
        parts = _category_parts(examples, num_clients)
    else:
        parts = _dirichlet_parts(examples, num_clients, alpha, rng)
    empty = [c for c, part in enumerate(parts) if not part]
    if empty:
        raise UsageError(
            f"partition {spec!r} leaves client {empty[0]} without examples "
            f"({len(examples)} examples, {len(_by_category(examples))} categories, "
            f"{num_clients} clients); "
            "use fewer clients or another partition"
        )
    return parts


def _category_parts(examples: Sequence[Example], num_clients: int) -> list[list[int]]:
    """Give whole categories to clients, largest first to the currently smallest client."""
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    groups = sorted(_by_category(examples).items(), key=lambda kv: (-len(kv[1]), kv[0]))
    for _, indices in groups:
        target = min(range(num_clients), key=lambda c: (len(parts[c]), c))
        parts[target].extend(indices)
    return [sorted(p) for p in parts]


def _dirichlet_parts(
    examples: Sequence[Example], num_clients: int, alpha: float, rng: np.random.Generator
) -> list[list[int]]:
    """Split each category by Dirichlet(alpha) proportions; redraw until no client is empty."""
    groups = _by_category(examples)
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    for _ in range(_DIRICHLET_TRIES):
        parts = [[] for _ in range(num_clients)]
        for indices in groups.values():
            shuffled = rng.permutation(indices)
            weights = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(weights)[:-1] * len(shuffled)).astype(int)
            for client, chunk in enumerate(np.split(shuffled, cuts)):
                parts[client].extend(int(i) for i in chunk)
        if all(parts):
            break
    return [sorted(p) for p in parts]


def train_test_split(n: int, *, test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Hold out a random ``test_fraction`` of indices; the test list stays in random order.

    Keeping the test list shuffled lets callers evaluate on a prefix of it and still get an
    unbiased sample of every category.
    """
    if not 0.0 < test_fraction < 1.0:
        raise UsageError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    order = [int(i) for i in np.random.default_rng(seed).permutation(n)]
    n_test = max(1, round(n * test_fraction))
    if n_test >= n:
        raise UsageError(f"a dataset of {n} examples is too small to hold out a test set")
    return sorted(order[n_test:]), order[:n_test]
