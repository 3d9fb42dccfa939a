"""A secure aggregation task's public parameters, as they ride in a task's config.

The coordinator fixes them when it opens a round and puts them in every participant's task;
client and server then build the same :class:`RoundConfig` (graph included) from them, so no
extra message is needed to agree on the round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fedft.core.errors import ProtocolError
from fedft.core.payload import ConfigValue

from .config import RoundConfig
from .encoding import Encoding
from .graph import round_context
from .noisy import NoisyEncoding

PREFIX = "secagg."
MASKED = "secagg.masked"  # the tensor of a masked input inside an update payload


@dataclass(frozen=True)
class SecureTask:
    """What one participant needs to take part in a round's secure sum."""

    session: str  # the run id: binds every key and mask to this run
    round: int
    participants: int  # protocol ids are 0 .. participants - 1
    me: int  # this participant's protocol id
    length: int  # the update vector's length
    ring_bits: int
    frac_bits: int
    clip: float
    neighbours: int
    threshold: int
    weight: float  # this participant's weight in [0, 1], fixed by the server
    l2_clip: float = 0.0  # under DP: the device clips its update to this L2 norm first (0: no)
    # Distributed DP: this device's Skellam variance (ring units) and the fewest survivors the
    # noise is calibrated for, below which the device refuses to unmask (0: no noise).
    variance: float = 0.0
    survivors: int = 0

    def to_config(self) -> dict[str, ConfigValue]:
        """The task config entries that carry this task."""
        return {
            f"{PREFIX}session": self.session,
            f"{PREFIX}round": self.round,
            f"{PREFIX}participants": self.participants,
            f"{PREFIX}me": self.me,
            f"{PREFIX}length": self.length,
            f"{PREFIX}ring_bits": self.ring_bits,
            f"{PREFIX}frac_bits": self.frac_bits,
            f"{PREFIX}clip": self.clip,
            f"{PREFIX}neighbours": self.neighbours,
            f"{PREFIX}threshold": self.threshold,
            f"{PREFIX}weight": self.weight,
            f"{PREFIX}l2_clip": self.l2_clip,
            f"{PREFIX}variance": self.variance,
            f"{PREFIX}survivors": self.survivors,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, ConfigValue]) -> SecureTask | None:
        """Read a task's secure aggregation entries; None when the task has none."""
        if f"{PREFIX}session" not in config:
            return None
        try:
            task = cls(
                session=str(config[f"{PREFIX}session"]),
                round=_int(config, "round"),
                participants=_int(config, "participants"),
                me=_int(config, "me"),
                length=_int(config, "length"),
                ring_bits=_int(config, "ring_bits"),
                frac_bits=_int(config, "frac_bits"),
                clip=float(config[f"{PREFIX}clip"]),  # type: ignore[arg-type]
                neighbours=_int(config, "neighbours"),
                threshold=_int(config, "threshold"),
                weight=float(config[f"{PREFIX}weight"]),  # type: ignore[arg-type]
                l2_clip=float(config.get(f"{PREFIX}l2_clip", 0.0)),  # type: ignore[arg-type]
                variance=float(config.get(f"{PREFIX}variance", 0.0)),  # type: ignore[arg-type]
                survivors=_int(config, "survivors") if f"{PREFIX}survivors" in config else 0,
            )
            task.encoding()  # a noisy encoding checks its noise parameters
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"a malformed secure aggregation task: {exc}") from None
        if not (0 <= task.me < task.participants and 0.0 <= task.weight <= 1.0):
            raise ProtocolError("a malformed secure aggregation task: id or weight out of range")
        if not task.l2_clip >= 0:
            raise ProtocolError("a malformed secure aggregation task: a negative L2 clip")
        if task.survivors and not 2 <= task.survivors <= task.participants:
            raise ProtocolError("a malformed secure aggregation task: survivors out of range")
        return task

    def encoding(self) -> Encoding:
        """The round's fixed-point encoding (weights scaled into [0, 1]), noisy if it says so."""
        if self.survivors:
            return NoisyEncoding(
                self.ring_bits,
                self.frac_bits,
                self.clip,
                1.0,
                self.variance,
                self.survivors,
                self.length,
            )
        return Encoding(self.ring_bits, self.frac_bits, self.clip, 1.0)

    def round_config(self) -> RoundConfig:
        """The round's public parameters, as every party derives them."""
        return RoundConfig(
            round_context(self.session, self.round),
            tuple(range(self.participants)),
            self.length,
            self.encoding(),
            self.neighbours,
            self.threshold,
        )


def _int(config: Mapping[str, ConfigValue], name: str) -> int:
    value = config[f"{PREFIX}{name}"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{PREFIX}{name} must be an integer")
    return value


def noise_of(encoding: Encoding) -> tuple[float, int]:
    """An encoding's (per-device variance, survivors) for a task; (0, 0) without noise."""
    if isinstance(encoding, NoisyEncoding):
        return encoding.variance, encoding.survivors
    return 0.0, 0


def noise_refusal(secure: SecureTask | None, floor: float) -> str | None:
    """Why a device that requires distributed DP noise ``floor`` sits a task out, or None.

    The device checks what it can itself: that its update leaves it only inside a secure sum,
    and that the noise the task's parameters promise (every calibrated survivor's share, over
    this device's own encoded sensitivity) reaches the floor. The unmask stage then refuses a
    sum with fewer shares (``SecAggClient.unmask``).
    """
    if floor <= 0:
        return None
    if secure is None:
        return "the task would send the update in the clear (no --secagg)"
    if not secure.survivors:
        return "the task's secure sum carries no device noise (no --dp-distributed)"
    encoding = secure.encoding()
    assert isinstance(encoding, NoisyEncoding)
    promised = encoding.noise_multiplier(secure.survivors)
    if promised < floor * (1 - 1e-9):  # promised == z up to float rounding
        return f"the task promises noise multiplier {promised:.4g}, below {floor:g}"
    return None
