"""``fedft serve --secagg`` over a real gRPC server: stages as round phases, dropouts, restarts."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fedft.core.serde import payload_from_bytes
from fedft.privacy.config import DPConfig
from fedft.privacy.secagg.task import MASKED
from fedft.server.state.base import State
from fedft.server.state.factory import open_state
from fedft.server.state.memory import InMemoryState
from fedft.server.state.records import ROUND_DONE
from fedft.server.tls import init_certificates
from tests.security.conftest import Target, adapter, sqlite_url
from tests.security.secagg_peer import (
    Participant,
    delta,
    make_secure_target,
    play_all,
    wait_for,
)

pytestmark = pytest.mark.integration


def join(target: Target, n: int, examples: list[int] | None = None) -> list[Participant]:
    """Enroll ``n`` devices and let each fetch its task of the round that opens."""
    counts = examples or [10 * (i + 1) for i in range(n)]
    people = [Participant(target.enrolled(f"dev{i}", counts[i]), i, counts[i]) for i in range(n)]
    for p in people:
        p.fetch()
    return people


def expected(people: list[Participant]) -> dict[str, torch.Tensor]:
    """The plain example-weighted mean of the given devices' changes, added to the start."""
    total = sum(p.num_examples for p in people)
    start = adapter()
    return {
        name: start[name]
        + sum(p.num_examples * delta(p.seed)[name].double() for p in people) / total
        for name in start
    }


def global_adapter(target: Target) -> dict[str, torch.Tensor]:
    return payload_from_bytes(target.coordinator.global_payload()).tensors


def round_done(state: State, number: int) -> bool:
    stored = state.get_round(number)
    return stored is not None and stored.status == ROUND_DONE


def close_to(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], bits: int) -> None:
    for name, tensor in want.items():
        # Under 2^-frac_bits per mean value (stochastic rounding), plus float32 storage.
        diff = (got[name].double() - tensor).abs().max()
        assert float(diff) <= 2.0**-bits + 1e-6, name


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("secagg-certs")
    init_certificates(folder, ["127.0.0.1"])
    return folder


@pytest.fixture
def secure(certs: Path) -> Iterator[Target]:
    running = make_secure_target(certs, InMemoryState(), min_clients=5)
    yield running
    running.stop()


def test_the_round_applies_the_plain_mean_and_stores_no_plain_update(secure: Target) -> None:
    people = join(secure, 5)
    assert sorted(p.task.me for p in people if p.task) == [0, 1, 2, 3, 4]
    assert {p.task.weight for p in people if p.task} == {0.2, 0.4, 0.6, 0.8, 1.0}
    assert play_all(people) == []
    wait_for(lambda: round_done(secure.state, 1))
    assert all(p.finished and p.ended == "" for p in people)
    metrics = secure.state.get_round(1).metrics  # type: ignore[union-attr]
    assert metrics["secagg_survivors"] == metrics["accepted"] == 5
    close_to(global_adapter(secure), expected(people), int(metrics["secagg_frac_bits"]))
    for update in secure.state.updates_for_round(1):
        payload = payload_from_bytes(secure.state.get_blob(update.payload_sha))
        assert set(payload.tensors) == {MASKED}  # the database never held an update in clear
        assert "train_loss" not in payload.metrics


def test_thirty_percent_drop_after_the_masked_input(certs: Path) -> None:
    target = make_secure_target(certs, InMemoryState(), min_clients=10)
    try:
        people = join(target, 10)
        assert play_all(people, {0: "unmask", 4: "unmask", 7: "unmask"}) == []
        wait_for(lambda: round_done(target.state, 1))
        metrics = target.state.get_round(1).metrics  # type: ignore[union-attr]
        # Their inputs are in the sum: their self-masks are rebuilt from their neighbours.
        assert metrics["secagg_survivors"] == 10
        close_to(global_adapter(target), expected(people), int(metrics["secagg_frac_bits"]))
    finally:
        target.stop()


def test_drops_at_every_other_stage(certs: Path) -> None:
    target = make_secure_target(certs, InMemoryState(), min_clients=10, round_timeout_s=8.0)
    try:
        people = join(target, 10)
        stops = {1: "keys", 5: "shares", 8: "masked"}
        assert play_all(people, stops) == []
        wait_for(lambda: round_done(target.state, 1))
        metrics = target.state.get_round(1).metrics  # type: ignore[union-attr]
        survivors = [p for i, p in enumerate(people) if i not in stops]
        assert metrics["secagg_survivors"] == len(survivors) == 7
        close_to(global_adapter(target), expected(survivors), int(metrics["secagg_frac_bits"]))
        assert people[1].ended == ""
        assert not people[1].finished
    finally:
        target.stop()


def test_below_the_threshold_the_round_fails_cleanly_and_the_next_runs(certs: Path) -> None:
    target = make_secure_target(certs, InMemoryState(), min_clients=4, rounds=2)
    try:
        people = join(target, 4)
        # k = 3, t = 2: with three gone after their keys, nobody can be unmasked.
        assert play_all(people, {1: "shares", 2: "shares", 3: "shares"}) == []
        wait_for(lambda: round_done(target.state, 1))
        first = target.state.get_round(1).metrics  # type: ignore[union-attr]
        assert first["secagg_failed"] == 1
        assert first["accepted"] == 0
        assert people[0].ended  # told why
        for name, tensor in adapter().items():
            assert torch.equal(global_adapter(target)[name], tensor)  # nothing applied
        again = join_existing(target, people)
        assert play_all(again) == []
        wait_for(lambda: round_done(target.state, 2))
        close_to(global_adapter(target), expected(again), 20)
    finally:
        target.stop()


def join_existing(target: Target, people: list[Participant]) -> list[Participant]:
    """The same enrolled devices, fetching the next round's task."""
    fresh = [Participant(p.who, p.seed, p.num_examples) for p in people]
    for p in fresh:
        p.fetch()
    return fresh


def test_a_restart_mid_round_fails_that_round_and_runs_the_next(
    certs: Path, tmp_path: Path
) -> None:
    url = sqlite_url(tmp_path)
    state = open_state(url)
    target = make_secure_target(certs, state, min_clients=3, rounds=2)
    people = join(target, 3)
    for p in people:  # keys sent, then the coordinator dies with the round's secrets
        assert p.client is not None
        p.who.stub.SecAggStep(p_request(p), metadata=p.who.signed("SecAggStep"), timeout=10)
    target.stop()
    state.close()
    state = open_state(url)
    restarted = make_secure_target(certs, state, min_clients=3, rounds=2, stage_timeout_s=30.0)
    try:
        wait_for(lambda: round_done(restarted.state, 1))
        assert restarted.state.get_round(1).metrics["secagg_failed"] == 1  # type: ignore[union-attr]
        # A restarted coordinator refuses stamps before its replay floor (honest clients
        # resync from its clock); these raw clients simply wait it out.
        floor = restarted.service.admission.servicer.nonces.floor
        wait_for(lambda: time.time() > floor + 0.01, timeout=10)
        fresh = []
        for old in people:
            who = restarted.attacker(old.who.client_id)
            who.key = old.who.key
            fresh.append(Participant(who, old.seed, old.num_examples))
            fresh[-1].fetch()
        assert play_all(fresh) == []
        wait_for(lambda: round_done(restarted.state, 2))
        close_to(global_adapter(restarted), expected(fresh), 20)
    finally:
        restarted.stop()
        state.close()


def p_request(p: Participant) -> object:
    from fedft.client.secagg_proto import keys_to_proto
    from fedft.proto.v1 import coordinator_pb2 as pb

    assert p.header is not None
    assert p.client is not None
    return pb.SecAggStepRequest(
        task_id=p.header.task_id, round=p.header.round, keys=keys_to_proto(p.client.advertise())
    )


def _host(cls: type, state: State, **extra: object) -> object:
    from fedft.core.payload import Payload
    from fedft.core.registry import get_strategy
    from fedft.server.coordinator import CoordinatorSettings

    return cls(
        state,
        get_strategy("fedavg_lora"),
        {"local_steps": 1},
        seed=7,
        settings=CoordinatorSettings(rounds=1, min_clients=2),
        model="m",
        initial=Payload(tensors=adapter()),
        **extra,
    )


def test_a_run_keeps_its_secure_aggregation_for_life() -> None:
    from fedft.privacy.secagg.settings import SecAggSettings
    from fedft.server.coordinator import Coordinator
    from fedft.server.secure_coordinator import SecureCoordinator

    secure_state, plain_state = InMemoryState(), InMemoryState()
    settings = SecAggSettings(neighbours=4)
    _host(SecureCoordinator, secure_state, secagg=settings)
    with pytest.raises(ValueError, match="restart it with --secagg"):
        _host(Coordinator, secure_state)
    resumed = _host(SecureCoordinator, secure_state, secagg=SecAggSettings())
    assert resumed.secagg == settings  # type: ignore[attr-defined]
    _host(Coordinator, plain_state)
    with pytest.raises(ValueError, match="without --secagg"):
        _host(SecureCoordinator, plain_state, secagg=settings)


def test_central_dp_noises_the_secure_sum_and_the_ledger_says_so(certs: Path) -> None:
    from fedft.privacy.config import DPConfig
    from fedft.privacy.secagg.settings import SecAggSettings

    state = InMemoryState()
    target = make_secure_target(
        certs,
        state,
        min_clients=4,
        secagg=SecAggSettings(),
        privacy=DPConfig(noise_multiplier=0.0, clip=0.05),
    )
    try:
        people = join(target, 4)
        assert {p.task.weight for p in people if p.task} == {1.0}  # each clipped update once
        assert {p.task.l2_clip for p in people if p.task} == {0.05}
        assert play_all(people, {3: "unmask"}) == []
        wait_for(lambda: round_done(state, 1))
        (entry,) = state.ledger()
        assert entry.aggregation == "secagg"
        assert entry.participants == 4  # the realised survivors
        assert entry.clip_norm == 0.05
        # z = 0: the update is the mean of the clipped changes over the expected count (4).
        start = adapter()
        got = global_adapter(target)
        for name, tensor in start.items():
            clipped = []
            for p in people:
                flat = torch.cat([t.reshape(-1) for t in delta(p.seed).values()]).double()
                scale = min(1.0, 0.05 / float(flat.norm()))
                clipped.append(delta(p.seed)[name].double() * scale)
            want = tensor.double() + sum(clipped) / 4
            assert float((got[name].double() - want).abs().max()) < 1e-6
    finally:
        target.stop()


def clipped_mean(
    people: list[Participant], clip: float, denominator: int
) -> dict[str, torch.Tensor]:
    """The start plus the devices' changes, each clipped to ``clip``, over ``denominator``."""
    start = adapter()
    scales = []
    for p in people:
        flat = torch.cat([t.reshape(-1) for t in delta(p.seed).values()]).double()
        scales.append(min(1.0, clip / float(flat.norm())))
    return {
        name: tensor.double()
        + sum(s * delta(p.seed)[name].double() for s, p in zip(scales, people, strict=True))
        / denominator
        for name, tensor in start.items()
    }


def distributed_target(certs: Path, state: State, dp: DPConfig, **extra: Any) -> Target:
    from fedft.privacy.secagg.settings import SecAggSettings

    return make_secure_target(
        certs, state, min_clients=4, secagg=SecAggSettings(), privacy=dp, **extra
    )


def test_distributed_dp_devices_add_the_noise_and_the_ledger_says_skellam(certs: Path) -> None:
    from fedft.privacy.secagg.noisy import NoisyEncoding

    state = InMemoryState()
    target = distributed_target(
        certs, state, DPConfig(noise_multiplier=0.0, clip=0.05, distributed=True)
    )
    try:
        people = join(target, 4)
        tasks = [p.task for p in people if p.task]
        assert len(tasks) == 4
        assert {t.survivors for t in tasks} == {3}  # ceil(0.7 * 4)
        assert {t.variance for t in tasks} == {0.0}  # z = 0: no noise shares
        assert {t.weight for t in tasks} == {1.0}
        assert {t.l2_clip for t in tasks} == {0.05}
        assert all(isinstance(t.encoding(), NoisyEncoding) for t in tasks)
        # One device sends its masked input, then drops: its input is still in the sum.
        assert play_all(people, {3: "unmask"}) == []
        wait_for(lambda: round_done(state, 1))
        metrics = state.get_round(1).metrics  # type: ignore[union-attr]
        assert "secagg_failed" not in metrics
        assert metrics["secagg_survivors"] == 4
        (entry,) = state.ledger()
        assert entry.mechanism == "skellam"
        assert entry.aggregation == "secagg"
        assert entry.participants == 4
        assert entry.noise_multiplier == 0.0
        assert entry.clip_norm == 0.05
        encoding = tasks[0].encoding()
        assert isinstance(encoding, NoisyEncoding)
        assert encoding.l2_sensitivity > 0
        assert entry.l2_sensitivity == pytest.approx(encoding.l2_sensitivity)
        assert entry.l1_sensitivity > 0
        # z = 0: the clipped mean over the expected count (4), decoded exactly.
        got, want = global_adapter(target), clipped_mean(people, 0.05, 4)
        for name, tensor in want.items():
            assert float((got[name].double() - tensor).abs().max()) < 1e-6, name
        assert all(p.finished for p in people[:3])
    finally:
        target.stop()


def test_distributed_dp_with_noise_moves_the_model_by_the_noise_it_promised(certs: Path) -> None:
    state = InMemoryState()
    target = distributed_target(
        certs, state, DPConfig(noise_multiplier=1.0, clip=0.05, distributed=True)
    )
    try:
        people = join(target, 4)
        task = people[0].task
        assert task is not None
        assert task.survivors == 3
        assert task.variance > 0
        assert play_all(people) == []
        wait_for(lambda: round_done(state, 1))
        (entry,) = state.ledger()
        assert entry.mechanism == "skellam"
        assert entry.participants == 4
        # Four shares calibrated for three: the realised noise is sqrt(4/3) times the planned.
        assert entry.noise_multiplier == pytest.approx(math.sqrt(4 / 3))
        scale = 2.0**task.frac_bits
        assert entry.l2_sensitivity == pytest.approx(scale * 0.05 + math.sqrt(task.length))
        # Each device's share: variance (z * l2)^2 / survivors, in ring units.
        assert task.variance == pytest.approx(entry.l2_sensitivity**2 / 3)
        promised = entry.noise_multiplier * entry.l2_sensitivity / scale / 4  # std of the mean
        assert promised == pytest.approx(math.sqrt(4 * task.variance) / scale / 4)
        got, want = global_adapter(target), clipped_mean(people, 0.05, 4)
        noise = torch.cat([(got[n].double() - want[n]).reshape(-1) for n in want])
        assert noise.numel() == task.length == 128
        # The noise has mean 0; with 128 draws the RMS is within 25% (4 sd) of its std.
        rms = float(noise.pow(2).mean().sqrt())
        assert rms == pytest.approx(promised, rel=0.25)
        assert abs(float(noise.mean())) < 4 * promised / math.sqrt(noise.numel())
    finally:
        target.stop()


def test_distributed_dp_round_below_min_survivors_fails_and_releases_nothing(
    certs: Path,
) -> None:
    state = InMemoryState()
    target = distributed_target(
        certs,
        state,
        DPConfig(noise_multiplier=1.0, clip=0.05, distributed=True, min_survivors=4),
        round_timeout_s=8.0,
    )
    try:
        people = join(target, 4)
        assert {p.task.survivors for p in people if p.task} == {4}
        # Three masked inputs carry 3/4 of the promised noise: the sum is never unmasked.
        assert play_all(people, {3: "masked"}) == []
        wait_for(lambda: round_done(state, 1))
        metrics = state.get_round(1).metrics  # type: ignore[union-attr]
        assert metrics["secagg_failed"] == 1
        assert metrics["accepted"] == 0
        assert state.ledger() == []
        assert all(p.ended and not p.finished for p in people[:3])  # told why, never unmasked
        for name, tensor in adapter().items():
            assert torch.equal(global_adapter(target)[name], tensor)  # nothing applied
    finally:
        target.stop()


def test_distributed_dp_hands_out_no_task_it_cannot_calibrate(
    certs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Four devices cannot meet a noise calibrated for five survivors: no device gets a task,
    # nothing is applied and nothing is released.
    state = InMemoryState()
    target = distributed_target(
        certs,
        state,
        DPConfig(noise_multiplier=1.0, clip=0.05, distributed=True, min_survivors=5),
        rounds=2,
    )
    try:
        for i in range(4):
            target.enrolled(f"dev{i}", 10)
        time.sleep(2.0)  # the round loop tries to open a round every 0.5 s
        assert all(not state.tasks_for_round(n) for n in (1, 2, 3))
        assert state.ledger() == []
        # Rounds that open under DP (an empty release) say why nothing ran, not "restarted".
        assert "--dp-min-survivors" in caplog.text
        assert "restarted" not in caplog.text
        for name, tensor in adapter().items():
            assert torch.equal(global_adapter(target)[name], tensor)
    finally:
        target.stop()
