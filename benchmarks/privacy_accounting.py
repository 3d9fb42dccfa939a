"""Time to turn a privacy ledger into epsilon: one-shot composition vs round-by-round.

Prints the seconds of each way and their ratio. Round-by-round composition is timed over the
first --incremental rounds and scaled up linearly (each round is one accountant call of about
the same cost), because running all of them takes minutes.
"""

from __future__ import annotations

import argparse
import time

import dp_accounting as dpa

from fedft.privacy.accounting import PLD, PLD_DISCRETIZATION, RDP, epsilon, ledger_event
from fedft.privacy.ledger import LedgerEntry


def ledger(rounds: int, z: float, q: float, *, changes: int = 1) -> list[LedgerEntry]:
    """A ledger whose noise multiplier changes ``changes - 1`` times; clip changes every round."""
    per = max(rounds // changes, 1)
    return [
        LedgerEntry(r, "gaussian", z * (1 + 0.1 * ((r - 1) // per)), 0.1 + 1e-4 * r, q, 10,
                    "add-remove", 0.0)
        for r in range(1, rounds + 1)
    ]  # fmt: skip


def timed(fn: object) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn()  # type: ignore[operator]
    return time.perf_counter() - start, float(value)


def incremental(entries: list[LedgerEntry], method: str, delta: float) -> float:
    """Compose one event per round on a live accountant (what we avoid)."""
    if method == RDP:
        accountant = dpa.rdp.RdpAccountant()
    else:
        accountant = dpa.pld.PLDAccountant(
            dpa.NeighboringRelation.ADD_OR_REMOVE_ONE,
            value_discretization_interval=PLD_DISCRETIZATION,
        )
    for e in entries:
        accountant.compose(
            dpa.PoissonSampledDpEvent(e.sampling_rate, dpa.GaussianDpEvent(e.noise_multiplier))
        )
    return float(accountant.get_epsilon(delta))


def library_pld(entries: list[LedgerEntry], delta: float) -> float:
    """The same one-shot composition through dp-accounting's PLDAccountant, for comparison."""
    accountant = dpa.pld.PLDAccountant(
        dpa.NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=PLD_DISCRETIZATION
    )
    accountant.compose(ledger_event(entries))
    return float(accountant.get_epsilon(delta))


def main() -> None:
    """Run the measurements and print a table."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=1000)
    p.add_argument("--noise", type=float, default=1.0)
    p.add_argument("--rate", type=float, default=0.01)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--incremental", type=int, default=20, help="rounds composed one by one")
    args = p.parse_args()
    print(f"ledger: {args.rounds} rounds, z={args.noise}, q={args.rate}, delta={args.delta:g}")
    print(f"{'case':<44}{'seconds':>10}{'epsilon':>10}")
    for changes in (1, 10):
        entries = ledger(args.rounds, args.noise, args.rate, changes=changes)
        for method in (PLD, RDP):
            seconds, eps = timed(lambda e=entries, m=method: epsilon(e, args.delta, m))
            print(
                f"{f'one-shot {method}, {changes} noise level(s)':<44}{seconds:>10.3f}{eps:>10.4f}"
            )
    entries = ledger(args.rounds, args.noise, args.rate)
    seconds, eps = timed(lambda: library_pld(entries, args.delta))
    print(f"{'one-shot PLDAccountant (e^-50 truncation)':<44}{seconds:>10.3f}{eps:>10.4f}")
    for method in (PLD, RDP):
        head = entries[: args.incremental]
        seconds, _ = timed(lambda h=head, m=method: incremental(h, m, args.delta))
        scaled = seconds * args.rounds / len(head)
        one_shot, _ = timed(lambda m=method: epsilon(entries, args.delta, m))
        label = f"round-by-round {method} (scaled from {len(head)})"
        print(
            f"{label:<44}{scaled:>10.1f}{'':>10}  -> one-shot is {scaled / one_shot:,.0f}x faster"
        )


if __name__ == "__main__":
    main()
