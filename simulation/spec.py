"""Everything a simulation run needs to know, validated before any model is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedft.core.async_options import (
    DEFAULT_BUFFER,
    DEFAULT_MAX_STALENESS,
    MODES,
    AsyncSettings,
    wrapper_refusal,
)
from fedft.core.device import check_device_name
from fedft.core.errors import UsageError
from fedft.core.run_options import AUTOCAST_CHOICES, PARTICIPATION_CHOICES, QUANT_CHOICES
from fedft.privacy.config import (
    DISTRIBUTED_NEEDS_SECAGG,
    DPConfig,
    LocalDPConfig,
    check_server_wrappers,
    dp_config_from_flags,
    local_dp_config_from_flags,
)
from fedft.privacy.secagg.settings import SecAggSettings, secagg_refusal
from fedft.simulation.availability import parse_availability
from fedft.simulation.partition import parse_partition

if TYPE_CHECKING:
    from fedft.privacy.robust import RobustConfig
    from fedft.runtime.spec import RunSpec

ENGINES = ("inprocess", "grpc", "flower")


@dataclass(frozen=True)
class SimulationSpec:
    """Inputs of one simulation; the same spec and seed give the same report."""

    strategy: str = "fedavg_lora"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    model: str = "smollm2"
    dataset: str = "chatterbot"
    clients: int = 4
    rounds: int = 2
    partition: str = "category"
    seed: int = 0
    out: Path = Path("runs/latest")
    engine: str = "inprocess"
    max_length: int = 128
    test_fraction: float = 0.1
    eval_examples: int = 64
    rouge_examples: int = 8
    max_new_tokens: int = 24
    # Client-level DP (fedft.privacy): off unless dp_noise is set.
    dp_noise: float | None = None
    dp_clip: float | None = None
    dp_adaptive: bool = False
    dp_sampling_rate: float = 1.0
    dp_count_stddev: float | None = None
    canaries: int = 0
    canary_iterates: bool = False
    dp_distributed: bool = False  # with secagg: each device adds its share of the noise
    dp_min_survivors: int = 0
    # Client-side DP: every reply clipped and noised on the (virtual) device.
    local_dp_clip: float | None = None
    local_dp_noise: float = 0.0
    quant: str = "none"
    gradient_checkpointing: bool = False  # LoRA training recomputes activations: less memory
    micro_batch: int | None = None  # examples per forward/backward within one local step
    autocast: str = "none"  # "bf16": local steps' forward under bf16 autocast
    device: str = "auto"  # where every virtual client trains (fedft.runtime.placement)
    device_mix: str = ""
    # In-process engine, LoRA strategies: train up to this many sampled clients together.
    batch_clients: int = 1
    # Which clients are reachable each round (fedft.simulation.availability) and how the server
    # weights those that take part ("fedau": fedft.strategies.participation).
    availability: str = "always"
    participation: str = "none"
    # "async": FedBuff (fedft.strategies.buffered); rounds then counts applied buffers.
    mode: str = "sync"
    buffer: int = DEFAULT_BUFFER
    max_staleness: int = DEFAULT_MAX_STALENESS
    concurrency: int = 0
    # Robust aggregation (fedft.privacy.robust): norm bounding, trimmed mean or median.
    robust: str | None = None
    robust_bound: float | None = None
    robust_trim: float = 0.1
    # Secure aggregation (fedft.privacy.secagg): the server learns only each round's sum.
    secagg: bool = False
    secagg_neighbours: int = 0
    secagg_threshold: int = 0
    secagg_clip: float | None = None
    secagg_ring: int | None = None
    # --engine flower only: Ray resources per virtual client and an optional cluster address.
    cpus_per_client: float = 1.0
    gpus_per_client: float = 0.0
    ray_address: str = ""

    def __post_init__(self) -> None:
        problems = [
            (self.clients >= 1, f"--clients must be >= 1, got {self.clients}"),
            (self.rounds >= 1, f"--rounds must be >= 1, got {self.rounds}"),
            (0 <= self.seed < 2**63, f"--seed must be in [0, 2^63), got {self.seed}"),
            (self.engine in ENGINES, f"--engine must be one of {', '.join(ENGINES)}"),
            (self.max_length >= 16, f"--max-length must be >= 16, got {self.max_length}"),
            (0.0 < self.test_fraction < 1.0, "--test-fraction must be in (0, 1)"),
            (self.eval_examples >= 1, "--eval-examples must be >= 1"),
            (self.rouge_examples >= 0, "--rouge-examples must be >= 0"),
            (self.max_new_tokens >= 1, "--max-new-tokens must be >= 1"),
            (self.quant in QUANT_CHOICES, f"--quant must be one of {', '.join(QUANT_CHOICES)}"),
            (
                self.participation in PARTICIPATION_CHOICES,
                f"--participation must be one of {', '.join(PARTICIPATION_CHOICES)}",
            ),
            (self.cpus_per_client > 0, "--cpus-per-client must be > 0"),
            (self.micro_batch is None or self.micro_batch >= 1, "--micro-batch must be >= 1"),
            (
                self.autocast in AUTOCAST_CHOICES,
                f"--autocast must be one of {', '.join(AUTOCAST_CHOICES)}",
            ),
            (self.gpus_per_client >= 0, "--gpus-per-client must be >= 0"),
            (self.batch_clients >= 1, f"--batch-clients must be >= 1, got {self.batch_clients}"),
            (
                self.batch_clients == 1 or self.engine == "inprocess",
                "--batch-clients shares one model between clients: it needs --engine inprocess",
            ),
        ]
        for ok, message in problems:
            if not ok:
                raise UsageError(message)
        self._check_mode()
        self._check_secagg()
        self.dp_config()  # validates the DP flags
        self.local_dp_config()
        check_device_name(self.device)
        parse_partition(self.partition)
        parse_availability(self.availability)
        self.robust_config()  # validates the --robust flags
        check_server_wrappers(
            dp=self.dp_noise is not None,
            robust=self.robust is not None,
            fedau=self.participation == "fedau",
        )
        if self.device_mix:
            from fedft.simulation.devices import parse_device_mix

            count = len(parse_device_mix(self.device_mix))
            if count != self.clients:
                raise UsageError(
                    f"--device-mix describes {count} devices but --clients is {self.clients}"
                )
        if self.out.exists() and not self.out.is_dir():
            raise UsageError(f"--out {self.out} exists and is not a folder")

    def _check_mode(self) -> None:
        """Refuse what ``--mode async`` does not run with yet, one line each."""
        if self.mode not in MODES:
            raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        self.async_settings()  # validates --buffer, --max-staleness, --concurrency
        if self.mode == "sync":
            return
        if self.engine not in ("inprocess", "grpc"):
            raise UsageError(f"--mode async runs on --engine inprocess or grpc, not {self.engine}")
        if self.batch_clients > 1:
            raise UsageError("--mode async does not combine with --batch-clients")
        if self.engine == "grpc" and self.concurrency:
            raise UsageError(
                "--concurrency is for --engine inprocess: under --engine grpc every client "
                "process asks for a task whenever it is free"
            )
        problem = wrapper_refusal(
            dp=self.dp_noise is not None,
            robust=self.robust is not None,
            participation=self.participation,
        )
        if problem is not None:
            raise UsageError(problem)

    def _check_secagg(self) -> None:
        """Refuse what ``--secagg`` does not run with, one line each."""
        settings = self.secagg_settings()  # validates the --secagg-* flags
        if settings is None:
            if self.secagg_neighbours or self.secagg_threshold or self.secagg_clip:
                raise UsageError("--secagg-neighbours, -threshold and -clip need --secagg")
            if self.dp_distributed:
                raise UsageError(DISTRIBUTED_NEEDS_SECAGG)
            return
        if self.engine == "flower":
            raise UsageError("--secagg runs on --engine inprocess or grpc, not flower")
        problem = secagg_refusal(
            dp=self.dp_noise is not None,
            robust=self.robust is not None,
            participation=self.participation,
            mode=self.mode,
            dp_adaptive=self.dp_adaptive,
        )
        if problem is not None:
            raise UsageError(problem)

    def secagg_settings(self) -> SecAggSettings | None:
        """The secure aggregation settings, or None when ``--secagg`` is off."""
        settings = SecAggSettings(
            neighbours=self.secagg_neighbours,
            threshold=self.secagg_threshold,
            clip=self.secagg_clip,
            ring_bits=self.secagg_ring,
        )
        return settings if self.secagg else None

    def async_settings(self) -> AsyncSettings:
        """The FedBuff settings of ``--mode async`` (validated also in sync mode)."""
        return AsyncSettings(
            buffer=self.buffer, max_staleness=self.max_staleness, concurrency=self.concurrency
        )

    def dp_config(self) -> DPConfig | None:
        """The DP wrapper's settings, or None when the run is not private."""
        return dp_config_from_flags(
            noise=self.dp_noise,
            clip=self.dp_clip,
            adaptive=self.dp_adaptive,
            sampling_rate=self.dp_sampling_rate,
            count_stddev=self.dp_count_stddev,
            canaries=self.canaries,
            all_iterates=self.canary_iterates,
            distributed=self.dp_distributed,
            min_survivors=self.dp_min_survivors,
        )

    def local_dp_config(self) -> LocalDPConfig | None:
        """The client-side DP settings, or None."""
        return local_dp_config_from_flags(clip=self.local_dp_clip, noise=self.local_dp_noise)

    def robust_config(self) -> RobustConfig | None:
        """The robust aggregation the flags ask for, or None."""
        if self.robust is None:
            return None
        from fedft.privacy.robust import RobustConfig

        return RobustConfig(self.robust, bound=self.robust_bound, trim=self.robust_trim)

    def run_spec(self) -> RunSpec:
        """The host-neutral description the assembly point builds every engine's run from."""
        from fedft.runtime.spec import RunSpec

        return RunSpec(
            strategy=self.strategy,
            options=dict(self.strategy_options),
            model=self.model,
            seed=self.seed,
            quant=self.quant,
            gradient_checkpointing=self.gradient_checkpointing,
            micro_batch=self.micro_batch,
            autocast=self.autocast,
            device=self.device,
            max_length=self.max_length,
            dp=self.dp_config(),
            local_dp=self.local_dp_config(),
            participation=self.participation,
            robust=self.robust_config(),
            secagg=self.secagg_settings(),
        )
