"""Turn examples into token batches: prompt formatting, loss masking, padding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import torch

from fedft.runtime.data import Example

IGNORE_INDEX = -100
FALLBACK_TEMPLATE = "### Question:\n{prompt}\n### Answer:\n"


def format_prompt(tokenizer: Any, prompt: str) -> str:
    """Render a prompt with the tokenizer's chat template, or a plain Q/A template without one."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return str(text)
    return FALLBACK_TEMPLATE.format(prompt=prompt)


@dataclass(frozen=True)
class Encoded:
    """One tokenized example: ids and labels (prompt tokens masked out of the loss)."""

    input_ids: list[int]
    labels: list[int]


def encode(tokenizer: Any, example: Example, max_length: int) -> Encoded:
    """Tokenize prompt + response + EOS within max_length, always keeping some answer tokens."""
    prompt_ids = tokenizer(format_prompt(tokenizer, example.prompt), add_special_tokens=False)[
        "input_ids"
    ]
    answer_ids = tokenizer(example.response, add_special_tokens=False)["input_ids"]
    answer_ids = [*answer_ids, tokenizer.eos_token_id]
    # Long prompts lose their beginning rather than the answer: the loss lives on the answer.
    keep_answer = min(len(answer_ids), max(max_length // 4, max_length - len(prompt_ids)))
    answer_ids = answer_ids[:keep_answer]
    prompt_ids = (
        prompt_ids[-(max_length - len(answer_ids)) :] if max_length > len(answer_ids) else []
    )
    return Encoded(
        input_ids=[*prompt_ids, *answer_ids],
        labels=[IGNORE_INDEX] * len(prompt_ids) + list(answer_ids),
    )


class LazyEncoded(Sequence[Encoded]):
    """Examples tokenized on first access, one at a time, each kept once it is.

    A client holding tens of thousands of examples (ShareGPT) tokenizes only those it trains
    on, instead of all of them inside its first task's (virtual) time.
    """

    def __init__(self, tokenizer: Any, examples: Sequence[Example], max_length: int):
        self.tokenizer = tokenizer
        self.examples = examples
        self.max_length = max_length
        self._cache: dict[int, Encoded] = {}

    def __len__(self) -> int:
        return len(self.examples)

    @overload
    def __getitem__(self, index: int) -> Encoded: ...

    @overload
    def __getitem__(self, index: slice) -> list[Encoded]: ...

    def __getitem__(self, index: int | slice) -> Encoded | list[Encoded]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = index + len(self) if index < 0 else index
        if not 0 <= i < len(self):
            raise IndexError(f"example {index} of {len(self)}")
        item = self._cache.get(i)
        if item is None:
            item = self._cache[i] = encode(self.tokenizer, self.examples[i], self.max_length)
        return item


def collate(items: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked from attention and from the loss."""
    width = max(len(item.input_ids) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids[row, :n] = torch.tensor(item.input_ids)
        labels[row, :n] = torch.tensor(item.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# Tokens per LM-head chunk: SmolLM2's 49,152-entry vocabulary makes each chunk's fp32 logits
# 50 MB, where a batch of 8 x 128 tokens would take 200 MB (and as much again for its softmax).
LOSS_CHUNK_TOKENS = 256
# Chunk only when the full fp32 logits would take more than this: small vocabularies keep the
# plain path, whose sums do not depend on how many answer tokens a batch holds (a GEMM shape that
# varies with the batch sums in an order that follows the thread count, and engines run their
# clients with different thread counts).
LOSS_CHUNK_MIN_BYTES = 32 << 20
# Causal LMs whose logits are exactly ``lm_head(model(...).last_hidden_state)`` (no scaling or
# soft-capping after the head); the others take the full-logits path.
_PLAIN_HEAD_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def _decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """Return the decoder stack and LM head of a (possibly PEFT-wrapped) causal LM, if plain."""
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if callable(get_base) else model
    config = getattr(base, "config", None)
    if getattr(config, "model_type", None) not in _PLAIN_HEAD_TYPES:
        return None
    decoder, head = getattr(base, "model", None), getattr(base, "lm_head", None)
    if not isinstance(decoder, torch.nn.Module) or not isinstance(head, torch.nn.Module):
        return None
    return decoder, head


def _chunk_loss(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of one chunk of tokens through the LM head, in fp32."""
    logits = head(hidden).float()
    return torch.nn.functional.cross_entropy(logits, labels, reduction="sum")


def chunked_head_loss(
    head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor, *, chunk: int
) -> torch.Tensor:
    """Sum the LM-head cross-entropy of ``hidden`` (tokens x dim) ``chunk`` tokens at a time.

    With gradients on, each chunk is checkpointed: backward recomputes its logits, so at most
    one chunk's logits exist at any time, forward or backward. (A fused Triton linear+CE kernel
    would also skip the recomputation on a GPU; the torch path is exact and runs everywhere.)
    """
    from torch.utils.checkpoint import checkpoint

    total = hidden[:0].sum().float()  # 0, yet on the graph: a batch without answers backprops
    for start in range(0, hidden.shape[0], chunk):
        h, y = hidden[start : start + chunk], labels[start : start + chunk]
        if torch.is_grad_enabled():
            part = checkpoint(_chunk_loss, head, h, y, use_reentrant=False)
        else:
            part = _chunk_loss(head, h, y)
        total = total + part
    return total


def on_model_device(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``batch`` (built on the CPU) moved to the device the model's parameters live on."""
    device = next(model.parameters()).device
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def answer_tokens(batch: dict[str, torch.Tensor]) -> int:
    """How many next-token targets of ``batch`` are answer tokens (what the loss averages)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def token_losses(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], *, chunk: int | None = None
) -> tuple[torch.Tensor, int]:
    """Return the summed next-token loss over answer tokens and how many tokens it covers.

    Summing (rather than averaging per batch) makes a held-out loss independent of batching.
    Batches are built on the CPU and moved to the model's device here, in one place. The LM
    head runs only on answer tokens, ``chunk`` at a time, so the ``batch x seq x vocab`` logits
    never exist (models outside ``_PLAIN_HEAD_TYPES`` take the full-logits path). Without
    ``chunk`` this happens only when those logits would exceed ``LOSS_CHUNK_MIN_BYTES``.
    """
    batch = on_model_device(model, batch)
    shift_labels = batch["labels"][:, 1:]
    count = answer_tokens(batch)
    parts = _decoder_and_head(model)
    if parts is not None and chunk is None:
        vocab = int(getattr(parts[1], "out_features", 0) or 0)
        if batch["input_ids"].numel() * vocab * 4 > LOSS_CHUNK_MIN_BYTES:
            chunk = LOSS_CHUNK_TOKENS
        else:
            parts = None
    if parts is None or chunk is None:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        total = torch.nn.functional.cross_entropy(
            logits[:, :-1, :].float().reshape(-1, logits.size(-1)),
            shift_labels.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        return total, count
    decoder, head = parts
    hidden = decoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    keep = shift_labels != IGNORE_INDEX
    return chunked_head_loss(head, hidden[:, :-1][keep], shift_labels[keep], chunk=chunk), count


def segment_losses(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], bounds: Sequence[tuple[int, int]]
) -> list[torch.Tensor]:
    """Return the summed answer-token loss of each row range of ``batch``, from one forward.

    Rows ``start:stop`` of a packed batch belong to one client: the decoder runs once over all
    rows, and each range's loss is taken as :func:`token_losses` would take it for that client
    alone (its LM head chunked when that client's own logits would be large).
    """
    batch = on_model_device(model, batch)
    shift_labels = batch["labels"][:, 1:]
    parts = _decoder_and_head(model)
    if parts is None:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return [
            torch.nn.functional.cross_entropy(
                logits[start:stop, :-1, :].float().reshape(-1, logits.size(-1)),
                shift_labels[start:stop].reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
            for start, stop in bounds
        ]
    decoder, head = parts
    vocab = int(getattr(head, "out_features", 0) or 0)
    hidden = decoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state[:, :-1]
    width = batch["input_ids"].shape[1]
    losses = []
    for start, stop in bounds:
        labels = shift_labels[start:stop]
        keep = labels != IGNORE_INDEX
        h, y = hidden[start:stop][keep], labels[keep]
        if (stop - start) * width * vocab * 4 > LOSS_CHUNK_MIN_BYTES:
            losses.append(chunked_head_loss(head, h, y, chunk=LOSS_CHUNK_TOKENS))
        else:
            losses.append(_chunk_loss(head, h, y))
    return losses
