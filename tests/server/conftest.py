"""Shared server-test fixtures: one factory for the `Coordinator`s the tests build by hand."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import torch

from fedft.core.async_options import AsyncSettings
from fedft.core.payload import Payload
from fedft.core.registry import StrategySpec, get_strategy
from fedft.privacy.config import DPConfig
from fedft.server.async_coordinator import AsyncCoordinator
from fedft.server.coordinator import Coordinator, CoordinatorSettings
from fedft.server.state.base import State
from fedft.server.state.factory import open_state
from fedft.server.state.memory import InMemoryState


class CoordinatorFactory:
    """Build coordinators with small defaults; ``close`` stops them and closes states it opened.

    Only what a test varies is an argument; everything else in ``settings`` goes straight to
    `CoordinatorSettings`, whose own defaults apply to what is left out.
    """

    def __init__(self) -> None:
        self._coordinators: list[Coordinator] = []
        self._opened: list[State] = []

    def __call__(
        self,
        state: State | str | None = None,
        clock: Callable[[], float] = time.time,
        *,
        strategy: StrategySpec | str = "fedavg_lora",
        options: dict[str, Any] | None = None,
        seed: int = 0,
        model: str = "synthetic",
        initial: dict[str, torch.Tensor] | None = None,
        privacy: DPConfig | None = None,
        participation: str = "none",
        rounds: int = 1,
        mode: AsyncSettings | None = None,
        **settings: Any,
    ) -> Coordinator:
        """A coordinator over ``state``: a fresh in-memory one, a given one, or a URL to open.

        A state passed in stays the caller's to close, since restart tests close and reopen it.
        With ``mode`` the coordinator runs asynchronously (:class:`AsyncCoordinator`).
        """
        if state is None:
            state = InMemoryState()
        elif isinstance(state, str):
            state = open_state(state)
            # Recorded before the coordinator is built, so a refused start is closed too.
            self._opened.append(state)
        host = Coordinator if mode is None else partial(AsyncCoordinator, mode=mode)
        coordinator = host(
            state,
            get_strategy(strategy) if isinstance(strategy, str) else strategy,
            dict(options or {}),
            seed=seed,
            settings=CoordinatorSettings(rounds=rounds, **settings),
            model=model,
            initial=Payload(tensors=tiny_adapter() if initial is None else initial),
            clock=clock,
            privacy=privacy,
            participation=participation,
        )
        self._coordinators.append(coordinator)
        return coordinator

    def close(self) -> None:
        """Stop every coordinator built (releasing waiting fetches), then close opened states."""
        for coordinator in self._coordinators:
            coordinator.stop()
        for state in self._opened:
            state.close()  # idempotent: restart tests may have closed it already


def tiny_adapter() -> dict[str, torch.Tensor]:
    """A zero 2x2 LoRA pair, for tests to which the model's values do not matter."""
    return {"a.lora_A": torch.zeros(2, 2), "a.lora_B": torch.zeros(2, 2)}


@pytest.fixture
def make_coordinator() -> Iterator[CoordinatorFactory]:
    """A `CoordinatorFactory` whose coordinators and opened states are cleaned up after the test."""
    factory = CoordinatorFactory()
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def make_module_coordinator() -> Iterator[CoordinatorFactory]:
    """The same factory for module-scoped fixtures (a shared server); cleaned up with the module."""
    factory = CoordinatorFactory()
    yield factory
    factory.close()
