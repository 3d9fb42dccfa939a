"""The server recovers the survivors' sum through dropouts at any stage, or fails cleanly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedft.privacy.secagg.encoding import Encoding
from fedft.privacy.secagg.errors import BelowThresholdError, SecAggError, StageError
from fedft.privacy.secagg.messages import AdvertiseKeys
from fedft.privacy.secagg.simulate import STAGES, secure_sum

from .conftest import make_round, share

ENC = Encoding(32, 8, 4.0, 4.0)


def _updates(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[float]]:
    rng = np.random.default_rng(seed)
    xs = [rng.integers(-4, 5, size=16).astype(np.float64) for _ in range(n)]
    ws = [float(w) for w in rng.integers(1, 5, size=n)]
    return xs, ws


def _plain(xs: list[np.ndarray], ws: list[float], keep: set[int]) -> np.ndarray:
    return np.sum([ws[i] * xs[i] for i in sorted(keep)], axis=0)


@pytest.mark.parametrize("stage", STAGES)
def test_thirty_percent_drop_at_any_stage_is_recovered(stage: str) -> None:
    n = 20
    xs, ws = _updates(n)
    dropped = set(np.random.default_rng(5).choice(n, size=6, replace=False).tolist())
    # k = 14, t = 8: even if all 6 dropped clients neighbour one survivor, 8 remain.
    total, st = secure_sum(xs, ws, encoding=ENC, neighbours=14, dropouts={stage: dropped})
    inputs = set(range(n)) if stage == "unmask" else set(range(n)) - dropped
    assert set(st.survivors) == inputs
    assert np.array_equal(total, _plain(xs, ws, inputs))
    assert st.total_weight == sum(ws[i] for i in inputs)


def test_drops_at_every_stage_in_one_round_with_logarithmic_degree() -> None:
    n = 64  # default degree 12, threshold 7
    xs, ws = _updates(n, seed=2)
    drops = {"advertise": {3}, "share": {10}, "mask": {20, 40}, "unmask": {50}}
    total, st = secure_sum(xs, ws, encoding=ENC, dropouts=drops)
    assert st.config.neighbours == 12
    inputs = set(range(n)) - {3, 10, 20, 40}
    assert set(st.survivors) == inputs
    assert np.array_equal(total, _plain(xs, ws, inputs))


@pytest.mark.parametrize("stage", STAGES)
def test_below_threshold_the_round_fails_cleanly(stage: str) -> None:
    xs, ws = _updates(6)
    with pytest.raises(BelowThresholdError):
        secure_sum(xs, ws, encoding=ENC, dropouts={stage: {0, 1, 2, 3}})


def test_a_failed_round_accepts_nothing_more() -> None:
    r = make_round(6)
    deliveries = share(r)
    r.server.receive_masked(r.clients[0].masked_input(deliveries[0], np.zeros(8), 1.0))
    with pytest.raises(BelowThresholdError):
        r.server.close_masked()
    assert r.server.failed is not None
    with pytest.raises(StageError, match="failed"):
        r.server.receive_masked(r.clients[1].masked_input(deliveries[1], np.zeros(8), 1.0))
    with pytest.raises(StageError):
        r.server.finish()


def test_the_server_refuses_out_of_turn_and_foreign_messages() -> None:
    r = make_round(4)
    ad = r.clients[0].advertise()
    r.server.receive_advertise(ad)
    with pytest.raises(StageError, match="twice"):
        r.server.receive_advertise(ad)
    with pytest.raises(StageError, match="not expected"):
        r.server.receive_advertise(AdvertiseKeys(77, ad.enc_public, ad.mask_public, ad.signature))
    with pytest.raises(StageError):
        r.server.close_shares()


def test_a_wrong_mask_key_share_is_detected() -> None:
    r = make_round(6)
    deliveries = share(r)
    for i, msg in deliveries.items():
        if i != 5:  # client 5 shared its keys, then dropped
            r.server.receive_masked(r.clients[i].masked_input(msg, np.zeros(8), 1.0))
    requests = r.server.close_masked()
    for i, req in requests.items():
        resp = r.clients[i].unmask(req)
        if i == min(requests):  # a cheating holder: its share of 5's key is garbage
            resp = dataclasses.replace(resp, key_shares={5: bytes(66)})
        r.server.receive_unmask(resp)
    with pytest.raises(SecAggError, match="inconsistent"):
        r.server.finish()
