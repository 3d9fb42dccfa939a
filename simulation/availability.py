"""Which simulated clients are reachable in each round: ``--availability SPEC``.

Real devices join when idle, charging and on Wi-Fi; a simulation reproduces that with a model
per client. Every draw is a BLAKE2b hash of (seed, client id, round), as client sampling is, so
every engine sees the same clients come and go for the same seed. The models:

- ``always``: every client in every round (the default);
- ``bernoulli:P``: each client independently with probability P each round;
  ``bernoulli:LOW-HIGH``: each client's own P drawn once, uniformly in [LOW, HIGH];
- ``bernoulli-by-category:LOW,HIGH``: the data categories get probabilities evenly spaced from
  LOW to HIGH (in a seeded order); a client's P is the mean over its examples' categories, so
  availability is correlated with the data, as with night-shift phones;
- ``markov:P_ON,P_OFF``: a sticky on/off chain per client: off -> on with probability P_ON,
  on -> off with P_OFF; round 1 starts from the stationary P_ON / (P_ON + P_OFF);
- ``cyclic:PERIOD``: day and night: on for the first half of every PERIOD rounds (at least one
  round), off for the rest, each client with its own seeded phase.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fedft.core.errors import UsageError

AVAILABILITY_HELP = (
    "which clients are reachable each round: always | bernoulli:P | bernoulli:LOW-HIGH "
    "(per-client P drawn from the range) | bernoulli-by-category:LOW,HIGH (P tied to the "
    "client's data category) | markov:P_ON,P_OFF (sticky on/off) | cyclic:PERIOD (day/night); "
    "seeded, recorded per client and round in report.json"
)
KINDS = ("always", "bernoulli", "bernoulli-by-category", "markov", "cyclic")


@dataclass(frozen=True)
class AvailabilitySpec:
    """A parsed ``--availability`` value."""

    kind: str = "always"
    low: float = 1.0
    high: float = 1.0
    period: int = 0


def _probability(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--availability: {what} {text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"--availability: {what} must be in [0, 1], got {value:g}")
    return value


def parse_availability(text: str) -> AvailabilitySpec:
    """Parse and validate ``--availability``; a bad value is a one-line usage error."""
    kind, _, arg = text.strip().partition(":")
    if kind == "always" and not arg:
        return AvailabilitySpec()
    if kind == "bernoulli" and arg:
        low, dash, high = arg.partition("-")
        lo = _probability(low, "P")
        hi = _probability(high, "HIGH") if dash else lo
        if hi < lo:
            raise UsageError(f"--availability: LOW {lo:g} is above HIGH {hi:g}")
        return AvailabilitySpec("bernoulli", lo, hi)
    if kind in ("bernoulli-by-category", "markov") and arg.count(",") == 1:
        first, second = arg.split(",")
        names = ("LOW", "HIGH") if kind != "markov" else ("P_ON", "P_OFF")
        a, b = _probability(first, names[0]), _probability(second, names[1])
        if kind == "markov" and a + b == 0:
            raise UsageError("--availability: P_ON and P_OFF cannot both be 0")
        if kind != "markov" and b < a:
            raise UsageError(f"--availability: LOW {a:g} is above HIGH {b:g}")
        return AvailabilitySpec(kind, a, b)
    if kind == "cyclic" and arg:
        try:
            period = int(arg)
        except ValueError:
            raise UsageError(f"--availability: PERIOD {arg!r} is not an integer") from None
        if period < 2:
            raise UsageError(f"--availability: PERIOD must be >= 2, got {period}")
        return AvailabilitySpec("cyclic", period=period)
    raise UsageError(f"--availability: {text!r} is not one of: {AVAILABILITY_HELP.split(': ')[1]}")


def _uniform(*parts: object) -> float:
    """A uniform draw in [0, 1) from a hash of ``parts``: the same on every host."""
    text = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") / 2.0**64


@dataclass
class Availability:
    """The availability of a fixed set of clients, round by round (rounds count from 1)."""

    spec: AvailabilitySpec
    seed: int
    # Per client: the categories of its examples (for bernoulli-by-category).
    categories: Mapping[str, Sequence[str]]
    probability: dict[str, float] = field(init=False)
    _markov: dict[int, frozenset[str]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.probability = self._probabilities()

    @property
    def simulated(self) -> bool:
        """Whether clients ever go away (anything but ``always``); reports list them only then."""
        return self.spec.kind != "always"

    @property
    def clients(self) -> list[str]:
        """Every client id, sorted."""
        return sorted(self.categories)

    def _probabilities(self) -> dict[str, float]:
        """Each client's long-run fraction of rounds available (what FedAU estimates 1/p of)."""
        spec = self.spec
        if spec.kind == "always":
            return dict.fromkeys(self.clients, 1.0)
        if spec.kind == "bernoulli":
            return {
                c: spec.low + (spec.high - spec.low) * _uniform("avail-p", self.seed, c)
                for c in self.clients
            }
        if spec.kind == "bernoulli-by-category":
            return self._by_category()
        if spec.kind == "markov":
            return dict.fromkeys(self.clients, spec.low / (spec.low + spec.high))
        on = max(spec.period // 2, 1)
        return dict.fromkeys(self.clients, on / spec.period)

    def _by_category(self) -> dict[str, float]:
        names = sorted({cat for cats in self.categories.values() for cat in cats})
        order = sorted(names, key=lambda n: (_uniform("avail-cat", self.seed, n), n))
        step = (self.spec.high - self.spec.low) / max(len(order) - 1, 1)
        level = {name: self.spec.low + i * step for i, name in enumerate(order)}
        return {
            c: sum(level[cat] for cat in cats) / len(cats) if cats else self.spec.high
            for c, cats in self.categories.items()
        }

    def category_probability(self) -> dict[str, float]:
        """bernoulli-by-category: each data category's probability (empty for other models)."""
        if self.spec.kind != "bernoulli-by-category":
            return {}
        single = {c: cats[0] for c, cats in self.categories.items() if len(set(cats)) == 1}
        return {cat: self.probability[c] for c, cat in sorted(single.items())}

    def available(self, server_round: int) -> list[str]:
        """The ids of the clients reachable in ``server_round``, sorted."""
        kind = self.spec.kind
        if kind == "always":
            return self.clients
        if kind == "markov":
            return sorted(self._markov_state(server_round))
        if kind == "cyclic":
            period, on = self.spec.period, max(self.spec.period // 2, 1)
            return [
                c
                for c in self.clients
                if (server_round + int(_uniform("avail-phase", self.seed, c) * period)) % period
                < on
            ]
        return [
            c
            for c in self.clients
            if _uniform("avail", self.seed, server_round, c) < self.probability[c]
        ]

    def _markov_state(self, server_round: int) -> frozenset[str]:
        """The on-clients of a round, stepping the chain from the last round computed."""
        p_on, p_off = self.spec.low, self.spec.high
        if 1 not in self._markov:
            self._markov[1] = frozenset(
                c for c in self.clients if _uniform("avail", self.seed, 1, c) < self.probability[c]
            )
        last = max(r for r in self._markov if r <= max(server_round, 1))
        state = self._markov[last]
        for number in range(last + 1, server_round + 1):
            state = frozenset(
                c
                for c in self.clients
                if _uniform("avail", self.seed, number, c) < ((1.0 - p_off) if c in state else p_on)
            )
            self._markov[number] = state
        return state


def client_categories(clients: Mapping[str, Sequence[object]]) -> dict[str, list[str]]:
    """Per client, the ``category`` of each of its examples (what bernoulli-by-category reads)."""
    return {c: [str(getattr(ex, "category", "")) for ex in exs] for c, exs in clients.items()}


def simulation_availability(
    availability: str, seed: int, clients: Mapping[str, Sequence[object]]
) -> Availability:
    """The availability model of a simulation over its clients' data (every engine calls this)."""
    return Availability(parse_availability(availability), seed, client_categories(clients))


def report_entry(model: Availability, text: str) -> dict[str, object]:
    """What ``report.json`` says about availability: the spec and each client's probability."""
    return {
        "spec": text,
        "probability": {c: round(p, 6) for c, p in sorted(model.probability.items())},
        "category_probability": {c: round(p, 6) for c, p in model.category_probability().items()},
    }
