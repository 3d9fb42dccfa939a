"""A lying participant against `fedft serve --secagg`: each trick is refused, the round goes on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedft.client.secagg_proto import keys_to_proto
from fedft.core.payload import Payload
from fedft.core.serde import payload_to_bytes
from fedft.privacy.secagg.client import SecAggClient
from fedft.privacy.secagg.linear import HAS_UPDATE
from fedft.privacy.secagg.task import MASKED
from fedft.proto.v1 import coordinator_pb2 as pb
from fedft.server.state.memory import InMemoryState
from fedft.server.state.records import ROUND_DONE
from tests.security.conftest import TIMEOUT, Target, adapter, update_bytes
from tests.security.secagg_peer import Participant, make_secure_target, play_all, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def secure(certs: Path) -> Iterator[tuple[Target, list[Participant]]]:
    """A --secagg round of four devices, each holding its task."""
    running = make_secure_target(certs, InMemoryState(), min_clients=4, stage_timeout_s=5.0)
    people = [Participant(running.enrolled(f"dev{i}", 10), i, 10) for i in range(4)]
    for p in people:
        p.fetch()
    yield running, people
    running.stop()


def code_of(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def step(p: Participant, request: pb.SecAggStepRequest) -> grpc.StatusCode:
    return code_of(
        lambda: p.who.stub.SecAggStep(request, metadata=p.who.signed("SecAggStep"), timeout=TIMEOUT)
    )


def request_for(p: Participant, **message: object) -> pb.SecAggStepRequest:
    assert p.header is not None
    return pb.SecAggStepRequest(task_id=p.header.task_id, round=p.header.round, **message)


def finishes(target: Target, people: list[Participant]) -> None:
    """The honest devices still complete the round after the attempts."""
    assert play_all(people) == []
    wait_for(lambda: target.state.get_round(1).status == ROUND_DONE)  # type: ignore[union-attr]
    metrics = target.state.get_round(1).metrics  # type: ignore[union-attr]
    assert metrics["secagg_survivors"] == len(people)


def test_keys_in_another_participants_name_are_refused(
    secure: tuple[Target, list[Participant]],
) -> None:
    target, people = secure
    liar = people[0]
    assert liar.client is not None
    forged = keys_to_proto(liar.client.advertise())
    forged.sender = (forged.sender + 1) % 4
    assert step(liar, request_for(liar, keys=forged)) == grpc.StatusCode.INVALID_ARGUMENT
    # The liar's real attempt is now its second stage-1 call: the state machine let the
    # forged one in nowhere, so the honest round runs (the liar included, with fresh state).
    fresh = Participant(liar.who, liar.seed, liar.num_examples)
    fresh.header, fresh.task = liar.header, liar.task
    fresh.client, fresh.directory = liar.client, liar.directory
    fresh.client.stage = type(fresh.client.stage).ADVERTISE  # re-advertise the same keys
    finishes(target, [fresh, *people[1:]])


def test_a_second_set_of_keys_is_refused(secure: tuple[Target, list[Participant]]) -> None:
    _, people = secure
    p = people[0]
    assert p.client is not None
    keys = keys_to_proto(p.client.advertise())
    assert step(p, request_for(p, keys=keys, wait_ms=0)) == grpc.StatusCode.OK
    # The same message again is a retry (its answer may have been lost): a poll.
    assert step(p, request_for(p, keys=keys, wait_ms=0)) == grpc.StatusCode.OK
    assert p.task is not None
    fresh = SecAggClient(p.task.round_config(), p.task.me, p.who.key, {})
    other = keys_to_proto(fresh.advertise())  # fresh keys: a second, different set
    assert step(p, request_for(p, keys=other, wait_ms=0)) == grpc.StatusCode.INVALID_ARGUMENT


def test_someone_elses_task_is_refused(secure: tuple[Target, list[Participant]]) -> None:
    _, people = secure
    thief, victim = people[0], people[1]
    assert victim.header is not None
    request = pb.SecAggStepRequest(task_id=victim.header.task_id, round=victim.header.round)
    assert step(thief, request) == grpc.StatusCode.PERMISSION_DENIED


def test_malformed_shares_are_refused(secure: tuple[Target, list[Participant]]) -> None:
    _, people = secure
    p = people[0]
    bad = pb.SecAggShares(sealed=[pb.SecAggSealed(peer=1, ciphertext=b"x" * 10)])
    assert step(p, request_for(p, shares=bad)) == grpc.StatusCode.INVALID_ARGUMENT


def test_an_update_in_the_clear_is_refused_and_not_stored(
    secure: tuple[Target, list[Participant]],
) -> None:
    target, people = secure
    p = people[0]
    assert p.header is not None
    code = code_of(lambda: p.who.submit(p.header, update_bytes(adapter(3))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    wrong = payload_to_bytes(
        Payload(
            tensors={MASKED: torch.zeros(5, dtype=torch.int32)},
            metrics={"num_examples": 10, HAS_UPDATE: 1},
        )
    )
    assert code_of(lambda: p.who.submit(p.header, wrong)) == grpc.StatusCode.INVALID_ARGUMENT
    assert target.state.updates_for_round(1) == []


def test_a_run_without_secagg_refuses_the_call(target: Target) -> None:
    who = target.enrolled("plain")
    request = pb.SecAggStepRequest(task_id="x", round=1)
    code = code_of(
        lambda: who.stub.SecAggStep(request, metadata=who.signed("SecAggStep"), timeout=TIMEOUT)
    )
    assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


KEYS = st.builds(
    pb.SecAggKeys,
    sender=st.integers(0, 2**32 - 1),
    enc_public=st.binary(max_size=40),
    mask_public=st.binary(max_size=40),
    signature=st.binary(max_size=80),
)
SEALED = st.lists(
    st.builds(pb.SecAggSealed, peer=st.integers(0, 2**32 - 1), ciphertext=st.binary(max_size=200)),
    max_size=4,
)
SHARES = st.lists(
    st.builds(pb.SecAggShare, owner=st.integers(0, 2**32 - 1), share=st.binary(max_size=80)),
    max_size=4,
)
MESSAGES = st.one_of(
    st.builds(dict),
    st.builds(lambda k: {"keys": k}, KEYS),
    st.builds(lambda s: {"shares": pb.SecAggShares(sealed=s)}, SEALED),
    st.builds(
        lambda a, b: {"unmask": pb.SecAggUnmask(seed_shares=a, key_shares=b)}, SHARES, SHARES
    ),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
@given(message=MESSAGES, wait_ms=st.integers(-(2**40), 2**40))
def test_hostile_stage_messages_end_in_a_status(
    secure: tuple[Target, list[Participant]], message: dict[str, object], wait_ms: int
) -> None:
    _, people = secure
    p = people[3]
    request = request_for(p, wait_ms=min(max(wait_ms, -1), 50), **message)
    code = step(p, request)
    assert code in (
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ), code
