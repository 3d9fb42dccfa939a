"""Ferret's ``scaling=reference``: the reference code's d/K scale and clip order, on the server."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from fedft.core.config import ConfigError, parse_overrides
from fedft.core.payload import Payload
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.core.strategy import ClientInfo, Result
from fedft.runtime.data import Example
from fedft.runtime.models import ModelBundle
from fedft.runtime.trainer import LocalTrainer
from fedft.strategies.ferret import FerretClient, FerretConfig, FerretServer
from fedft.strategies.ferret.projection import (
    SERIES_FROM,
    _rho_closed_form,
    _rho_series,
    reference_scale,
    truncated_normal_variance,
)

CONFIG = FerretConfig(seeds=16, local_steps=2, batch_size=2, lr=1e-3, server_lr=2.0)
REFERENCE = CONFIG.replace(scaling="reference")


def hop(payload: Payload) -> Payload:
    return payload_from_bytes(payload_to_bytes(payload))


def trainer_for(bundle: ModelBundle, n: int, tag: str) -> LocalTrainer:
    data = [Example(f"{tag} question {i}?", f"{tag} answer {i}.") for i in range(n)]
    return LocalTrainer(bundle, data, max_length=32)


def test_rho_matches_known_values_and_tends_to_one_over_3d() -> None:
    rho = truncated_normal_variance
    assert rho(10) * 30 == pytest.approx(0.9867, abs=1e-4)
    assert rho(1000) * 3000 == pytest.approx(0.99987, abs=1e-5)
    # rho = a^2/3 - 2 a^4/45 + O(a^6), a^2 = 1/d: 3 d rho = 1 - 2/(15 d) + O(1/d^2).
    for d in (10**4, 10**6, 10**9, 10**12):
        assert rho(d) * 3 * d == pytest.approx(1 - 2 / (15 * d), rel=1 / d**2 + 1e-15)
    with pytest.raises(ValueError, match="at least one"):
        rho(0)


def test_rho_closed_form_and_series_agree_where_the_closed_form_is_accurate() -> None:
    for d in (1, 2, 3, 10, SERIES_FROM - 1, SERIES_FROM, 100):
        assert _rho_closed_form(d) == pytest.approx(_rho_series(d), rel=1e-12)
    # Beyond, the closed form's cancellation shows (measured ~2.5e-7 at 1e9); the series does not.
    assert abs(_rho_closed_form(10**9) / _rho_series(10**9) - 1) > 1e-9


@pytest.mark.parametrize("d", [1, 4, 30])
def test_rho_is_the_variance_of_torchs_truncated_normal(d: int) -> None:
    bound = 1 / math.sqrt(d)
    samples = torch.nn.init.trunc_normal_(
        torch.empty(400_000, dtype=torch.float64),
        a=-bound,
        b=bound,
        generator=torch.Generator().manual_seed(d),
    )
    # Standard error of the sample variance here is ~0.2% of rho; 1% is a 5-sigma margin.
    assert float(samples.var()) == pytest.approx(truncated_normal_variance(d), rel=1e-2)


def test_reference_scale_is_d_rho_per_block() -> None:
    sizes = torch.tensor([1, 10, 1000, 4_000_000])
    scale = reference_scale(sizes)
    assert scale.dtype == torch.float64
    expected = [d * truncated_normal_variance(d) for d in (1, 10, 1000, 4_000_000)]
    assert scale.tolist() == expected
    assert float(scale.min()) > 0.29
    assert float(scale.max()) < 1 / 3


def one_round(
    configs: list[FerretConfig], bundle_factory: Callable[[], ModelBundle]
) -> tuple[list[FerretServer], Payload, torch.Tensor]:
    """One client update from a real tiny model, aggregated by a server per config."""
    client = FerretClient(CONFIG)
    trainer = trainer_for(bundle_factory(), 4, "a")
    client.prepare(trainer)
    servers = [FerretServer(config, seed=1) for config in configs]
    for server in servers:
        server.initialize(client.initial_state(trainer))
    (task,) = servers[0].configure(1, [ClientInfo("a", 4)])
    reply = hop(client.run(hop(task.payload), Payload(), trainer))
    for server in servers:
        assert server.aggregate(1, [Result("a", reply)], [])["accepted"] == 1
    sizes = servers[0].block_sizes
    assert sizes is not None
    return servers, reply, sizes


def test_the_client_sends_the_same_update_in_both_modes(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    server = FerretServer(CONFIG, seed=1)
    trainer = trainer_for(tiny_bundle(), 4, "a")
    replies = []
    for config in (CONFIG, REFERENCE):
        client = FerretClient(config)
        client.prepare(trainer)
        server.initialize(client.initial_state(trainer))
        (task,) = server.configure(1, [ClientInfo("a", 4)])
        replies.append(client.run(hop(task.payload), Payload(), trainer))
    for key in ("i", "b", "c"):
        assert torch.equal(replies[0].tensors[key], replies[1].tensors[key])


def test_reference_coefficients_are_d_rho_times_the_unbiased_ones(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    (unbiased, reference), _, sizes = one_round([CONFIG, REFERENCE], tiny_bundle)
    c_unbiased = unbiased.global_state().tensors["coeffs"]
    c_reference = reference.global_state().tensors["coeffs"]
    assert int((c_unbiased != 0).sum()) > 0
    expected = c_unbiased * reference_scale(sizes)
    # (mean * scale) * lr against (mean * lr) * scale: one rounding apart.
    torch.testing.assert_close(c_reference, expected, rtol=4e-16, atol=0.0)
    assert torch.equal(c_reference == 0, c_unbiased == 0)


def test_a_round_moves_the_model_by_d_rho_about_a_third(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    (unbiased, reference), _, sizes = one_round([CONFIG, REFERENCE], tiny_bundle)
    client = FerretClient(CONFIG)
    moves = []
    for server in (unbiased, reference):
        # A fresh model each: a loaded one is tagged with its coefficients and would move by
        # the difference between the two servers' states.
        evaluator = trainer_for(tiny_bundle(), 0, "eval")
        client.prepare(evaluator)
        params, geometry = client.geometry(evaluator)
        w0 = params.snapshot()
        client.load_global(hop(server.global_state()), evaluator)
        moves.append(params.snapshot().double() - w0.double())
    scale = reference_scale(sizes)
    for block in range(len(geometry.ends)):
        parts = [torch.cat([m[s:e] for s, e in geometry.block_spans(block)]) for m in moves]
        c_unbiased = unbiased.global_state().tensors["coeffs"][:, block]
        c_reference = reference.global_state().tensors["coeffs"][:, block]
        if float(parts[0].norm()) == 0:
            assert float(parts[1].norm()) == 0
            continue
        # The coefficients' change scales exactly; the fp32 replay of it to rounding.
        ratio = float(c_reference.norm() / c_unbiased.norm())
        assert ratio == pytest.approx(float(scale[block]), rel=1e-14)
        assert float(parts[1].norm() / parts[0].norm()) == pytest.approx(ratio, rel=1e-5)
    # The tiny model's blocks hold 64 to 16576 elements: d rho is 0.33264 to 0.33333.
    total = float(moves[1].norm() / moves[0].norm())
    assert float(scale.min()) - 1e-5 <= total <= float(scale.max()) + 1e-5
    assert total == pytest.approx(1 / 3, rel=3e-3)


def server_with(config: FerretConfig, sizes: list[int]) -> FerretServer:
    server = FerretServer(config, seed=1)
    ends = torch.tensor(sizes).cumsum(0)
    server.initialize(Payload(tensors={"ends": ends}))
    return server


def test_reference_clips_before_the_server_lr_and_unbiased_after() -> None:
    sizes = [100, 1000]
    base = CONFIG.replace(server_lr=10.0, basis_clip=10.0)
    unbiased, reference = (
        server_with(base, sizes),
        server_with(base.replace(scaling="reference"), sizes),
    )
    # Per basis over block 0 (d = 100), |c z| = 10 |c|: c = 0.5 is 5, c = 5 is 50.
    mean = torch.zeros(16, 2, dtype=torch.float64)
    mean[0, 0], mean[1, 0], mean[2, 1] = 0.5, -5.0, 0.01
    metrics = [s.apply_update(1, mean.flatten()) for s in (unbiased, reference)]
    c_u, c_r = (s.global_state().tensors["coeffs"] for s in (unbiased, reference))
    f = reference_scale(torch.tensor(sizes)).tolist()
    cap = 10.0 / math.sqrt(100)
    # Unbiased: 10 * 0.5 z has norm 50 > 10, clipped to norm 10; so is 10 * -5.
    assert (float(c_u[0, 0]), float(c_u[1, 0])) == (cap, -cap)
    # Reference: f 0.5 z (norm ~1.7) passes and is then multiplied by 10, past the clip;
    # f -5 z (norm ~17) is clipped to 10 first, so the step is server_lr x basis_clip = 100.
    assert float(c_r[0, 0]) == pytest.approx(10 * f[0] * 0.5, rel=1e-15)
    assert float(c_r[1, 0]) == -10 * cap
    assert float(c_r[0, 0]) * math.sqrt(100) > 10.0  # beyond what unbiased mode can commit
    # Neither clips the small block-1 vector: |10 c z| = 0.1 * sqrt(1000) ~ 3.2.
    assert float(c_r[2, 1]) == pytest.approx(f[1] * float(c_u[2, 1]), rel=1e-15)
    assert [m["clipped_bases"] for m in metrics] == [2, 1]
    assert [m["bases"] for m in metrics] == [3, 3]


def test_the_reference_presets_take_the_steps_of_the_converted_ones_up_to_3_d_rho() -> None:
    # paper (NI) is the reference preset in unbiased units: lr 10/3 = 10 x 1/3, clip 100 = 10 x 10.
    sizes = [100, 5000]
    mean = torch.zeros(16, 2, dtype=torch.float64)
    mean[0, 0], mean[1, 0] = 0.2, -40.0  # |c| sqrt(d) = 2 (unclipped), 400 (clipped in both)
    mean[3, 1] = 1e-3
    for pair in (("paper", "paper-reference"), ("paper-dolly", "paper-dolly-reference")):
        steps = []
        for preset in pair:
            values = parse_overrides(FerretConfig, [f"preset={preset}", "seeds=16"])
            server = server_with(FerretConfig.from_dict(values), sizes)
            server.apply_update(1, mean.flatten())
            steps.append(server.global_state().tensors["coeffs"])
        factor = 3 * reference_scale(torch.tensor(sizes))
        assert float(steps[1][1, 0]) == float(steps[0][1, 0])  # both at server_lr x clip
        assert float(steps[1][0, 0]) == pytest.approx(float(steps[0][0, 0] * factor[0]), rel=1e-14)
        assert float(steps[1][3, 1]) == pytest.approx(float(steps[0][3, 1] * factor[1]), rel=1e-14)


def test_paper_reference_presets_apply_through_the_config() -> None:
    ni = FerretConfig.from_dict(parse_overrides(FerretConfig, ["preset=paper-reference"]))
    assert (ni.scaling, ni.server_lr, ni.basis_clip) == ("reference", 10.0, 10.0)
    assert (ni.optimizer, ni.lr, ni.local_steps, ni.seeds) == ("sgd", 1e-4, 10, 200)
    assert ni.equal_weight
    assert (ni.block_order, ni.data_order) == ("module", "persistent")
    assert FerretConfig.from_dict(ni.to_dict()) == ni
    dolly = FerretConfig.from_dict(parse_overrides(FerretConfig, ["preset=paper-dolly-reference"]))
    assert (dolly.scaling, dolly.server_lr, dolly.basis_clip) == ("reference", 3.0, 10.0)
    # Every other value is the converted preset's: only the scale, lr and clip differ.
    for reference, converted in ((ni, "paper"), (dolly, "paper-dolly")):
        base = FerretConfig.from_dict(parse_overrides(FerretConfig, [f"preset={converted}"]))
        changed = {k for k, v in reference.to_dict().items() if base.to_dict()[k] != v}
        assert changed == {"scaling", "server_lr", "basis_clip"}
    paper = FerretConfig.from_dict(parse_overrides(FerretConfig, ["preset=paper"]))
    assert paper.scaling == "unbiased"
    assert paper.server_lr == pytest.approx(10 / 3)
    assert paper.basis_clip == 100.0
    unmatched = " ".join(FerretConfig.presets()["paper-reference"].unmatched)
    assert "higher moments" in unmatched


def test_scaling_values_are_checked_and_exact_coefficients_refused() -> None:
    with pytest.raises(ConfigError, match="scaling must be one of"):
        CONFIG.replace(scaling="paper")
    with pytest.raises(ConfigError, match="no least-squares form"):
        REFERENCE.replace(coefficients="exact")
    assert CONFIG.replace(coefficients="exact").scaling == "unbiased"
