"""Summarise a run's state for operators: rounds with bytes and metrics, clients with liveness."""

from __future__ import annotations

from fedft.core.status import ClientStatus, RoundStatus, RunStatus
from fedft.server.state.base import State
from fedft.server.state.records import ROUND_DONE


def run_status(state: State, *, liveness_s: float, now: float) -> RunStatus | None:
    """Build the status from the state alone (no running coordinator needed); None before a run."""
    run = state.get_run()
    if run is None:
        return None
    traffic: dict[int, list[int]] = {}
    for record in state.list_traffic():
        totals = traffic.setdefault(record.round, [0, 0])
        totals[0] += record.bytes_up
        totals[1] += record.bytes_down
    rounds = []
    for r in state.list_rounds():
        up, down = traffic.get(r.round, [0, 0])
        numbers = {
            k: v
            for k, v in r.metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        rounds.append(
            RoundStatus(
                round=r.round,
                status=r.status,
                tasks=len(state.tasks_for_round(r.round)),
                updates=len(state.updates_for_round(r.round)),
                bytes_up=up,
                bytes_down=down,
                metrics=numbers,
            )
        )
    clients = [
        ClientStatus(c.client_id, c.last_seen, c.num_examples, c.last_seen >= now - liveness_s)
        for c in state.list_clients()
    ]
    last = rounds[-1] if rounds else None
    return RunStatus(
        run_id=run.run_id,
        strategy=run.strategy,
        model=run.model,
        rounds_total=run.rounds,
        current_round=last.round if last else 0,
        finished=last is not None and last.round >= run.rounds and last.status == ROUND_DONE,
        rounds=rounds,
        clients=clients,
    )
