"""The calibrated headline: coverage and bias in the exact model, the verdict, fault detection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedft.core.payload import Payload
from fedft.privacy.accounting import epsilon
from fedft.privacy.audit import empirical
from fedft.privacy.calibrated import ABOVE, BELOW, CONSISTENT, TWO_GAUSSIAN, headline, verdict
from fedft.privacy.config import DPConfig
from fedft.privacy.empirical import epsilon_two_gaussians_many, gdp_epsilon
from fedft.privacy.exact_model import cosines, draw, noise_for_mu
from fedft.privacy.ledger import LedgerEntry
from fedft.privacy.mechanisms import SecureGaussian
from fedft.privacy.wrapper import DPServer
from fedft.strategies.fedavg_lora.config import FedAvgLoRAConfig
from fedft.strategies.fedavg_lora.server import FedAvgLoRAServer

DELTA = 1e-5
ROUNDS = 5


def ledger(z: float) -> list[LedgerEntry]:
    """What the ledger records for ROUNDS full-participation rounds at noise multiplier z."""
    return [LedgerEntry(r, "gaussian", z, 1.0, 1.0, 1000, "add-remove", 0.0) for r in range(1, 6)]


def test_headline_is_median_unbiased_and_covers_where_the_paper_does_not() -> None:
    mu, n, dim, draws = 0.75, 300, 10**6, 200
    truth = gdp_epsilon(mu, DELTA)
    rng = np.random.default_rng(7)
    estimates, covered, paper = [], 0, []
    for _ in range(draws):
        final, _ = cosines(draw(rng, dim, n, 0, ROUNDS), noise_for_mu(mu, ROUNDS))
        best = headline(final, dim, DELTA, every_round=True)
        estimates.append(best.epsilon)
        covered += best.low <= truth <= best.high
        x = final * math.sqrt(dim)
        paper.append(float(epsilon_two_gaussians_many(0.0, 1.0, x.mean(), x.std(ddof=1), DELTA)))
    assert np.median(estimates) / truth == pytest.approx(1.0, abs=0.05)
    assert covered / draws >= 0.9
    # The paper's fitted-variance estimate is biased upwards here (the diagnosis).
    assert np.median(paper) / truth > 1.1


def test_unequal_variances_fall_back_to_the_two_gaussian_fit() -> None:
    rng = np.random.default_rng(1)
    dim = 10_000
    best = headline(rng.normal(2.0, 1.6, 500) / math.sqrt(dim), dim, DELTA)
    assert best.method == TWO_GAUSSIAN
    assert best.low <= best.epsilon <= best.high
    assert best.canaries_to_halve == 2000


def test_canaries_to_halve_the_interval() -> None:
    rng = np.random.default_rng(2)
    dim = 10**6
    best = headline(rng.normal(1.0, 1.0, 300) / math.sqrt(dim), dim, DELTA)
    # About four times as many: the interval in mu shrinks as 1 / sqrt(n).
    assert 900 <= best.canaries_to_halve <= 1500


def test_verdict_in_words() -> None:
    assert verdict(3.0, 4.0, 3.5)["code"] == CONSISTENT
    assert verdict(1.0, 2.0, 3.5)["code"] == BELOW
    above = verdict(4.0, 5.0, 3.5)
    assert above["code"] == ABOVE
    assert "ABOVE" in above["text"]
    assert "ledger" in above["text"]
    assert verdict(4.0, 5.0, math.inf)["code"] == CONSISTENT
    assert verdict(4.0, 5.0, None)["code"] == CONSISTENT


def test_half_the_recorded_noise_is_flagged_and_the_right_noise_is_not() -> None:
    """Ledger z = 2, added z = 1 (or 2), 5 rounds, 1,000 canaries: rates over 200 audits."""
    analytical = epsilon(ledger(2.0), DELTA)
    assert analytical is not None
    dim, draws = 10**6, 200
    rng = np.random.default_rng(11)
    flagged = {1.0: 0, 2.0: 0}
    for _ in range(draws):
        sample = draw(rng, dim, 1000, 0, ROUNDS)
        for added in flagged:
            final, _ = cosines(sample, added)
            best = headline(final, dim, DELTA, every_round=True)
            flagged[added] += verdict(best.low, best.high, analytical)["code"] == ABOVE
    assert flagged[1.0] / draws >= 0.95
    assert flagged[2.0] / draws <= 0.05


class HalfNoise(SecureGaussian):
    """A broken mechanism: adds half the noise it is asked for (the ledger does not know)."""

    def normal(self, size: int, std: float) -> torch.Tensor:
        return super().normal(size, std / 2)


@pytest.mark.parametrize(("noise", "flagged"), [(HalfNoise, True), (SecureGaussian, False)])
def test_the_audit_of_a_real_run_flags_the_broken_mechanism(
    noise: type[SecureGaussian], flagged: bool
) -> None:
    dim = 20_000
    config = DPConfig(noise_multiplier=2.0, clip=1.0, canaries=1000, unseen_canaries=100)
    server = DPServer(
        FedAvgLoRAServer(FedAvgLoRAConfig(), seed=0), config, seed=3, noise=noise(bytes(32))
    )
    server.initialize(Payload(tensors={"w": torch.zeros(dim)}))
    entries = []
    for r in range(1, ROUNDS + 1):
        server.configure(r, [])
        server.aggregate(r, [], [])
        assert server.last_entry is not None
        entries.append(server.last_entry)
    record = server.canary_record()
    assert record is not None
    emp = empirical(record, DELTA, every_round=True)
    analytical = epsilon(entries, DELTA)
    assert analytical is not None
    code = verdict(emp["ci95"][0], emp["ci95"][1], analytical)["code"]
    assert (code == ABOVE) is flagged
