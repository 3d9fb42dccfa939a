"""The host rule every engine obeys: check each update, aggregate only the accepted ones.

Hosts call ``check_update`` on every result before it reaches ``aggregate``; a refused result
becomes a :class:`Failure` whose reason starts with ``refused:``, and the round's metrics count
refusals under ``rejected``. The coordinator applies the same check at the door (a refused
client is told why at once) and counts the same way when the round closes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fedft.core.strategy import Failure, Result, ServerStrategy

REFUSED = "refused: "
REJECTED = "rejected"  # round metric: how many updates check_update refused


def refusal(client_id: str, why: str) -> Failure:
    """The failure a host records for an update ``check_update`` refused."""
    return Failure(client_id, REFUSED + why)


def accepted_results(
    server: ServerStrategy[Any],
    server_round: int,
    results: Iterable[Result],
    failures: list[Failure],
) -> Iterator[Result]:
    """Yield the results ``server`` accepts; append a refusal to ``failures`` for each other.

    Lazy, so a host can stream results into ``aggregate`` one at a time.
    """
    for result in results:
        why = server.check_update(server_round, result)
        if why is not None:
            failures.append(refusal(result.client_id, why))
            continue
        yield result


def rejected_count(failures: Iterable[Failure]) -> int:
    """How many of ``failures`` are refusals by ``check_update``."""
    return sum(1 for f in failures if f.reason.startswith(REFUSED))
