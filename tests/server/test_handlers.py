"""The lenient request parsers: any bytes give a message or a Malformed marker, never a raise."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from fedft.proto.v1 import coordinator_pb2 as pb
from fedft.server.handlers import Malformed, lenient

REQUESTS = [
    pb.EnrollRequest,
    pb.HeartbeatRequest,
    pb.FetchTaskRequest,
    pb.UpdateChunk,
    pb.DownloadArtifactRequest,
    pb.GetStatusRequest,
]


@pytest.mark.parametrize("cls", REQUESTS)
@settings(max_examples=200, deadline=None, database=None)
@given(data=st.binary(max_size=400))
def test_any_bytes_parse_or_are_marked(cls: type[Message], data: bytes) -> None:
    parsed = lenient(cls)(data)
    assert isinstance(parsed, (cls, Malformed))


@pytest.mark.parametrize("cls", REQUESTS)
def test_garbage_is_marked_and_a_message_round_trips(cls: type[Message]) -> None:
    assert isinstance(lenient(cls)(b"\xff\xff\xff"), Malformed)
    assert lenient(cls)(cls().SerializeToString()) == cls()
