"""Build a quantized model without its full-precision copy: meta init, weights streamed one by one.

``load_model(..., quant="nf4"|"int8")`` comes here. The model is instantiated with every
parameter on the meta device (no memory), then the checkpoint's safetensors files are read one
tensor at a time with plain file reads (no mmap, whose touched pages would count in the RSS):
each target linear weight is quantized straight into a :class:`QuantLinear` and dropped; every
other tensor (embeddings, norms, the LM head) is materialised as it is. The result equals the
load-then-quantize path bit for bit (same codes, scales and losses; tests/runtime).
"""

from __future__ import annotations

import contextlib
import json
import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def checkpoint_files(path: Path) -> list[Path]:
    """Return a checkpoint folder's safetensors files (one file or an indexed set of shards)."""
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / shard for shard in shards]
    return []


def _header(handle: Any) -> tuple[dict[str, Any], int]:
    """Read a safetensors header: the tensor table and where the data section starts."""
    (size,) = struct.unpack("<Q", handle.read(8))
    table = json.loads(handle.read(size))
    table.pop("__metadata__", None)
    return table, 8 + size


def tensor_names(files: list[Path]) -> set[str]:
    """Return every tensor name stored in ``files`` whose dtype we read (headers only are read).

    A name with another dtype (fp8, say) is left out, so the caller falls back to a full load.
    """
    names: set[str] = set()
    for file in files:
        with open(file, "rb") as handle:
            table = _header(handle)[0]
        names.update(name for name, entry in table.items() if entry["dtype"] in _DTYPES)
    return names


def stream_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` one at a time, each read into its own buffer (biases first)."""
    for file in files:
        with open(file, "rb") as handle:
            table, start = _header(handle)
            # A linear layer's bias must be in place when its weight is quantized.
            for name in sorted(table, key=lambda n: (not n.endswith(".bias"), n)):
                entry = table[name]
                begin, end = entry["data_offsets"]
                handle.seek(start + begin)
                raw = torch.empty(end - begin, dtype=torch.uint8)
                handle.readinto(raw.numpy().data)
                yield name, raw.view(_DTYPES[entry["dtype"]]).reshape(entry["shape"])


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create every ``nn.Parameter`` registered inside the block on the meta device.

    Buffers stay real: non-persistent ones (rotary frequencies) are computed at construction and
    are not in the checkpoint.
    """
    original = torch.nn.Module.register_parameter

    def register(module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    torch.nn.Module.register_parameter = register  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original  # type: ignore[method-assign]


def _set_tensor(model: torch.nn.Module, name: str, value: torch.Tensor, dtype: torch.dtype) -> None:
    """Materialise parameter or buffer ``name`` from ``value`` (floats cast to ``dtype``)."""
    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    if attr in owner._parameters:
        old = owner._parameters[attr]
        assert old is not None
        owner._parameters[attr] = torch.nn.Parameter(
            value.to(dtype) if value.is_floating_point() else value,
            requires_grad=old.requires_grad,
        )
    else:
        old_buffer = owner._buffers[attr]
        assert old_buffer is not None
        owner._buffers[attr] = value.to(old_buffer.dtype)


def load_quantized(
    path: Path, scheme: str, *, dtype: torch.dtype, skip: tuple[str, ...]
) -> tuple[torch.nn.Module, int, int] | None:
    """Build the model at ``path`` with its linear layers quantized as they stream in.

    Returns ``(model, quantized layers, bytes the full-precision model would hold)``, or None
    when the checkpoint is not plain safetensors whose names match the model's (the caller then
    loads in full precision and quantizes afterwards).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from fedft.kernels.quant import quantize
    from fedft.kernels.quant_linear import QuantLinear

    files = checkpoint_files(path)
    if not files:
        return None
    config = AutoConfig.from_pretrained(path)
    with parameters_on_meta():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)  # type: ignore[no-untyped-call]
    # Tied weights (the LM head) are one parameter that the checkpoint stores once.
    wanted = {name for name, _ in model.named_parameters()}
    wanted |= {name for name, _ in model.named_buffers() if name in model.state_dict()}
    stored = tensor_names(files)
    # Every stored name must be one of the model's, and every parameter must be stored.
    if not stored <= set(model.state_dict()) or not wanted <= stored:
        logger.info("checkpoint names differ from the model's; quantizing after a full load")
        return None
    linears = {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] not in skip
    }
    layers, saved = 0, 0
    for name, value in stream_tensors(files):
        owner_name, _, attr = name.rpartition(".")
        if owner_name in linears and attr == "weight":
            parent_name, _, child = owner_name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            linear = getattr(parent, child)
            weight = value.to(dtype)
            layer = QuantLinear(quantize(weight, scheme), linear.bias, compute_dtype=dtype)
            setattr(parent, child, layer)
            kept = (
                layer.qweight.untyped_storage().nbytes() + layer.scales.untyped_storage().nbytes()
            )
            saved += weight.numel() * weight.element_size() - kept
            layers += 1
        else:
            _set_tensor(model, name, value, dtype)
        del value
    model.tie_weights()
    missing = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {', '.join(missing[:5])}")
    model.config._name_or_path = str(path)
    if (path / "generation_config.json").is_file():  # as from_pretrained does (generate reads it)
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(path)
    model.eval()  # as the full load leaves it: dropout off
    return model, layers, saved
