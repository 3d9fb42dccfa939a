"""Prometheus metrics of the coordinator: rounds, updates accepted and rejected, bytes, latency."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# One registry per process, separate from the library default so tests and embedding apps do
# not see our series mixed with theirs.
REGISTRY = CollectorRegistry()

ROUND = Gauge("fedft_round", "Number of the newest round", registry=REGISTRY)
ROUNDS_DONE = Counter("fedft_rounds_completed", "Rounds aggregated", registry=REGISTRY)
ENROLLED = Counter("fedft_clients_enrolled", "Clients enrolled", registry=REGISTRY)
ACCEPTED = Counter("fedft_updates_accepted", "Updates stored for aggregation", registry=REGISTRY)
REJECTED = Counter(
    "fedft_updates_rejected", "Requests refused, by reason", ["reason"], registry=REGISTRY
)
BYTES = Counter(
    "fedft_bytes",
    "Serialized message bytes exchanged with clients",
    ["direction"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "fedft_rpc_seconds",
    "Time spent serving each RPC",
    ["method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose the metrics over HTTP at ``http://host:port/metrics`` (a daemon thread)."""
    start_http_server(port, addr=host, registry=REGISTRY)
