"""The one assembly point of a run's client side: model, quantization, device, client half.

The in-process, gRPC and Flower engines, the edge daemon and the coordinator each describe their
run as a :class:`~fedft.runtime.spec.RunSpec` and call :func:`assemble_client` here (model,
quantization, device, client half with client-side DP, trainers, evaluation) and
:func:`~fedft.runtime.server_assembly.wrap_server` for the server half. A wrapper written once
runs in every host.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from fedft.core.config import StrategyConfig
from fedft.core.errors import UsageError
from fedft.core.payload import Payload
from fedft.core.registry import StrategySpec
from fedft.core.strategy import ClientStrategy
from fedft.runtime.data import Example
from fedft.runtime.evaluation import held_out_loss
from fedft.runtime.models import ModelBundle, load_model
from fedft.runtime.placement import describe_device, resolve_device
from fedft.runtime.spec import RunSpec, resolve_strategy
from fedft.runtime.trainer import LocalTrainer

if TYPE_CHECKING:  # the privacy stack (cryptography) loads only when client-side DP is asked
    from fedft.privacy.local import LocalDPClient

logger = logging.getLogger(__name__)


class ClientRuntime:
    """One process's client side of a run: the model on its device and the wrapped client half.

    Several virtual clients may share it (one trainer each over the same model); every strategy
    loads the global state before it trains, so nothing leaks between them.
    """

    def __init__(
        self,
        spec: RunSpec,
        *,
        strategy: StrategySpec,
        config: StrategyConfig,
        bundle: ModelBundle,
        client_half: ClientStrategy[Any],
        local_dp: LocalDPClient | None,
        memory: dict[str, Any],
    ) -> None:
        self.spec = spec
        self.strategy = strategy
        self.config = config
        self.bundle = bundle
        self.client_half = client_half
        self.local_dp = local_dp
        self.memory = memory
        self.evaluator = self.trainer([])

    @property
    def device(self) -> torch.device:
        """Where this runtime trains."""
        return self.bundle.device

    @property
    def device_name(self) -> str:
        """The training device as the report names it."""
        return describe_device(self.bundle.device)

    def trainer(self, examples: Sequence[Example]) -> LocalTrainer:
        """A trainer over ``examples`` on the shared model, prepared by the client half."""
        trainer = LocalTrainer(
            self.bundle,
            examples,
            max_length=self.spec.max_length,
            micro_batch=self.spec.micro_batch,
            autocast=self.spec.autocast,
        )
        self.client_half.prepare(trainer)
        return trainer

    def initial_state(self) -> Payload:
        """The run's starting global state, computed by the client half."""
        return self.client_half.initial_state(self.evaluator)

    def load_global(self, state: Payload) -> LocalTrainer:
        """Put the global model ``state`` into the evaluator; return it (for export, Rouge-L)."""
        self.client_half.load_global(state, self.evaluator)
        return self.evaluator

    def evaluate(self, state: Payload, examples: Sequence[Example]) -> float:
        """Held-out loss of the global model ``state`` on ``examples``."""
        self.load_global(state)
        return held_out_loss(self.bundle, examples, max_length=self.spec.max_length).loss


def assemble_client(spec: RunSpec, *, bundle: ModelBundle | None = None) -> ClientRuntime:
    """Load (or take) the model, quantize it, place it, and build the wrapped client half.

    ``bundle`` lets a host that loaded the model earlier (the daemon profiles the device before
    it meets the coordinator) hand it over; it is quantized here only if it was not already.
    """
    strategy, config = resolve_strategy(spec.strategy, spec.options)
    device = resolve_device(spec.device)  # before loading: a missing GPU fails fast
    if bundle is None:
        bundle = load_model(spec.model, quant=spec.quant)  # quantized as it streams in
    memory = quantize(bundle, spec.quant)
    place(bundle, device)
    if spec.gradient_checkpointing:
        checkpoint_layers(bundle)
    client_half: ClientStrategy[Any] = strategy.client_cls(config)
    local_dp = None
    if spec.local_dp is not None:
        from fedft.privacy.local import LocalDPClient

        local_dp = LocalDPClient(client_half, spec.local_dp)
        client_half = local_dp
    runtime = ClientRuntime(
        spec,
        strategy=strategy,
        config=config,
        bundle=bundle,
        client_half=client_half,
        local_dp=local_dp,
        memory=memory,
    )
    # The client half has prepared the evaluator, so the strategy's layout (LoRA or not) is known.
    if spec.quant != "none" and bundle.lora_spec is None:
        raise UsageError(
            f"--quant {spec.quant} needs a LoRA strategy; {spec.strategy} tunes the base"
        )
    return runtime


def quantize(bundle: ModelBundle, scheme: str) -> dict[str, Any]:
    """Quantize the frozen base as ``--quant`` asks (once per bundle); return the memory summary."""
    from fedft.runtime.quantization import quantize_bundle

    if bundle.quant is not None:
        return bundle.quant.to_dict()
    summary = quantize_bundle(bundle, scheme)
    if scheme != "none":
        logger.info(
            "quantized %d linear layers to %s: %.2f MB -> %.2f MB of weights",
            summary.layers, scheme, summary.bytes_before / 1e6, summary.bytes_after / 1e6,
        )  # fmt: skip
    return summary.to_dict()


def place(bundle: ModelBundle, device: torch.device) -> None:
    """Move the model to ``device``; adapters added later follow it (see LocalTrainer)."""
    bundle.device = device
    if device.type != "cpu":
        bundle.model.to(device)


def checkpoint_layers(bundle: ModelBundle) -> None:
    """Turn on gradient checkpointing of the decoder layers (active while the model trains)."""
    model = bundle.model
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise UsageError(f"{bundle.source}: this model does not support gradient checkpointing")
    # Non-reentrant: gradients reach LoRA weights even though the embeddings' output does not
    # require grad, and the recomputation replays dropout's RNG state.
    kwargs = {"use_reentrant": False}
    enable: Any = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers 5's name; the old one warns
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        enable = model.gradient_checkpointing_enable
        enable(gradient_checkpointing_kwargs=kwargs)
