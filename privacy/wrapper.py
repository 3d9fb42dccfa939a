"""Server-side client-level DP around any strategy that exposes its update vectors.

The wrapper owns client sampling (Poisson, so that amplification by sampling applies), clips
each client's update vector (``fedft.core.strategy.LinearUpdates``) to L2 norm C, inserts the
audit's canary clients, adds Gaussian noise to the sum, divides by the expected number of
participants and hands the mean to the wrapped strategy. Every round leaves a ledger entry.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from fedft.core.errors import UsageError
from fedft.core.payload import MetricValue, Payload
from fedft.core.rng import derive_seed
from fedft.core.sampling import client_seed
from fedft.core.strategy import ClientInfo, Failure, Result, ServerStrategy, Task
from fedft.core.wrapper import LinearWrapper, without_prefix
from fedft.privacy.canaries import CanaryBank, CanaryPlan, CanaryRecord, included
from fedft.privacy.config import SECRET, DPConfig
from fedft.privacy.ledger import ADD_REMOVE, GAUSSIAN, PLAIN, SECAGG, SKELLAM, LedgerEntry
from fedft.privacy.mechanisms import AdaptiveClip, SecureGaussian, clip_l2, update_noise_multiplier

if TYPE_CHECKING:
    from fedft.privacy.secagg.noisy import NoisyEncoding

logger = logging.getLogger(__name__)

PREFIX = "dp."
_SEED_MASK = (1 << 64) - 1


class DPServer(LinearWrapper):
    """DP-FedAvg (McMahan et al. 2018) with optional adaptive clipping, around ``inner``.

    Adjacency is add/remove-one-client; the sum's sensitivity is the clip norm C, so the noise
    is N(0, (z C)^2 I). The denominator is the expected participant count q * (clients +
    canaries), never the realised one. Round metrics of the wrapped strategy that depend on
    individual clients (e.g. train loss) are not reported: they are not privatised.
    """

    def __init__(
        self,
        inner: ServerStrategy[Any],
        dp: DPConfig,
        *,
        seed: int,
        noise: SecureGaussian | None = None,
        name: str = "",
    ):
        super().__init__(inner, seed=seed, name=name)
        self.dp = dp
        self.noise = noise or SecureGaussian()
        self.clipper = AdaptiveClip(dp.clip, dp.target_quantile, dp.clip_lr)
        self.plan = CanaryPlan(derive_seed(seed & _SEED_MASK, 0xA0D17), dp.canaries, dp.unseen)
        self.population = 0
        self.delta: torch.Tensor | None = None
        self.max_cosines: torch.Tensor | None = None
        self.bank: CanaryBank | None = None
        self.last_entry: LedgerEntry | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def initialize(self, initial: Payload) -> None:
        """Initialize the wrapped strategy and the canary bookkeeping."""
        self.inner.initialize(initial)
        self._start_canaries()

    def _start_canaries(self) -> None:
        if self.plan.total == 0:
            return
        dim = self.linear.update_size()
        self.delta = torch.zeros(dim, dtype=torch.float64)
        if self.dp.all_iterates:
            self.max_cosines = torch.full((self.plan.total,), -1.0, dtype=torch.float64)

    def _bank(self) -> CanaryBank:
        if self.bank is None:
            self.bank = CanaryBank(self.plan, self.linear.update_size())
        return self.bank

    # --- a round -----------------------------------------------------------------------------
    def configure(self, server_round: int, clients: Sequence[ClientInfo]) -> list[Task]:
        """Poisson-sample clients at the DP rate; the wrapped strategy builds their tasks."""
        self.population = len(clients)
        self._update_noise()  # a noise split that cannot work fails before anyone trains
        rate = self.dp.sampling_rate
        chosen = [c for c in clients if rate >= 1.0 or self._draw(server_round, c) < rate * 2**63]
        if not chosen:
            return []
        tasks = self.inner.configure(server_round, chosen)
        if len(tasks) != len(chosen):
            raise UsageError(
                "under DP the wrapper samples the clients (--dp-sampling-rate); set the "
                "strategy's own sampling to take every client it is offered "
                "(fraction=1, min_clients=1)"
            )
        return tasks

    def _draw(self, server_round: int, client: ClientInfo) -> int:
        """A uniform 63-bit draw deciding whether ``client`` takes part in the round.

        Secret sampling asks the OS CSPRNG, so nobody, the seed's holder included, can tell
        who was sampled; the outcome is the round's task list, which the host stores with the
        round, so a resumed round keeps it. Seeded sampling is reproducible and public.
        """
        if self.dp.sampling == SECRET:
            return secrets.randbits(63)
        return client_seed(self.seed, server_round, "dp:" + client.client_id)

    def _count_stddev(self) -> float:
        """Noise on the unclipped count of adaptive clipping: as set, or expected / 20 (TFF)."""
        return self.dp.count_stddev or self.expected_participants() / 20

    def _update_noise(self) -> float:
        """Noise multiplier on the updates; less than z when the clip count also spends some."""
        z = self.dp.noise_multiplier
        if not (self.dp.adaptive and z > 0):
            return z
        return update_noise_multiplier(z, self._count_stddev())

    def expected_participants(self) -> float:
        """The fixed denominator: q times (clients offered + seen canaries), at least 1."""
        return max(self.dp.sampling_rate * (self.population + self.plan.seen), 1.0)

    def aggregate(
        self, server_round: int, results: Iterable[Result], failures: Sequence[Failure]
    ) -> dict[str, MetricValue]:
        """Clip, add canaries, noise the sum, apply the mean; record the round in the ledger."""
        self.last_entry = None
        dim = self.linear.update_size()
        clip = self.clipper.clip
        total = torch.zeros(dim, dtype=torch.float64)
        participants = unclipped = rejected = 0
        for result in results:
            problem = self.inner.check_update(server_round, result)
            if problem is not None:
                logger.warning("round %d: rejected %s: %s", server_round, result.client_id, problem)
                rejected += 1
                continue
            vector = self.linear.update_vector(server_round, result)
            if vector is None:
                continue
            clipped, within = clip_l2(vector.to(torch.float64), clip)
            total += clipped
            participants += 1
            unclipped += int(within)
        return self._release(
            server_round,
            total,
            participants,
            failures=failures,
            rejected=rejected,
            unclipped=unclipped,
        )

    def release_sum(
        self, server_round: int, total: torch.Tensor, contributors: int, failures: Sequence[Failure]
    ) -> dict[str, MetricValue]:
        """Noise and apply a sum of clipped updates that came out of a secure sum (--secagg).

        Each device clipped its own update to the clip norm before masking it, so the sum has
        the sensitivity it has here; the server adds the noise to the unmasked sum (central
        DP: the coordinator sees that sum, never one update). Adaptive clipping is refused
        with secure aggregation: it needs each device's clipped-or-not bit.
        """
        return self._release(
            server_round,
            total.to(torch.float64).clone(),
            contributors,
            failures=failures,
            aggregation=SECAGG,
        )

    def release_noised_sum(
        self,
        server_round: int,
        total: torch.Tensor,
        contributors: int,
        failures: Sequence[Failure],
        *,
        encoding: NoisyEncoding,
        survivors: int,
    ) -> dict[str, MetricValue]:
        """Apply a secure sum that already carries every survivor's noise (distributed DP).

        The coordinator never held the sum without noise; it adds none. The ledger records
        the Skellam mechanism the ``survivors`` realised: their summed variance over the L2
        sensitivity in ring units (at least the planned noise multiplier, since a round with
        fewer survivors than the noise was calibrated for is never unmasked).
        """
        realised = encoding.noise_multiplier(survivors)
        return self._release(
            server_round,
            total.to(torch.float64).clone(),
            contributors,
            failures=failures,
            aggregation=SECAGG,
            distributed=(realised, encoding),
        )

    def _release(
        self,
        server_round: int,
        total: torch.Tensor,
        participants: int,
        *,
        failures: Sequence[Failure],
        rejected: int = 0,
        unclipped: int = 0,
        aggregation: str = PLAIN,
        distributed: tuple[float, NoisyEncoding] | None = None,
    ) -> dict[str, MetricValue]:
        """Add the canaries and the noise to a clipped sum, apply the mean, write the entry.

        ``distributed`` (realised noise multiplier, encoding): the devices added the noise.
        """
        dim = self.linear.update_size()
        clip = self.clipper.clip
        canaries = [
            j
            for j in range(self.plan.seen)
            if included(self.plan, server_round, j, self.dp.sampling_rate)
        ]
        for j in canaries:
            # A canary is a huge update in its direction, so clipping leaves exactly C * c_j.
            total += clip * self._bank().vector(j)
        participants += len(canaries)
        z = self.dp.noise_multiplier
        z_update = self._update_noise()
        if distributed is None:
            noise_std = z_update * clip
            total += self.noise.normal(dim, noise_std)
        else:
            realised, encoding = distributed
            noise_std = realised * encoding.l2_sensitivity / encoding.scale
        mean = total / self.expected_participants()
        metrics = self.linear.apply_update(server_round, mean)
        self._track_canaries(mean)
        if self.dp.adaptive:
            count_noise = float(self.noise.normal(1, self._count_stddev() if z > 0 else 0.0)[0])
            self.clipper.update(unclipped, participants, self.expected_participants(), count_noise)
        self.last_entry = LedgerEntry(
            round=server_round,
            mechanism=GAUSSIAN if distributed is None else SKELLAM,
            noise_multiplier=z if distributed is None else distributed[0],
            clip_norm=clip,
            sampling_rate=self.dp.sampling_rate,
            participants=participants,
            adjacency=ADD_REMOVE,
            recorded_at=time.time(),
            aggregation=aggregation,
            l2_sensitivity=0.0 if distributed is None else distributed[1].l2_sensitivity,
            l1_sensitivity=0.0 if distributed is None else distributed[1].l1_sensitivity,
        )
        return {
            **metrics,
            "accepted": participants - len(canaries),
            "rejected": rejected,
            "failures": len(failures),
            "dp.clip": clip,
            "dp.noise_std": noise_std,
            "dp.canaries": len(canaries),
        }

    def _track_canaries(self, mean: torch.Tensor) -> None:
        if self.delta is None:
            return
        self.delta += mean
        if self.max_cosines is not None:
            self.max_cosines = torch.maximum(self.max_cosines, self._bank().cosines(mean))

    def canary_record(self) -> CanaryRecord | None:
        """What the audit needs from this run so far, or None without canaries."""
        if self.delta is None:
            return None
        return CanaryRecord(self.plan, self.delta.clone(), self.max_cosines)

    # --- delegation and checkpoints ----------------------------------------------------------
    def state_dict(self) -> Payload:
        """The wrapped checkpoint plus the clip norm, population and canary state (``dp.*``)."""
        state = self.inner.state_dict()
        tensors = dict(state.tensors)
        config = dict(state.config)
        config[PREFIX + "settings"] = json.dumps(self.dp.to_dict(), sort_keys=True)
        config[PREFIX + "clip"] = self.clipper.clip
        config[PREFIX + "population"] = self.population
        record = self.canary_record()
        if record is not None:
            packed = record.to_payload()
            tensors.update({PREFIX + k: v for k, v in packed.tensors.items()})
            config.update({PREFIX + k: v for k, v in packed.config.items()})
        return Payload(tensors=tensors, config=config, metrics=dict(state.metrics))

    def load_state_dict(self, state: Payload) -> None:
        """Restore from :meth:`state_dict`."""
        self.inner.load_state_dict(inner_state(state))
        clip = state.config.get(PREFIX + "clip")
        population = state.config.get(PREFIX + "population")
        if isinstance(clip, float):
            self.clipper.clip = clip
        if isinstance(population, int):
            self.population = population
        record = canary_record_from_state(state)
        if record is not None:
            self.delta = record.delta.to(torch.float64).clone()
            self.max_cosines = record.max_cosines
        else:
            self._start_canaries()


def canary_record_from_state(state: Payload) -> CanaryRecord | None:
    """Extract the canary record from a :class:`DPServer` checkpoint, if it holds one."""
    if PREFIX + "delta" not in state.tensors:
        return None
    packed = Payload(
        tensors={
            k.removeprefix(PREFIX): v for k, v in state.tensors.items() if k.startswith(PREFIX)
        },
        config={k.removeprefix(PREFIX): v for k, v in state.config.items() if k.startswith(PREFIX)},
    )
    return CanaryRecord.from_payload(packed)


def dp_settings_from_state(state: Payload) -> DPConfig | None:
    """The DP settings a :class:`DPServer` checkpoint was made with, or None if not private."""
    text = state.config.get(PREFIX + "settings")
    if not isinstance(text, str):
        return None
    return DPConfig.from_dict(json.loads(text))


def inner_state(state: Payload) -> Payload:
    """A :class:`DPServer` checkpoint without its ``dp.*`` entries: the wrapped strategy's."""
    return without_prefix(state, PREFIX)
