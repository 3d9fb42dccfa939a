"""Tests for fedft.runtime.batching: prompt formatting, loss masking, truncation and padding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from fedft.runtime.batching import (
    FALLBACK_TEMPLATE,
    IGNORE_INDEX,
    Encoded,
    collate,
    encode,
    format_prompt,
    token_losses,
)
from fedft.runtime.data import Example
from fedft.runtime.models import ModelBundle, byte_tokenizer


@pytest.fixture(scope="module")
def tok() -> Any:
    return byte_tokenizer()


def ids_of(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def test_format_prompt_falls_back_without_chat_template(tok: Any) -> None:
    assert not tok.chat_template
    text = format_prompt(tok, "What is 2+2?")
    assert text == FALLBACK_TEMPLATE.format(prompt="What is 2+2?")
    assert text == "### Question:\nWhat is 2+2?\n### Answer:\n"


def test_format_prompt_uses_the_chat_template_when_there_is_one() -> None:
    tok = byte_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    assert format_prompt(tok, "Hi there") == "<|user|>Hi there\n<|assistant|>"


def test_prompt_is_masked_answer_and_eos_are_labelled(tok: Any) -> None:
    ex = Example("How are you?", "Fine, thanks.")
    enc = encode(tok, ex, max_length=128)
    prompt_ids = ids_of(tok, format_prompt(tok, ex.prompt))
    answer_ids = [*ids_of(tok, ex.response), tok.eos_token_id]
    assert enc.input_ids == prompt_ids + answer_ids
    assert enc.labels == [IGNORE_INDEX] * len(prompt_ids) + answer_ids
    assert enc.input_ids[-1] == tok.eos_token_id
    assert tok.decode(enc.input_ids[: len(prompt_ids)]) == format_prompt(tok, ex.prompt)
    assert tok.decode([t for t in enc.labels if t != IGNORE_INDEX], skip_special_tokens=True) == (
        "Fine, thanks."
    )


def test_long_prompt_loses_its_beginning_not_the_answer(tok: Any) -> None:
    ex = Example("word " * 200, "Short answer.")
    enc = encode(tok, ex, max_length=64)
    answer_ids = [*ids_of(tok, ex.response), tok.eos_token_id]
    prompt_ids = ids_of(tok, format_prompt(tok, ex.prompt))
    assert len(enc.input_ids) == 64
    assert enc.input_ids[-len(answer_ids) :] == answer_ids
    kept_prompt = enc.input_ids[: 64 - len(answer_ids)]
    # The end of the prompt (the "### Answer:" cue) survives truncation.
    assert kept_prompt == prompt_ids[-len(kept_prompt) :]
    assert tok.decode(kept_prompt).endswith("### Answer:\n")


def test_long_answer_is_cut_to_fit(tok: Any) -> None:
    ex = Example("Hi?", "a long answer " * 50)
    enc = encode(tok, ex, max_length=48)
    prompt_ids = ids_of(tok, format_prompt(tok, ex.prompt))
    assert len(enc.input_ids) == 48
    assert enc.input_ids[: len(prompt_ids)] == prompt_ids  # a short prompt is kept whole
    labelled = [t for t in enc.labels if t != IGNORE_INDEX]
    assert labelled == ids_of(tok, ex.response)[: 48 - len(prompt_ids)]


@pytest.mark.parametrize("max_length", [8, 9, 16, 33, 64])
@pytest.mark.parametrize("prompt_words", [0, 1, 5, 40])
@pytest.mark.parametrize("answer_words", [1, 3, 30])
def test_truncation_invariants(
    tok: Any, max_length: int, prompt_words: int, answer_words: int
) -> None:
    ex = Example("q " * prompt_words + "?", "ans " * answer_words)
    enc = encode(tok, ex, max_length=max_length)
    prompt_ids = ids_of(tok, format_prompt(tok, ex.prompt))
    answer_ids = [*ids_of(tok, ex.response), tok.eos_token_id]
    assert len(enc.input_ids) == len(enc.labels) <= max_length
    n_prompt = sum(1 for t in enc.labels if t == IGNORE_INDEX)
    labelled = enc.labels[n_prompt:]
    # Masked prompt first, then a non-empty prefix of answer + EOS, labelled with its own ids.
    assert all(t != IGNORE_INDEX for t in labelled)
    assert labelled
    assert labelled == enc.input_ids[n_prompt:]
    assert labelled == answer_ids[: len(labelled)]
    # The kept prompt is a suffix of the full prompt.
    assert enc.input_ids[:n_prompt] == prompt_ids[len(prompt_ids) - n_prompt :]
    # At least a quarter of the window (or the whole answer) is answer.
    assert len(labelled) >= min(len(answer_ids), max_length // 4)
    # Nothing is dropped when everything fits.
    if len(prompt_ids) + len(answer_ids) <= max_length:
        assert enc.input_ids == prompt_ids + answer_ids


def test_collate_pads_right(tok: Any) -> None:
    short = encode(tok, Example("a", "b"), max_length=128)
    long = encode(tok, Example("a longer prompt", "and a longer answer"), max_length=128)
    pad = tok.pad_token_id
    batch = collate([short, long], pad)
    width = len(long.input_ids)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    for key in batch:
        assert batch[key].shape == (2, width)
        assert batch[key].dtype == torch.long
    n = len(short.input_ids)
    assert batch["input_ids"][0, :n].tolist() == short.input_ids
    assert batch["labels"][0, :n].tolist() == short.labels
    assert batch["attention_mask"][0, :n].tolist() == [1] * n
    assert batch["input_ids"][0, n:].tolist() == [pad] * (width - n)
    assert batch["attention_mask"][0, n:].tolist() == [0] * (width - n)
    assert batch["labels"][0, n:].tolist() == [IGNORE_INDEX] * (width - n)
    assert batch["input_ids"][1].tolist() == long.input_ids
    assert batch["labels"][1].tolist() == long.labels
    assert bool(batch["attention_mask"][1].all())


def test_collate_single_item_has_no_padding() -> None:
    item = Encoded(input_ids=[5, 6, 7], labels=[IGNORE_INDEX, 6, 7])
    batch = collate([item], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1]]


def test_token_losses_counts_and_sums_labelled_next_tokens(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    bundle = tiny_bundle()
    tok = bundle.tokenizer
    items = [
        encode(tok, Example("Hello?", "Hi."), max_length=64),
        encode(tok, Example("What is the capital of France?", "Paris."), max_length=64),
    ]
    batch = collate(items, tok.pad_token_id)
    with torch.no_grad():
        total, count = token_losses(bundle.model, batch)
    expected_count = sum(sum(1 for t in item.labels[1:] if t != IGNORE_INDEX) for item in items)
    assert count == expected_count
    assert count == len("Hi.") + 1 + len("Paris.") + 1  # one byte token per ASCII char, + EOS

    # By hand: each labelled token t at position i is predicted from the logits at i - 1.
    with torch.no_grad():
        manual = 0.0
        for item in items:
            ids = torch.tensor([item.input_ids])
            logp = torch.log_softmax(bundle.model(input_ids=ids).logits[0].float(), dim=-1)
            for i in range(1, len(item.labels)):
                if item.labels[i] != IGNORE_INDEX:
                    manual -= float(logp[i - 1, item.labels[i]])
    assert float(total) == pytest.approx(manual, rel=1e-5)
    assert total.ndim == 0
    # An untrained byte model is close to uniform over its 259 tokens.
    assert float(total) / count == pytest.approx(float(torch.log(torch.tensor(259.0))), rel=0.2)


def test_token_losses_with_no_labels_is_zero(tiny_bundle: Callable[[], ModelBundle]) -> None:
    bundle = tiny_bundle()
    item = Encoded(input_ids=[10, 11, 12], labels=[IGNORE_INDEX] * 3)
    with torch.no_grad():
        total, count = token_losses(bundle.model, collate([item], 0))
    assert count == 0
    assert float(total) == 0.0


def _full_logits_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss as computed before chunking: every position's logits, then cross-entropy."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.size(-1)),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def _loss_and_grads(
    model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()  # type: ignore[no-untyped-call]
    return loss.detach(), [p.grad.clone() for p in params if p.grad is not None]


@pytest.mark.parametrize("base", ["fp32", "nf4"])
@pytest.mark.parametrize("lora", [False, True])
def test_chunked_loss_equals_full_logits_forward_and_backward(
    tiny_bundle: Callable[[], ModelBundle], base: str, lora: bool
) -> None:
    from fedft.core.trainer import LoraSpec
    from fedft.runtime.quantization import quantize_bundle
    from fedft.runtime.trainer import LocalTrainer

    bundle = tiny_bundle()
    if base == "nf4":
        quantize_bundle(bundle, "nf4")
    if lora:
        spec = LoraSpec(rank=4, alpha=8, target_modules=("q_proj", "v_proj", "down_proj"))
        LocalTrainer(bundle, []).add_lora(spec)
        with torch.no_grad():  # B starts at zero; make the adapters matter
            for name, param in bundle.model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.02, generator=torch.Generator().manual_seed(1))
    model = bundle.model
    tok = bundle.tokenizer
    items = [
        encode(tok, Example(f"Question number {i}?", "An answer " * (i + 1)), max_length=64)
        for i in range(4)
    ]
    batch = collate(items, tok.pad_token_id)
    want, want_grads = _loss_and_grads(model, lambda: _full_logits_loss(model, batch))
    # A chunk of 7 tokens leaves a ragged last chunk.
    got, got_grads = _loss_and_grads(model, lambda: token_losses(model, batch, chunk=7)[0])
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)
    assert len(got_grads) == len(want_grads) > 0
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_chunked_loss_without_answer_tokens_is_zero_and_backprops(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    bundle = tiny_bundle()
    batch = collate([Encoded(input_ids=[5, 6, 7], labels=[IGNORE_INDEX] * 3)], 0)
    total, count = token_losses(bundle.model, batch, chunk=4)  # the chunked path, forced
    assert count == 0
    assert float(total) == 0.0
    total.backward()  # type: ignore[no-untyped-call]


def test_lm_head_sees_at_most_one_chunk_of_answer_tokens(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    bundle = tiny_bundle()
    tok = bundle.tokenizer
    items = [encode(tok, Example("Why?", "Because " * 6), max_length=64) for _ in range(3)]
    batch = collate(items, tok.pad_token_id)
    shapes: list[tuple[int, ...]] = []
    head = bundle.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    try:
        total, count = token_losses(bundle.model, batch, chunk=16)
        total.backward()  # type: ignore[no-untyped-call]
    finally:
        handle.remove()
    assert sum(rows for rows, _ in shapes) == 2 * count  # forward, then recomputed in backward
    assert max(rows for rows, _ in shapes) == 16


def test_small_vocabularies_keep_the_full_logits_path(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    bundle = tiny_bundle()
    items = [encode(bundle.tokenizer, Example("Why?", "Because " * 6), max_length=64)]
    batch = collate(items, bundle.tokenizer.pad_token_id)
    shapes: list[tuple[int, ...]] = []
    head = bundle.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    try:
        token_losses(bundle.model, batch)
    finally:
        handle.remove()
    assert shapes == [(*batch["input_ids"].shape, shapes[0][-1])]  # every position once
