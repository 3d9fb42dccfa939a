"""The client directory: token-for-identity enrollment, key lookup, liveness, change signals."""

from __future__ import annotations

import pytest

from fedft.core.identity import generate_key, hash_token, public_key_bytes
from fedft.server.enrollment import ClientDirectory
from fedft.server.intake import Rejected
from fedft.server.state.memory import InMemoryState
from fedft.server.state.records import TokenRecord


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def directory() -> tuple[ClientDirectory, Clock, list[str]]:
    state = InMemoryState()
    for token in ("t1", "t2", "t3"):
        state.add_token(TokenRecord(hash_token(token), 0.0))
    clock = Clock()
    signals: list[str] = []
    return ClientDirectory(state, clock, 60.0, lambda: signals.append("changed")), clock, signals


def test_enroll_heartbeat_and_liveness() -> None:
    clients, clock, signals = directory()
    key = public_key_bytes(generate_key())
    record = clients.enroll("t1", key, "edge-1", num_examples=5, properties={"device.mem": 1.0})
    assert (record.client_id, record.num_examples) == ("edge-1", 5)
    assert clients.public_key("edge-1") == key
    assert clients.public_key("nobody") is None
    assert [c.client_id for c in clients.alive()] == ["edge-1"]
    clock.now += 61
    assert clients.alive() == []  # silent past the liveness window
    clients.heartbeat("edge-1", num_examples=7)
    assert [(c.client_id, c.num_examples) for c in clients.alive()] == [("edge-1", 7)]
    assert signals == ["changed", "changed"]  # a waiting round may start after either


@pytest.mark.parametrize(
    ("key", "client_id", "examples", "code"),
    [
        (b"short", "edge-1", 0, "invalid"),
        (None, "Bad Id!", 0, "invalid"),
        (None, "edge-1", -1, "invalid"),
    ],
)
def test_bad_enrollments_are_refused(
    key: bytes | None, client_id: str, examples: int, code: str
) -> None:
    clients, _, signals = directory()
    with pytest.raises(Rejected) as refused:
        clients.enroll(
            "t1", key or public_key_bytes(generate_key()), client_id, num_examples=examples
        )
    assert refused.value.code == code
    assert signals == []


def test_tokens_are_one_time_and_ids_unique() -> None:
    clients, _, _ = directory()
    clients.enroll("t1", public_key_bytes(generate_key()), "edge-1")
    with pytest.raises(Rejected) as reused:
        clients.enroll("t1", public_key_bytes(generate_key()), "edge-2")
    assert reused.value.code == "unauthenticated"
    with pytest.raises(Rejected) as taken:
        clients.enroll("t2", public_key_bytes(generate_key()), "edge-1")
    assert taken.value.code == "exists"
    generated = clients.enroll("t3", public_key_bytes(generate_key()))
    assert generated.client_id.startswith("client-")
