"""Keep a client's synced weights through its local steps: in memory, or on disk when large.

A seed client rebuilds its local model from the synced weights after its steps (FedKSeed: so
that it is exactly what its coefficients say). On a CPU client that copy would be one more
model in RAM, 513 MiB on SmolLM2, a third of its whole peak; large CPU sets therefore go to a
temporary file in fedft's cache folder (page cache, not the process's memory), read back bit
for bit. Small sets and GPU-resident ones keep the copy in (host) memory.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator

from fedft.core.cache import cache_dir
from fedft.kernels.seed_ops import FlatParams

# Trainable sets above this many values on the CPU are kept on disk (64 MiB of fp32).
DISK_MIN_VALUES = 1 << 24


def on_disk(params: FlatParams) -> bool:
    """Whether :func:`kept_weights` keeps ``params`` in a file rather than in memory."""
    return bool(params.flat) and params.total > DISK_MIN_VALUES and params.flat[0].is_cpu


@contextlib.contextmanager
def kept_weights(params: FlatParams) -> Iterator[Callable[[], None]]:
    """Save ``params`` now; yield a function that puts them back exactly as they were."""
    if not on_disk(params):
        saved = params.snapshot()
        yield lambda: params.restore(saved)
        return
    folder = cache_dir() / "scratch"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder, prefix="weights-") as file:
        params.write_to(file)
        yield lambda: params.read_from(file)
