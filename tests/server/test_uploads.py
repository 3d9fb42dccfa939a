"""Uploads in flight: one per task and a server-wide byte budget, released when the block ends."""

from __future__ import annotations

import pytest

from fedft.server.intake import Rejected
from fedft.server.uploads import Uploads


def test_one_upload_per_task_and_a_byte_budget() -> None:
    uploads = Uploads(100)
    with uploads.hold("t1", 60):
        assert uploads.buffered == 60
        with pytest.raises(Rejected) as same_task:
            uploads.hold("t1", 1).__enter__()
        assert same_task.value.code == "in_flight"
        with pytest.raises(Rejected) as over:
            uploads.hold("t2", 41).__enter__()
        assert over.value.code == "busy"
        with uploads.hold("t2", 40):
            assert uploads.buffered == 100
    assert uploads.buffered == 0


def test_a_failed_upload_releases_its_reservation() -> None:
    uploads = Uploads(10)
    with pytest.raises(RuntimeError), uploads.hold("t", 10):
        raise RuntimeError("stream broke")
    with uploads.hold("t", 10):
        pass
