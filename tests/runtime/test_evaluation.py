"""Tests for fedft.runtime.evaluation: batch-independent held-out loss, generation and Rouge-L."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fedft.runtime.batching import format_prompt
from fedft.runtime.data import Example
from fedft.runtime.evaluation import generate_answers, held_out_loss, rouge_l, rouge_l_papers
from fedft.runtime.models import ModelBundle


@pytest.fixture
def eval_examples(chatterbot_examples: list[Example]) -> list[Example]:
    return chatterbot_examples[5::101][:20]


def test_held_out_loss_does_not_depend_on_batch_size(
    tiny_bundle: Callable[[], ModelBundle], eval_examples: list[Example]
) -> None:
    bundle = tiny_bundle()
    reports = [
        held_out_loss(bundle, eval_examples, batch_size=b, max_length=96) for b in (1, 3, 16)
    ]
    assert len({r.tokens for r in reports}) == 1
    for report in reports[1:]:
        assert report.loss == pytest.approx(reports[0].loss, rel=1e-5, abs=1e-5)
    # Nor on the order of the examples.
    shuffled = held_out_loss(bundle, eval_examples[::-1], batch_size=3, max_length=96)
    assert shuffled.loss == pytest.approx(reports[0].loss, rel=1e-5, abs=1e-5)
    assert shuffled.tokens == reports[0].tokens


def test_held_out_loss_matches_a_hand_computation(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    bundle = tiny_bundle()
    tok = bundle.tokenizer
    example = Example("Is it raining?", "No, sunny.")
    report = held_out_loss(bundle, [example], max_length=128)

    prompt = tok(format_prompt(tok, example.prompt), add_special_tokens=False)["input_ids"]
    answer = [*tok(example.response, add_special_tokens=False)["input_ids"], tok.eos_token_id]
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logp = torch.log_softmax(bundle.model(input_ids=ids).logits[0].double(), dim=-1)
    # Answer token k sits at position len(prompt) + k and is predicted from the one before.
    nll = [-float(logp[len(prompt) + k - 1, t]) for k, t in enumerate(answer)]
    assert report.tokens == len(answer) == len("No, sunny.") + 1
    assert report.loss == pytest.approx(sum(nll) / len(nll), rel=1e-5)


def test_held_out_loss_rejects_no_examples(tiny_bundle: Callable[[], ModelBundle]) -> None:
    with pytest.raises(ValueError, match="no evaluation examples"):
        held_out_loss(tiny_bundle(), [])


def test_held_out_loss_leaves_the_model_in_eval_mode_without_grads(
    tiny_bundle: Callable[[], ModelBundle], eval_examples: list[Example]
) -> None:
    bundle = tiny_bundle()
    bundle.model.train()
    held_out_loss(bundle, eval_examples[:2])
    assert not bundle.model.training
    assert all(p.grad is None for p in bundle.model.parameters())


def test_generate_answers_returns_one_string_per_prompt(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    bundle = tiny_bundle()
    prompts = ["Hello?", "What is the capital of France?", "Tell me a joke."]
    answers = generate_answers(bundle, prompts, max_new_tokens=6)
    assert len(answers) == 3
    assert all(isinstance(a, str) for a in answers)
    # At most 6 new byte tokens; multi-byte characters decode to fewer characters.
    assert all(len(a.encode("utf-8", errors="replace")) <= 6 * 3 for a in answers)
    # Greedy decoding is deterministic, and each prompt is decoded on its own.
    assert generate_answers(bundle, prompts, max_new_tokens=6) == answers
    assert generate_answers(bundle, prompts[1:2], max_new_tokens=6) == answers[1:2]
    assert generate_answers(bundle, [], max_new_tokens=6) == []


def test_rouge_l() -> None:
    assert rouge_l(["the cat sat on the mat"], ["the cat sat on the mat"]) == 1.0
    assert rouge_l(["completely different words"], ["nothing shared here"]) == 0.0
    partial = rouge_l(["the cat sat"], ["the cat sat on the mat"])
    assert 0.0 < partial < 1.0
    # LCS 3 of 3 and 6 tokens: precision 1, recall 0.5, F = 2/3.
    assert partial == pytest.approx(2 / 3)
    # The mean over pairs; stemming makes "running" match "run".
    assert rouge_l(["a b", "running"], ["a b", "run"]) == 1.0
    assert rouge_l(["same", "x"], ["same", "y"]) == pytest.approx(0.5)


def test_rouge_l_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        rouge_l(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no predictions"):
        rouge_l([], [])


def test_rouge_l_papers_is_rouge_1_0_1_without_stemming() -> None:
    assert rouge_l_papers(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(
        1.0, abs=1e-7
    )
    # rouge 1.0.1 counts unique tokens: LCS {the, cat, on, mat} over 5 distinct words each.
    assert rouge_l_papers(["the cat sat on the mat"], ["the cat is on the mat"]) == pytest.approx(
        0.8, abs=1e-7
    )
    # rouge-score counts every token (LCS 5 of 6) and stems; the papers' metric does neither.
    assert rouge_l(["the cat sat on the mat"], ["the cat is on the mat"]) == pytest.approx(5 / 6)
    assert rouge_l_papers(["running"], ["run"]) == 0.0
    assert rouge_l(["running"], ["run"]) == 1.0
    assert rouge_l_papers(["", "..."], ["a b", "a b"]) == 0.0  # no words: 0, not an error
    with pytest.raises(ValueError, match="differ in length"):
        rouge_l_papers(["a"], ["a", "b"])
