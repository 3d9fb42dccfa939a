"""Turn examples into token batches: prompt formatting, loss masking, padding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


def token_losses(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, int]:
    """Return the summed next-token loss over answer tokens and how many tokens it covers.

    Summing (rather than averaging per batch) makes a held-out loss independent of batching.
    Batches are built on the CPU and moved to the model's device here, in one place.
    """
    device = next(model.parameters()).device
    if device.type != "cpu":
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shift_logits = logits[:, :-1, :].float()
    shift_labels = batch["labels"][:, 1:]
    total = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return total, int((shift_labels != IGNORE_INDEX).sum())
