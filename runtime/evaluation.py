"""Evaluation of a model on held-out examples: token loss and Rouge-L of generated answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fedft.runtime.batching import collate, encode, format_prompt, token_losses
from fedft.runtime.data import Example
from fedft.runtime.models import ModelBundle


@dataclass(frozen=True)
class LossReport:
    """Mean next-token loss over answer tokens, and how many tokens it averaged."""

    loss: float
    tokens: int


@torch.no_grad()
def held_out_loss(
    bundle: ModelBundle, examples: Sequence[Example], *, batch_size: int = 16, max_length: int = 128
) -> LossReport:
    """Return the token-weighted mean loss over ``examples`` (independent of batch size)."""
    if not examples:
        raise ValueError("no evaluation examples")
    model = bundle.model
    model.eval()
    encoded = [encode(bundle.tokenizer, ex, max_length) for ex in examples]
    # Sorting by length wastes less padding; the summed loss does not depend on the order.
    encoded.sort(key=lambda e: len(e.input_ids))
    total, tokens = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = collate(encoded[start : start + batch_size], bundle.tokenizer.pad_token_id)
        loss_sum, count = token_losses(model, batch)
        total += float(loss_sum)
        tokens += count
    return LossReport(loss=total / max(tokens, 1), tokens=tokens)


@torch.no_grad()
def generate_answers(
    bundle: ModelBundle, prompts: Sequence[str], *, max_new_tokens: int = 32
) -> list[str]:
    """Greedy-decode an answer for each prompt (one at a time: no padding effects on results)."""
    tok = bundle.tokenizer
    model: Any = bundle.model
    model.eval()
    answers = []
    for prompt in prompts:
        ids = tok(format_prompt(tok, prompt), add_special_tokens=False, return_tensors="pt")
        ids = {k: v.to(bundle.device) for k, v in ids.items()}
        out = model.generate(
            **ids,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        answers.append(tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return answers


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Return the mean Rouge-L F-measure (Google's rouge-score, with stemming)."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    if not predictions:
        raise ValueError("no predictions to score")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [
        scorer.score(ref, pred)["rougeL"].fmeasure
        for pred, ref in zip(predictions, references, strict=True)
    ]
    return float(sum(scores) / len(scores))


def rouge_l_papers(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Return the mean Rouge-L F as FedKSeed and Ferret report it (``rouge`` 1.0.1).

    ``Rouge().get_scores(hyp, ref)[0]["rouge-l"]["f"]`` per example, averaged: whitespace
    tokens, no stemming or lowercasing, sentences split on ".", and LCS and lengths counted
    over unique tokens (that package's definition). An answer with no words scores 0, as in
    the FedKSeed code; :func:`rouge_l` is the stemmed rouge-score variant.
    """
    from rouge import Rouge

    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    if not predictions:
        raise ValueError("no predictions to score")
    scorer = Rouge(metrics=["rouge-l"])
    scores = []
    for pred, ref in zip(predictions, references, strict=True):
        if not _has_words(pred) or not _has_words(ref):
            scores.append(0.0)  # the package raises on these; the papers' code scores 0
            continue
        scores.append(float(scorer.get_scores(pred, ref)[0]["rouge-l"]["f"]))
    return sum(scores) / len(scores)


def _has_words(text: str) -> bool:
    """Whether ``rouge`` 1.0.1 finds a non-empty sentence in ``text`` (it splits on ".")."""
    return any(part.split() for part in text.split("."))
