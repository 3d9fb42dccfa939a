"""Audit outputs: ``audit.json``, ``audit.png`` and the terminal table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedft.privacy.calibrated import ABOVE
from fedft.privacy.ledger import AUDIT_JSON, AUDIT_PNG


def _json_safe(value: Any) -> Any:
    """Infinity and NaN are not JSON: write them as the strings "inf" and "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_json(result: dict[str, Any], folder: Path) -> Path:
    """Write ``audit.json`` atomically; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / AUDIT_JSON
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_json_safe(result), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def write_png(result: dict[str, Any], folder: Path) -> Path:
    """Plot epsilon over rounds and, with canaries, the seen vs unseen cosine histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    emp = result.get("epsilon_empirical")
    fig, axes = plt.subplots(1, 2 if emp else 1, figsize=(11 if emp else 6, 4), squeeze=False)
    ax = axes[0][0]
    curve = result["epsilon_curve"]
    ax.plot([p["round"] for p in curve], [p["epsilon_rdp"] for p in curve], "o-", label="RDP")
    # matplotlib silently skips infinite values: mark those rounds instead (defect 13).
    infinite = [p["round"] for p in curve if not _finite(p["epsilon_rdp"])]
    if infinite:
        finite = [p["epsilon_rdp"] for p in curve if _finite(p["epsilon_rdp"])]
        top = max(finite) if finite else 1.0
        ax.plot(
            infinite,
            [top] * len(infinite),
            "rx",
            label=f"epsilon infinite ({len(infinite)} rounds, drawn at the top)",
        )
    pld = result["epsilon_pld"]
    if isinstance(pld, float) and math.isfinite(pld):
        ax.axhline(pld, color="tab:green", ls="--", label=f"PLD (final) = {pld:.3f}")
    if emp and math.isfinite(emp["epsilon"]):
        ax.axhline(
            emp["epsilon"], color="tab:red", ls=":", label=f"empirical = {emp['epsilon']:.3f}"
        )
        low, high = emp["ci95"]
        if math.isfinite(low) and math.isfinite(high):
            ax.axhspan(low, high, color="tab:red", alpha=0.12, label="its 95% interval")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="round", ylabel=f"epsilon at delta={result['delta']:g}", title="privacy spent")
    ax.legend()
    verdict = result.get("verdict")
    if verdict:
        above = verdict["code"] == ABOVE
        fig.suptitle(
            ("WARNING: " if above else "empirical estimate: ") + verdict["text"],
            color="tab:red" if above else "black",
            fontsize=9,
            wrap=True,
        )
    if emp:
        hist = axes[0][1]
        values = emp["unseen_cosines"] + emp["seen_cosines"]
        bins = list(np.linspace(min(values), max(values), 31))
        hist.hist(emp["unseen_cosines"], bins=bins, alpha=0.6, label="unseen canaries")
        hist.hist(emp["seen_cosines"], bins=bins, alpha=0.6, label="inserted canaries")
        hist.set(
            xlabel="cosine with the final model delta",
            ylabel="canaries",
            title=f"canaries (d = {emp['dim']})",
        )
        hist.legend()
    fig.tight_layout(rect=(0, 0, 1, 0.93 if verdict else 1))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / AUDIT_PNG
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4f}"
    return str(value)


# Only secret sampling earns amplification: a seeded sample is known to whoever knows the seed.
SAMPLING_NOTES = {
    "secret": "secret (CSPRNG)",
    "seeded": "seeded: reproducible, not secret; epsilon assumes nobody knows the seed",
}


AGGREGATION_NOTES = {
    "plain": "in the clear: the server saw each clipped update",
    "secagg": "secure sum (SecAgg+): the server saw only the sum",
}
MECHANISM_NOTES = {
    "gaussian": "Gaussian, added by the server to the clipped sum (central DP)",
    "skellam": "Skellam shares added by every device (distributed DP): no noiseless sum seen",
}


def summary_table(result: dict[str, Any]) -> Table:
    """The audit at a glance."""
    table = Table(title=f"privacy audit of {result['source']}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    last = result["per_round"][-1]
    rows = [
        ("rounds", result["rounds"]),
        ("adjacency", result["adjacency"]),
        ("delta", f"{result['delta']:g}"),
        ("noise multiplier (last round)", last["noise_multiplier"]),
        ("clip norm (last round)", last["clip_norm"]),
        ("sampling rate (last round)", last["sampling_rate"]),
        ("client sampling", SAMPLING_NOTES.get(result.get("sampling", ""), "unknown")),
        ("aggregation (last round)", AGGREGATION_NOTES.get(last.get("aggregation", "plain"), "?")),
        ("noise (last round)", MECHANISM_NOTES.get(last.get("mechanism", "gaussian"), "?")),
        *(
            [
                ("epsilon, PLD (reported)", result["epsilon_pld"]),
                ("epsilon, RDP (cross-check)", result["epsilon_rdp"]),
            ]
            if result.get("accountant", "pld") == "pld"
            else [("epsilon, RDP (reported; Skellam has no PLD)", result["epsilon_rdp"])]
        ),
    ]
    emp = result.get("epsilon_empirical")
    if emp:
        low, high = emp["ci95"]
        paper_low, paper_high = emp["epsilon_paper_two_gaussian_bootstrap_ci95"]
        rows += [
            ("canaries inserted / unseen", f"{emp['canaries_seen']} / {emp['canaries_unseen']}"),
            ("epsilon, empirical (final model)", emp["epsilon"]),
            ("  95% interval", f"[{_fmt(low)}, {_fmt(high)}]"),
            ("  estimator", emp["estimator"]),
            ("  verdict", result["verdict"]["text"]),
            ("  inserted canaries to halve the interval", emp["canaries_to_halve_interval"]),
            ("  paper's two-Gaussian estimate", emp["epsilon_paper_two_gaussian"]),
            ("  its percentile bootstrap 95%", f"[{_fmt(paper_low)}, {_fmt(paper_high)}]"),
        ]
        if "lower_bound" in emp:
            conf = emp["lower_bound_confidence"]
            rows.append((f"  lower bound ({conf:.0%} confidence)", emp["lower_bound"]))
        if "all_iterates_epsilon" in emp:
            rows.append(("epsilon, empirical (all iterates)", emp["all_iterates_epsilon"]))
    for name, value in rows:
        text = _fmt(value)
        style = "bold red" if name == "  verdict" and result["verdict"]["code"] == ABOVE else None
        table.add_row(name, text, style=style)
    return table


def warning(result: dict[str, Any]) -> str | None:
    """A loud line for the terminal when the estimate is above the analytical epsilon."""
    verdict = result.get("verdict")
    if not verdict or verdict["code"] != ABOVE:
        return None
    emp = result["epsilon_empirical"]
    low, high = emp["ci95"]
    analytical = result.get("epsilon", result["epsilon_pld"])
    return (
        f"WARNING: the empirical epsilon {emp['epsilon']:.3f} (95% interval [{low:.3f}, "
        f"{high:.3f}]) is ABOVE the analytical epsilon {analytical:.3f} beyond "
        "sampling error: the mechanism may not do what the ledger says. Check the noise "
        "actually added, the clipping and the sampling."
    )


def print_audit(console: Console, result: dict[str, Any]) -> None:
    """Print the audit table, then the warning if there is one (stderr-style, in red)."""
    console.print(summary_table(result))
    loud = warning(result)
    if loud is not None:
        console.print(f"[bold red]{escape(loud)}[/bold red]")
