"""Calibration of the one-shot empirical epsilon: exact-model draws, fault detection, tiny model.

1. Exact model (``fedft.privacy.exact_model``): the Gaussian mechanism in dimension d over T
   full-participation rounds with n seen and n unseen canaries, mu = sqrt(T) / z. Per
   estimator: median ratio to the true epsilon (that of mu-GDP, which the ledger also gives)
   and how often its 95% interval covers it, for mu in {0.25, 0.75, 1.5, 3, 6} and n in
   {100, 300, 1000}. Estimators: the calibrated headline, the paper's two-Gaussian estimate
   with its percentile bootstrap, the Jeffreys lower bound (share of draws at or below the
   truth) and the paper's all-iterates estimate (max cosine over rounds; no interval).
2. Fault detection: ledger z = 2, noise actually added z = 1 (or 2), 5 rounds, 1,000 canaries:
   share of audits whose verdict is "above beyond sampling error".
3. End to end: ``fedft simulate --model tiny`` (8 clients x 5 rounds, clip 0.05, 300 canaries)
   at z in {1, 3}, several seeds; reads each run's audit.json.

Prints markdown tables, writes a JSON of every figure and a plot. Measures; asserts nothing.

Examples::

    OMP_NUM_THREADS=1 python benchmarks/audit_calibration.py --plot docs/img/audit_calibration.png
    python benchmarks/audit_calibration.py --draws 50 --skip-e2e     # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedft.privacy.accounting import epsilon
from fedft.privacy.calibrated import ABOVE, headline, verdict
from fedft.privacy.empirical import epsilon_lower_bound, epsilon_two_gaussians_many, gdp_epsilon
from fedft.privacy.exact_model import cosines, draw, noise_for_mu
from fedft.privacy.ledger import LedgerEntry

MUS = (0.25, 0.75, 1.5, 3.0, 6.0)
SIZES = (100, 300, 1000)
BOOTSTRAP = 200


def paper(x: np.ndarray, delta: float, rng: np.random.Generator) -> tuple[float, float, float]:
    """The paper's estimate in null units and its percentile bootstrap interval."""
    point = float(epsilon_two_gaussians_many(0.0, 1.0, x.mean(), x.std(ddof=1), delta))
    samples = rng.choice(x, size=(BOOTSTRAP, x.size), replace=True)
    boots = epsilon_two_gaussians_many(
        0.0, 1.0, samples.mean(axis=1), samples.std(axis=1, ddof=1), delta
    )
    low, high = np.percentile(boots, [2.5, 97.5])
    return point, float(low), float(high)


def all_iterates(per_round: np.ndarray, seen: int, dim: int, delta: float) -> float:
    """The paper's all-iterates estimate: Gaussians fitted to seen and unseen max cosines."""
    best = per_round.max(axis=0) * math.sqrt(dim)
    s, u = best[:seen], best[seen:]
    return float(
        epsilon_two_gaussians_many(u.mean(), u.std(ddof=1), s.mean(), s.std(ddof=1), delta)
    )


def exact_section(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Median ratio and coverage per estimator over ``args.draws`` exact-model draws."""
    rng = np.random.default_rng(args.seed)
    rows = []
    for n in SIZES:
        keys = ("headline", "paper", "lower", "iterates")
        ratios: dict[float, dict[str, list[float]]] = {m: {k: [] for k in keys} for m in MUS}
        covers: dict[float, dict[str, int]] = {m: dict.fromkeys(keys[:3], 0) for m in MUS}
        methods: dict[float, int] = dict.fromkeys(MUS, 0)
        start = time.perf_counter()
        for _ in range(args.draws):
            sample = draw(rng, args.dim, n, n, args.rounds)
            for mu in MUS:
                truth = gdp_epsilon(mu, args.delta)
                final, per_round = cosines(sample, noise_for_mu(mu, args.rounds))
                best = headline(final[:n], args.dim, args.delta, every_round=True)
                x = final * math.sqrt(args.dim)
                est, low, high = paper(x[:n], args.delta, rng)
                bound = epsilon_lower_bound(x[:n], x[n:], 0.05, args.delta)
                r, c = ratios[mu], covers[mu]
                r["headline"].append(best.epsilon / truth)
                r["paper"].append(est / truth)
                r["lower"].append(bound / truth)
                r["iterates"].append(all_iterates(per_round, n, args.dim, args.delta) / truth)
                c["headline"] += best.low <= truth <= best.high
                c["paper"] += low <= truth <= high
                c["lower"] += bound <= truth
                methods[mu] += best.method != "equal-variance (mu-GDP) fit, t interval"
        seconds = time.perf_counter() - start
        for mu in MUS:
            rows.append(
                {
                    "mu": mu,
                    "n": n,
                    "truth": gdp_epsilon(mu, args.delta),
                    **{f"median_{k}": float(np.median(v)) for k, v in ratios[mu].items()},
                    **{f"cover_{k}": v / args.draws for k, v in covers[mu].items()},
                    "fallback": methods[mu] / args.draws,
                    "seconds_all_mu": seconds,
                }
            )
        print(f"exact model, n = {n}: {args.draws} draws in {seconds:.1f} s", file=sys.stderr)
    return rows


def fault_section(args: argparse.Namespace) -> dict[str, Any]:
    """Share of audits flagged "above" for half the recorded noise and for the right noise."""
    ledger = [
        LedgerEntry(r, "gaussian", 2.0, 1.0, 1.0, 1000, "add-remove", 0.0)
        for r in range(1, args.rounds + 1)
    ]
    analytical = epsilon(ledger, args.delta)
    assert analytical is not None
    rng = np.random.default_rng(args.seed + 1)
    flagged = {1.0: 0, 2.0: 0}
    epsilons: dict[float, list[float]] = {1.0: [], 2.0: []}
    for _ in range(args.fault_draws):
        sample = draw(rng, args.dim, 1000, 0, args.rounds)
        for added in flagged:
            final, _ = cosines(sample, added)
            best = headline(final, args.dim, args.delta, every_round=True)
            epsilons[added].append(best.epsilon)
            flagged[added] += verdict(best.low, best.high, analytical)["code"] == ABOVE
    return {
        "analytical": analytical,
        "draws": args.fault_draws,
        "flagged_half_noise": flagged[1.0] / args.fault_draws,
        "flagged_correct": flagged[2.0] / args.fault_draws,
        "median_epsilon_half_noise": float(np.median(epsilons[1.0])),
        "median_epsilon_correct": float(np.median(epsilons[2.0])),
    }


def e2e_command(z: float, seed: int, out: Path) -> list[str]:
    """The ``fedft simulate`` command of one end-to-end run."""
    return [
        *("fedft", "simulate", "--model", "tiny", "--clients", "8", "--rounds", "5"),
        *("--dp-noise", f"{z:g}", "--dp-clip", "0.05", "--canaries", "300", "--canary-iterates"),
        *("--rouge-examples", "0", "--eval-examples", "8", "--seed", str(seed)),
        *("--out", str(out), "--quiet"),
    ]


def e2e_section(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run (or, with --reuse, read) the tiny-model runs and collect their audits."""
    rows = []
    fedft = Path(sys.executable).with_name("fedft")
    for z in (1.0, 3.0):
        for seed in range(args.e2e_runs):
            out = args.e2e_out / f"z{z:g}-s{seed}"
            if not (args.reuse and (out / "audit.json").is_file()):
                cmd = e2e_command(z, seed, out)
                env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
                subprocess.run([str(fedft), *cmd[1:]], check=True, env=env, capture_output=True)
            audit = json.loads((out / "audit.json").read_text())
            emp = audit["epsilon_empirical"]
            rows.append(
                {
                    "z": z,
                    "seed": seed,
                    "analytical": audit["epsilon_pld"],
                    "headline": emp["epsilon"],
                    "ci95": emp["ci95"],
                    "paper": emp["epsilon_paper_two_gaussian"],
                    "paper_ci95": emp["epsilon_paper_two_gaussian_bootstrap_ci95"],
                    "all_iterates": emp.get("all_iterates_epsilon"),
                    "verdict": audit["verdict"]["code"],
                    "halve": emp["canaries_to_halve_interval"],
                }
            )
            print(f"end to end z = {z:g}, seed {seed}: done", file=sys.stderr)
    return rows


def print_tables(exact: list[dict[str, Any]], fault: dict[str, Any] | None, e2e: list[Any]) -> None:
    """Markdown tables for docs/results.md."""
    print("| mu | n | true eps | headline: median ratio | covers | paper: median ratio | "
          "covers | lower bound <= truth | all iterates: median ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in exact:
        print(
            f"| {r['mu']:g} | {r['n']} | {r['truth']:.2f} | {r['median_headline']:.3f} | "
            f"{r['cover_headline']:.0%} | {r['median_paper']:.3f} | {r['cover_paper']:.0%} | "
            f"{r['cover_lower']:.0%} | {r['median_iterates']:.3f} |"
        )
    if fault:
        print(
            f"\nfault (ledger z = 2, eps {fault['analytical']:.3f}; {fault['draws']} audits): "
            f"half noise flagged {fault['flagged_half_noise']:.1%} (median headline "
            f"{fault['median_epsilon_half_noise']:.2f}), correct flagged "
            f"{fault['flagged_correct']:.1%} (median {fault['median_epsilon_correct']:.2f})"
        )
    if e2e:
        print("\n| z | seed | analytical | headline [95%] | paper [bootstrap 95%] | "
              "all iterates | verdict | canaries to halve |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for r in e2e:
            lo, hi = r["ci95"]
            plo, phi = r["paper_ci95"]
            print(
                f"| {r['z']:g} | {r['seed']} | {r['analytical']:.2f} | {r['headline']:.2f} "
                f"[{lo:.2f}, {hi:.2f}] | {r['paper']:.2f} [{plo:.2f}, {phi:.2f}] | "
                f"{r['all_iterates']:.2f} | {r['verdict']} | {r['halve']} |"
            )


def plot(exact: list[dict[str, Any]], path: Path) -> None:
    """Median ratio and coverage against mu, headline vs paper, one line per n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for n, color in zip(SIZES, ("tab:blue", "tab:orange", "tab:green"), strict=True):
        rows = [r for r in exact if r["n"] == n]
        mus = [r["mu"] for r in rows]
        left.plot(mus, [r["median_headline"] for r in rows], "o-", color=color, label=f"n={n}")
        left.plot(mus, [r["median_paper"] for r in rows], "x--", color=color)
        right.plot(mus, [r["cover_headline"] for r in rows], "o-", color=color, label=f"n={n}")
        right.plot(mus, [r["cover_paper"] for r in rows], "x--", color=color)
    left.axhspan(0.9, 1.1, color="grey", alpha=0.15)
    right.axhline(0.9, color="grey", ls=":")
    left.set(xscale="log", xlabel="mu", ylabel="median estimate / true epsilon")
    right.set(xscale="log", xlabel="mu", ylabel="95% interval covers truth", ylim=(0, 1.02))
    for ax in (left, right):
        ax.set_xticks(MUS, [f"{m:g}" for m in MUS])
        ax.minorticks_off()
    left.set_title("solid: calibrated headline, dashed: paper", fontsize=9)
    right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    """Run the sections asked for and print their tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--draws", type=int, default=200, help="exact-model draws per (mu, n)")
    p.add_argument("--fault-draws", type=int, default=500, help="simulated audits per case")
    p.add_argument("--dim", type=int, default=10**6, help="dimension d of the update space")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--e2e-runs", type=int, default=3, help="tiny-model runs per noise level")
    p.add_argument("--e2e-out", type=Path, default=Path("runs/audit-calibration"))
    p.add_argument("--reuse", action="store_true", help="read end-to-end runs already done")
    p.add_argument("--skip-exact", action="store_true")
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument("--plot", type=Path, default=None, help="write the exact-model plot here")
    p.add_argument("--json", type=Path, default=None, help="write every figure here")
    p.add_argument("--from-json", type=Path, default=None, help="tables and plot from --json")
    args = p.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        exact, fault, e2e = saved["exact"], saved["fault"], saved["e2e"]
    else:
        exact = [] if args.skip_exact else exact_section(args)
        fault = None if args.skip_exact else fault_section(args)
        e2e = [] if args.skip_e2e else e2e_section(args)
    print_tables(exact, fault, e2e)
    if args.plot and exact:
        plot(exact, args.plot)
    if args.json:
        args.json.write_text(json.dumps({"exact": exact, "fault": fault, "e2e": e2e}, indent=1))


if __name__ == "__main__":
    main()
