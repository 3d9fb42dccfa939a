"""The local trainer runtime every host uses: LoRA via PEFT and a deterministic training loop."""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fedft.core.run_options import AUTOCAST_CHOICES
from fedft.core.trainer import LoraSpec, TrainStats
from fedft.runtime.batching import Encoded, LazyEncoded, answer_tokens, collate, token_losses
from fedft.runtime.data import Example
from fedft.runtime.models import ModelBundle

DEFAULT_CLIP_NORM = 1.0  # fedft's historical default; the papers' reference code does not clip
_FOREACH_MAX_ELEMENTS = 1 << 24
MAX_LAYOUTS = 8  # extra LoRA layouts kept beside the first adapter (see use_lora)
OPTIMIZERS = ("adamw", "sgd")


def _lora_config(spec: LoraSpec) -> Any:
    """PEFT's LoraConfig for ``spec``."""
    from peft import LoraConfig

    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        rank_pattern=dict(spec.rank_pattern),
        layers_to_transform=list(spec.layers) if spec.layers is not None else None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _seed63(seed: int) -> int:
    """Check a seed fits torch's generators (``[0, 2^63)``, as every fedft seed does)."""
    if not 0 <= seed < 1 << 63:
        raise ValueError(f"seed must be in [0, 2^63), got {seed}")
    return seed


def foreach_for(params: Sequence[torch.Tensor]) -> bool | None:
    """Use the multi-tensor optimizer path for small trainable sets, torch's default otherwise.

    On CPU torch defaults to one tensor at a time, which for a LoRA adapter's many small tensors
    costs more than the step itself (9 ms vs 1 ms for 32 tensors); both paths give bit-identical
    weights. Large sets (full-parameter training) keep the default: the multi-tensor path holds
    temporaries as large as the whole trainable set.
    """
    return True if sum(p.numel() for p in params) <= _FOREACH_MAX_ELEMENTS else None


def check_training(examples: Sequence[Example], max_grad_norm: float | None) -> None:
    """Refuse local training without examples or with a clip norm that is not positive."""
    if not examples:
        raise ValueError("this client has no training examples")
    if max_grad_norm is not None and max_grad_norm <= 0:
        raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}")


def make_optimizer(
    name: str, groups: list[dict[str, Any]], foreach: bool | None
) -> torch.optim.Optimizer:
    """AdamW (no weight decay) or SGD over ``groups`` (each with its own ``params`` and ``lr``)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    if name == "adamw":
        return torch.optim.AdamW(groups, weight_decay=0.0, foreach=foreach)
    return torch.optim.SGD(groups, foreach=foreach)


def check_adapter_match(
    current: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor]
) -> None:
    """Refuse adapter tensors whose names or shapes differ from the live adapter's."""
    if current.keys() != tensors.keys():
        missing = sorted(set(current) - set(tensors))[:3]
        extra = sorted(set(tensors) - set(current))[:3]
        raise ValueError(f"adapter names differ: missing {missing}, unexpected {extra}")
    for name, tensor in tensors.items():
        if tensor.shape != current[name].shape:
            raise ValueError(f"{name}: shape {tuple(tensor.shape)} != {tuple(current[name].shape)}")


class LocalTrainer:
    """Trains one client's copy of the model on its local examples.

    Several trainers may share one :class:`ModelBundle` (the simulator runs many virtual clients
    on one model); every strategy loads the global state before training, so nothing leaks
    between them.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        examples: Sequence[Example],
        *,
        max_length: int = 128,
        micro_batch: int | None = None,
        autocast: str = "none",
    ):
        if max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {max_length}")
        if micro_batch is not None and micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
        if autocast not in AUTOCAST_CHOICES:
            raise ValueError(f"autocast must be one of {', '.join(AUTOCAST_CHOICES)}")
        self.bundle = bundle
        self.examples = list(examples)
        self.max_length = max_length
        # Forward/backward this many examples at a time, accumulating one step's gradient:
        # the same step in less activation memory (None: the whole batch at once).
        self.micro_batch = micro_batch
        # Local training steps run their forward in bf16 where it is safe (torch.autocast);
        # weights, gradients and optimizer state stay fp32. Evaluation stays fp32.
        self.autocast = autocast
        self._encoded: LazyEncoded | None = None

    @property
    def model(self) -> torch.nn.Module:
        """The model being trained (a PEFT model once LoRA was added)."""
        return self.bundle.model

    @property
    def num_examples(self) -> int:
        """Number of local training examples."""
        return len(self.examples)

    @property
    def encoded(self) -> LazyEncoded:
        """The tokenized local examples, each tokenized on first use."""
        if self._encoded is None:
            self._encoded = LazyEncoded(self.bundle.tokenizer, self.examples, self.max_length)
        return self._encoded

    def _lora_config(self, spec: LoraSpec) -> Any:
        """PEFT's LoraConfig for ``spec``, taught to wrap QuantLinear when the base is quantized."""
        config = _lora_config(spec)
        if self.bundle.quant is not None:
            from fedft.runtime.quant_lora import register

            register(config)
        return config

    def add_lora(self, spec: LoraSpec) -> None:
        """Wrap the model with PEFT LoRA adapters (once per bundle) and freeze the base."""
        from peft import get_peft_model

        current = self.bundle.lora_spec
        if current is not None:
            if repr(spec) not in self.bundle.lora_adapters:
                raise ValueError(f"this model already carries LoRA {current}, cannot add {spec}")
            self.use_lora(spec)
            return
        config = self._lora_config(spec)
        # PEFT initialises A randomly: seed it so every host builds the same starting adapter.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.bundle.model = get_peft_model(self.bundle.model, config)
        self._follow_device()
        self.bundle.lora_tensors.clear()
        self.bundle.lora_spec = spec
        self.bundle.lora_adapters[repr(spec)] = "default"

    def use_lora(self, spec: LoraSpec) -> None:
        """Activate ``spec``'s adapter, adding it as another named PEFT adapter when new.

        Only the active adapter runs in the forward pass and only it is trainable; the others
        keep their weights, so virtual clients with different layouts can share one model.
        """
        if self.bundle.lora_spec is None:
            self.add_lora(spec)
            return
        from peft import PeftModel

        model = self.bundle.model
        if not isinstance(model, PeftModel):
            raise ValueError("this model carries no PEFT adapters")
        key = repr(spec)
        name = self.bundle.lora_adapters.get(key)
        if name is None:
            name = f"layout{self._next_layout_number()}"
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model.add_adapter(name, self._lora_config(spec))
            self._follow_device()
            self.bundle.lora_adapters[key] = name
            self.bundle.lora_tensors.clear()  # adding an adapter may re-create modules
        model.set_adapter(name)
        for param_name, param in model.named_parameters():
            param.requires_grad_(f".{name}." in param_name and "lora_" in param_name)
        self.bundle.lora_spec = spec
        # Most recently used last; layouts change when device profiles do, so drop stale ones.
        self.bundle.lora_adapters[key] = self.bundle.lora_adapters.pop(key)
        stale = [k for k, n in self.bundle.lora_adapters.items() if n not in ("default", name)]
        for old in stale[: max(0, len(stale) - (MAX_LAYOUTS - 1))]:
            model.delete_adapter(self.bundle.lora_adapters.pop(old))
            self.bundle.lora_tensors.clear()

    def _follow_device(self) -> None:
        """Move new adapters to the model's device.

        The seeded initialisation above runs on the CPU generator, so every host starts from the
        same adapter whatever its device; PEFT does not move adapters of custom (quantized)
        layers by itself.
        """
        if self.bundle.device.type != "cpu":
            self.bundle.model.to(self.bundle.device)

    def _next_layout_number(self) -> int:
        taken = set(self.bundle.lora_adapters.values())
        number = len(taken)
        while f"layout{number}" in taken:
            number += 1
        return number

    @property
    def active_adapter(self) -> str:
        """The PEFT name of the adapter that trains now."""
        return self.bundle.lora_adapters.get(repr(self.bundle.lora_spec), "default")

    def adapter_parameters(self) -> dict[str, torch.Tensor]:
        """The active adapter's live parameters (not copies) under PEFT's state-dict names."""
        adapter = self.active_adapter
        cached = self.bundle.lora_tensors.get(adapter)
        if cached is None:
            from peft import get_peft_model_state_dict

            # keep_vars hands back the Parameter objects themselves, so writes below reach the
            # model and stay valid when .to() swaps a parameter's storage.
            live = self.model.state_dict(keep_vars=True)
            cached = dict(get_peft_model_state_dict(self.model, live, adapter_name=adapter))
            self.bundle.lora_tensors[adapter] = cached
        return cached

    def lora_state(self) -> dict[str, torch.Tensor]:
        """Return a detached fp32 CPU copy of the adapter tensors (PEFT's state-dict names)."""
        return {
            name: t.detach().to("cpu", torch.float32, copy=True)
            for name, t in self.adapter_parameters().items()
        }

    def load_lora_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Overwrite the adapter tensors; names and shapes must match exactly."""
        current = self.adapter_parameters()
        check_adapter_match(current, tensors)
        with torch.no_grad():
            for name, tensor in tensors.items():
                current[name].copy_(tensor)  # casts to the adapter's dtype, as PEFT's loader does

    def _batches(self, batch_size: int, generator: torch.Generator) -> Iterator[list[Encoded]]:
        """Yield batches forever, reshuffling each pass over the data with ``generator``."""
        data = self.encoded
        while True:
            order = torch.randperm(len(data), generator=generator).tolist()
            for start in range(0, len(order), batch_size):
                yield [data[i] for i in order[start : start + batch_size]]

    def autocast_context(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on the model's device when asked for, else nothing."""
        if self.autocast == "none":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.bundle.device.type, dtype=torch.bfloat16)

    def training_batches(
        self, batch_size: int, seed: int, data_seed: int | None = None, data_offset: int = 0
    ) -> Iterator[list[Encoded]]:
        """The batches :meth:`train` draws: a fresh permutation from ``seed``, or the stream."""
        if data_seed is None:
            return self._batches(batch_size, torch.Generator().manual_seed(_seed63(seed)))
        return self._stream(batch_size, data_seed, data_offset)

    def _micro_batches(self, items: list[Encoded]) -> list[list[Encoded]]:
        """``items`` in consecutive chunks of ``micro_batch`` (one chunk without it)."""
        size = self.micro_batch or len(items)
        return [items[start : start + size] for start in range(0, len(items), size)]

    def _stream(self, batch_size: int, data_seed: int, offset: int) -> Iterator[list[Encoded]]:
        """Yield batches from one endless shuffled stream, starting ``offset`` examples in.

        Pass ``e`` of the stream is a permutation seeded by ``data_seed + e``, so a client that
        resumes at the offset it reached last round sees every example once before any repeats
        (the per-client iterator of the FedKSeed and Ferret reference code).
        """
        data = self.encoded
        n = len(data)
        epoch, pos = divmod(offset, n)
        while True:
            seed = (data_seed + epoch) % (1 << 63)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
            items: list[Encoded] = []
            while pos < n:
                items.append(data[order[pos]])
                pos += 1
                if len(items) == batch_size:
                    yield items
                    items = []
            if items:
                yield items  # like a fresh pass, a batch never spans two passes
            epoch, pos = epoch + 1, 0

    def batches(self, *, batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
        """Yield collated training batches forever, deterministic for ``seed``."""
        if not self.examples:
            raise ValueError("this client has no training examples")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        generator = torch.Generator().manual_seed(_seed63(seed))
        pad_id = self.bundle.tokenizer.pad_token_id
        for items in self._batches(batch_size, generator):
            yield collate(items, pad_id)

    def loss(self, batch: dict[str, torch.Tensor]) -> float:
        """Return the mean answer-token loss on ``batch`` in eval mode, without gradients."""
        self.model.eval()
        with torch.inference_mode():
            loss_sum, tokens = token_losses(self.model, batch)
        return float(loss_sum) / max(tokens, 1)

    def train(
        self,
        *,
        steps: int,
        batch_size: int,
        lr: float,
        seed: int,
        optimizer: str = "adamw",
        max_grad_norm: float | None = DEFAULT_CLIP_NORM,
        data_seed: int | None = None,
        data_offset: int = 0,
    ) -> TrainStats:
        """Run ``steps`` AdamW or SGD steps on the trainable parameters, seeded by ``seed``.

        ``max_grad_norm=None`` leaves gradients unclipped. With ``data_seed`` batches come from
        the client's persistent stream at ``data_offset`` (see :meth:`_stream`); otherwise each
        call draws a fresh permutation from ``seed``.
        """
        check_training(self.examples, max_grad_norm)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters; add adapters first")
        foreach = foreach_for(params)
        step_fn = make_optimizer(optimizer, [{"params": params, "lr": lr}], foreach)
        batches = self.training_batches(batch_size, seed, data_seed, data_offset)
        pad_id = self.bundle.tokenizer.pad_token_id
        total_loss, total_tokens, seen = 0.0, 0, 0
        self.model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed63(seed))  # LoRA dropout, if any
            for _ in range(steps):
                items = next(batches)
                parts = [collate(chunk, pad_id) for chunk in self._micro_batches(items)]
                # Every part's loss is divided by the whole batch's answer tokens, so the
                # accumulated gradient is the full batch's mean-token-loss gradient.
                tokens = sum(answer_tokens(part) for part in parts)
                step_fn.zero_grad(set_to_none=True)
                for part in parts:
                    with self.autocast_context():
                        loss_sum, _ = token_losses(self.model, part)
                    (loss_sum / max(tokens, 1)).backward()  # type: ignore[no-untyped-call]
                    total_loss += float(loss_sum.detach())
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=foreach)
                step_fn.step()
                total_tokens += tokens
                seen += len(items)
        self.model.eval()
        mean = total_loss / total_tokens if total_tokens else math.nan
        return TrainStats(steps=steps, examples=seen, loss=mean)

    def save_adapter(self, folder: Path) -> None:
        """Write the adapters in PEFT's format (``PeftModel.from_pretrained`` loads them)."""
        save: Any = getattr(self.model, "save_pretrained", None)
        if save is None or self.bundle.lora_spec is None:
            raise ValueError("this model has no LoRA adapters to save")
        name = self.active_adapter
        if name == "default":
            save(str(folder), safe_serialization=True, selected_adapters=[name])
            return
        # PEFT writes any adapter but "default" into a subfolder named after it: lift it out,
        # so the folder itself loads with PeftModel.from_pretrained.
        with tempfile.TemporaryDirectory(
            dir=folder.parent if folder.parent.exists() else None
        ) as tmp:
            save(tmp, safe_serialization=True, selected_adapters=[name])
            folder.mkdir(parents=True, exist_ok=True)
            for item in (Path(tmp) / name).iterdir():
                shutil.move(str(item), folder / item.name)

    def save_model(self, folder: Path) -> None:
        """Write the global model: PEFT adapters if it has them, else full safetensors weights.

        Full weights are what seed-based strategies tune; the tokenizer goes along so the folder
        loads with ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer`` offline.
        """
        if self.bundle.lora_spec is not None:
            self.save_adapter(folder)
            return
        save: Any = getattr(self.model, "save_pretrained", None)
        if save is None:
            raise ValueError("this model cannot be saved in Hugging Face format")
        save(str(folder), safe_serialization=True)
        self.bundle.tokenizer.save_pretrained(str(folder))
