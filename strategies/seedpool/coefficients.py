"""Server side of the seed-based strategies: the global model as versioned seed coefficients.

The global model is ``w0 + sum_{k,l} C[k, l] * z(seed_k)|block_l``. ``C`` is kept in float64
(every client's contribution is summed exactly enough that arrival order does not matter), with
a snapshot per version a client may still hold, so that a client is sent only what changed
since the version it last reported.
"""

from __future__ import annotations

import torch

from fedft.core.payload import Payload


class CoefficientStore:
    """The current coefficients, snapshots of older versions, and each client's version."""

    def __init__(self, shape: tuple[int, int]):
        self.current = torch.zeros(shape, dtype=torch.float64)
        self.version = 0
        self.snapshots: dict[int, torch.Tensor] = {}
        self.synced: dict[str, int] = {}
        # Snapshots of the newest ``keep`` versions stay besides the referenced ones: under
        # --mode async a client reports a version only after newer ones were committed.
        self.keep = 0

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, blocks): a row per seed, plus a scale row in a scaled frame (``Geometry``)."""
        rows, cols = self.current.shape
        return int(rows), int(cols)

    def holds(self, version: int) -> bool:
        """Whether a delta can be computed from ``version``."""
        return version in (0, self.version) or version in self.snapshots

    def at(self, version: int) -> torch.Tensor:
        """Return the coefficients of ``version`` (0 is the pretrained model: all zeros)."""
        if version == self.version:
            return self.current
        if version == 0:
            return torch.zeros_like(self.current)
        return self.snapshots[version]

    def base_for(self, client_id: str) -> int:
        """Return the version ``client_id`` last reported holding (0 if never)."""
        version = self.synced.get(client_id, 0)
        return version if self.holds(version) else 0

    def delta_for(self, client_id: str) -> tuple[int, torch.Tensor]:
        """Return ``(base, current - coefficients[base])`` for ``client_id``."""
        base = self.base_for(client_id)
        return base, self.delta_since(base)

    def delta_since(self, version: int) -> torch.Tensor:
        """Return ``current - coefficients[version]``."""
        return self.current - self.at(version)

    def record_sync(self, client_id: str, version: int) -> None:
        """Remember that ``client_id`` now holds ``version`` (ignored if unknown)."""
        if self.holds(version):
            self.synced[client_id] = version

    def commit(self, added: torch.Tensor, version: int) -> None:
        """Add ``added`` to the coefficients as the new ``version``; prune unused snapshots."""
        if version <= self.version:
            raise ValueError(f"version {version} is not after {self.version}")
        self.current = self.current + added.to(torch.float64)
        self.version = version
        self.snapshots[version] = self.current
        newest = sorted(self.snapshots)[-(self.keep + 1) :]
        referenced = set(self.synced.values()) | {version} | set(newest)
        self.snapshots = {v: c for v, c in self.snapshots.items() if v in referenced}

    def to_payload(self) -> Payload:
        """Checkpoint the store."""
        tensors = {"coeffs": self.current.clone()}
        tensors.update({f"snap.{v}": c.clone() for v, c in self.snapshots.items()})
        ids = sorted(self.synced)
        return Payload(
            tensors=tensors,
            config={
                "version": self.version,
                "synced_ids": ids,
                "synced_versions": [self.synced[i] for i in ids],
            },
        )

    @classmethod
    def from_payload(cls, state: Payload) -> CoefficientStore:
        """Restore a store from :meth:`to_payload` output."""
        current = state.tensors["coeffs"].to(torch.float64)
        store = cls((int(current.shape[0]), int(current.shape[1])))
        store.current = current.clone()
        version = state.config["version"]
        store.version = int(version) if isinstance(version, int) else 0
        store.snapshots = {
            int(name.removeprefix("snap.")): t.to(torch.float64).clone()
            for name, t in state.tensors.items()
            if name.startswith("snap.")
        }
        store.snapshots[store.version] = store.current
        ids = state.config.get("synced_ids", [])
        versions = state.config.get("synced_versions", [])
        if isinstance(ids, list) and isinstance(versions, list):
            store.synced = {
                str(i): v for i, v in zip(ids, versions, strict=True) if isinstance(v, int)
            }
        return store
