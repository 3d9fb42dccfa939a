"""Defect 12: a deployment's DP sample comes from a CSPRNG; seeded sampling stays reproducible."""

from __future__ import annotations

import dataclasses

import torch

from fedft.core.payload import Payload
from fedft.core.registry import get_strategy
from fedft.core.strategy import ClientInfo
from fedft.privacy.audit import AuditInput, audit
from fedft.privacy.config import SECRET, DPConfig
from fedft.privacy.ledger import ADD_REMOVE, LedgerEntry
from fedft.privacy.report import summary_table
from fedft.privacy.wrapper import DPServer, dp_settings_from_state

SPEC = get_strategy("fedavg_lora")
CLIENTS = [ClientInfo(f"c{i:03d}", 10) for i in range(200)]
SEEDED = DPConfig(noise_multiplier=1.0, clip=1.0, sampling_rate=0.5)


def sample(dp: DPConfig, seed: int = 0) -> list[str]:
    inner = SPEC.server_cls(SPEC.make_config({"fraction": 1.0, "min_clients": 1}), seed=seed)
    server = DPServer(inner, dp, seed=seed)
    server.initialize(Payload(tensors={"a.lora_A": torch.zeros(2, 2)}))
    return sorted(t.client_id for t in server.configure(1, CLIENTS))


def test_seeded_sampling_is_reproducible_from_the_seed() -> None:
    assert sample(SEEDED) == sample(SEEDED)


def test_secret_sampling_cannot_be_predicted_from_the_seed() -> None:
    """Before the fix, anyone knowing --seed knew each round's participants."""
    secret = dataclasses.replace(SEEDED, sampling=SECRET)
    first, second = sample(secret), sample(secret)
    assert first != sample(SEEDED)  # 2^-200 chance of a false failure
    assert first != second
    assert 0 < len(first) < len(CLIENTS)


def test_the_sampling_kind_survives_a_checkpoint_and_reaches_the_audit() -> None:
    secret = dataclasses.replace(SEEDED, sampling=SECRET)
    inner = SPEC.server_cls(SPEC.make_config({}), seed=0)
    server = DPServer(inner, secret, seed=0)
    server.initialize(Payload(tensors={"a.lora_A": torch.zeros(2, 2)}))
    kept = dp_settings_from_state(server.state_dict())
    assert kept is not None
    assert kept.sampling == SECRET
    entry = LedgerEntry(1, "gaussian", 1.0, 1.0, 0.5, 3, ADD_REMOVE, 0.0)
    result = audit(AuditInput([entry], None, "test", kept.sampling), 1e-5)
    assert result["sampling"] == SECRET
    rows = summary_table(result).columns[1]._cells
    assert "secret (CSPRNG)" in rows


def test_old_checkpoints_read_as_seeded() -> None:
    values = SEEDED.to_dict()
    del values["sampling"]
    assert DPConfig.from_dict(values).sampling == "seeded"
