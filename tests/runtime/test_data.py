"""Tests for fedft.runtime.data: JSONL shapes, errors naming file:line, the chatterbot corpus."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fedft.core.errors import UsageError
from fedft.runtime.data import Example, load_chatterbot, load_dataset, load_jsonl


def write_jsonl(path: Path, records: list[Any]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"prompt": "Hi?", "response": "Hello."}, Example("Hi?", "Hello.")),
        (
            {"prompt": "Hi?", "response": "Hello.", "category": "greetings"},
            Example("Hi?", "Hello.", "greetings"),
        ),
        ({"instruction": "Add", "output": "3"}, Example("Add", "3")),
        (
            {"instruction": "Add the numbers", "input": "1 and 2", "output": "3"},
            Example("Add the numbers\n\n1 and 2", "3"),
        ),
        (
            {"instruction": "Add", "input": "", "output": "3"},  # empty input adds nothing
            Example("Add", "3"),
        ),
        ({"question": "2+2?", "answer": "4", "category": "math"}, Example("2+2?", "4", "math")),
        ({"prompt": "p", "completion": "c"}, Example("p", "c")),
        ({"question": "q", "context": "ctx", "answer": "a"}, Example("q\n\nctx", "a")),
        (
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Capital of France?"},
                    {"role": "assistant", "content": "Paris."},
                ],
                "category": "geo",
            },
            Example("Capital of France?", "Paris.", "geo"),
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "one"},
                    {"role": "user", "content": "second"},
                    {"role": "assistant", "content": "two"},
                ]
            },
            Example("second", "two"),
        ),
        (
            # A trailing user turn has no answer yet: the last answered exchange is used.
            {
                "messages": [
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "one"},
                    {"role": "user", "content": "unanswered"},
                ]
            },
            Example("first", "one"),
        ),
        # Unicode survives untouched.
        ({"prompt": "Grüße 日本?", "response": "¡Hola! 🎉"}, Example("Grüße 日本?", "¡Hola! 🎉")),
    ],
)
def test_accepted_shapes(tmp_path: Path, record: dict[str, Any], expected: Example) -> None:
    path = write_jsonl(tmp_path / "data.jsonl", [record])
    assert load_jsonl(path) == [expected]


def test_many_lines_keep_order_and_skip_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"prompt": "a", "response": "1", "category": "x"}),
                "",
                "   ",
                json.dumps({"question": "b", "answer": "2", "category": "y"}),
                "\t",
                json.dumps({"instruction": "c", "output": "3"}),
            ]
        )
        + "\n\n",
        encoding="utf-8",
    )
    examples = load_jsonl(path)
    assert examples == [Example("a", "1", "x"), Example("b", "2", "y"), Example("c", "3", "")]
    assert load_dataset(str(path)) == examples


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("{not json", "malformed record"),
        ('["a", "b"]', "expected a JSON object, got list"),
        ('"just a string"', "expected a JSON object, got str"),
        ("42", "expected a JSON object, got int"),
        ('{"prompt": "only a prompt"}', "needs non-empty 'prompt' and 'response'"),
        ('{"response": "only a response"}', "needs non-empty 'prompt' and 'response'"),
        ('{"prompt": "  ", "response": "blank prompt"}', "needs non-empty"),
        ('{"prompt": 5, "response": "number prompt"}', "needs non-empty"),
        ('{"prompt": "p", "response": "r", "category": 3}', "'category' must be a string"),
        ('{"prompt": "p", "response": "r", "category": null}', "'category' must be a string"),
        ('{"messages": "hello"}', "'messages' must be a list"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "needs a user turn"),
        (
            '{"messages": [{"role": "user", "content": 1}, {"role": "assistant", "content": "x"}]}',
            "non-empty string 'content'",
        ),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, bad_line: str, reason: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"prompt": "ok", "response": "fine"})
    # Line 3 is bad (line 2 is blank and still counts).
    path.write_text(f"{good}\n\n{bad_line}\n{good}\n", encoding="utf-8")
    with pytest.raises(UsageError) as info:
        load_jsonl(path)
    message = str(info.value)
    assert f"{path}:3" in message
    assert reason in message


def test_empty_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(UsageError, match="holds no examples"):
        load_jsonl(path)
    path.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(UsageError, match="holds no examples"):
        load_jsonl(path)


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(UsageError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.jsonl"))
    # A folder is not a dataset file either.
    with pytest.raises(UsageError, match="does not exist"):
        load_jsonl(tmp_path)


def test_chatterbot_corpus(chatterbot_examples: list[Example]) -> None:
    examples = chatterbot_examples
    assert 2300 <= len(examples) <= 2450
    for ex in examples:
        assert ex.prompt.strip()
        assert ex.response.strip()
        assert ex.prompt == ex.prompt.strip()
        assert ex.category
        assert ex.category == ex.category.lower()
    counts = Counter(ex.category for ex in examples)
    assert len(counts) == 21
    assert counts.most_common(1)[0][0] == "tech support"
    assert {"greetings", "trivia", "ai", "history"} <= set(counts)


def test_chatterbot_is_deterministic_and_is_the_default_dataset(
    chatterbot_examples: list[Example],
) -> None:
    assert load_chatterbot() == chatterbot_examples
    assert load_dataset("chatterbot") == chatterbot_examples
