"""The data side of a simulation: load, hold out a test set, split the rest among clients."""

from __future__ import annotations

from dataclasses import dataclass

from fedft.runtime.data import Example, load_dataset
from fedft.simulation.partition import partition, train_test_split
from fedft.simulation.spec import SimulationSpec


@dataclass(frozen=True)
class SimulationData:
    """Every client's training examples (by client id) and the held-out sets."""

    clients: dict[str, list[Example]]
    eval_set: list[Example]
    rouge_set: list[Example]


def client_ids(count: int) -> list[str]:
    """Return ``client-0`` ... with zero padding, so ids sort in numeric order."""
    width = len(str(count - 1))
    return [f"client-{c:0{width}d}" for c in range(count)]


def split_data(spec: SimulationSpec) -> SimulationData:
    """Load the dataset and split it as every engine must, deterministically for the seed."""
    examples = load_dataset(spec.dataset)
    train_idx, test_idx = train_test_split(
        len(examples), test_fraction=spec.test_fraction, seed=spec.seed
    )
    train = [examples[i] for i in train_idx]
    parts = partition(train, spec.clients, spec.partition, seed=spec.seed)
    return SimulationData(
        clients={
            cid: [train[i] for i in part]
            for cid, part in zip(client_ids(spec.clients), parts, strict=True)
        },
        eval_set=[examples[i] for i in test_idx[: spec.eval_examples]],
        rouge_set=[examples[i] for i in test_idx[: spec.rouge_examples]],
    )
