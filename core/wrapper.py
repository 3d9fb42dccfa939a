"""The base of server-side wrappers (DP, robust aggregation, FedAU) around a linear strategy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from fedft.core.errors import UsageError
from fedft.core.payload import Payload
from fedft.core.strategy import ClientInfo, LinearUpdates, Result, ServerStrategy, Task


class LinearWrapper(ServerStrategy[Any]):
    """A server half around a :class:`LinearUpdates` one; delegates what it does not change.

    A wrapper overrides ``aggregate`` and whatever else it changes (sampling, its checkpoint
    entries); ``wraps_as`` names it in the refusal a strategy without update vectors gets.
    """

    wraps_as: ClassVar[str] = "this wrapper"

    def __init__(self, inner: ServerStrategy[Any], *, seed: int, name: str = "") -> None:
        # ``name`` is the registered strategy name, for the error a user sees; hosts pass it.
        if not isinstance(inner, LinearUpdates):
            raise UsageError(
                f"strategy {name or type(inner).__name__} does not expose its update "
                f"vectors (fedft.core.strategy.LinearUpdates), so {self.wraps_as} cannot wrap it"
            )
        super().__init__(inner.config, seed=seed)
        self.inner = inner
        self.linear: LinearUpdates[Any] = inner

    def initialize(self, initial: Payload) -> None:
        """Initialize the wrapped strategy."""
        self.inner.initialize(initial)

    def configure(self, server_round: int, clients: Sequence[ClientInfo]) -> list[Task]:
        """The wrapped strategy samples and builds tasks."""
        return self.inner.configure(server_round, clients)

    def check_update(self, server_round: int, result: Result) -> str | None:
        """The wrapped strategy decides what a well-formed update is."""
        return self.inner.check_update(server_round, result)

    def global_state(self) -> Payload:
        """The wrapped strategy's global state."""
        return self.inner.global_state()

    def state_dict(self) -> Payload:
        """The wrapped strategy's checkpoint (a wrapper with state adds its own entries)."""
        return self.inner.state_dict()

    def load_state_dict(self, state: Payload) -> None:
        """Restore the wrapped strategy."""
        self.inner.load_state_dict(state)


def without_prefix(state: Payload, prefix: str) -> Payload:
    """A checkpoint without the entries a wrapper added under ``prefix``: the wrapped one's."""
    return Payload(
        tensors={k: v for k, v in state.tensors.items() if not k.startswith(prefix)},
        config={k: v for k, v in state.config.items() if not k.startswith(prefix)},
        metrics=dict(state.metrics),
    )
