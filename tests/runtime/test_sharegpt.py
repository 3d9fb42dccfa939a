"""ShareGPT JSON: human/assistant exchanges, one category per conversation, a cut tail tolerated."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fedft.core.errors import UsageError
from fedft.runtime import sharegpt
from fedft.runtime.data import Example, load_dataset
from fedft.simulation.partition import partition

CONVERSATIONS = [
    {
        "id": "abc_0",
        "conversations": [
            {"from": "system", "value": "be brief"},
            {"from": "human", "value": " What is 2+2? "},
            {"from": "gpt", "value": "4."},
            {"from": "human", "value": "And 3+3?"},
            {"from": "gpt", "value": "6."},
        ],
    },
    {  # the second part of the same long conversation
        "id": "abc_1",
        "conversations": [
            {"from": "user", "value": "Thanks!"},
            {"from": "chatgpt", "value": "You're welcome."},
        ],
    },
    {
        "id": "xyz_0",
        "conversations": [
            {"from": "human", "value": "hello"},
            {"from": "gpt", "value": ""},  # no answer: no example
            {"from": "human", "value": "¿Qué tal?"},
            {"from": "bard", "value": "Bien."},
        ],
    },
]


def write(path: Path, conversations: list[dict[str, object]], tail: str = "") -> Path:
    path.write_text(json.dumps(conversations, ensure_ascii=False)[:-1] + tail, encoding="utf-8")
    return path


def test_exchanges_become_examples_grouped_by_conversation(tmp_path: Path) -> None:
    path = write(tmp_path / "chats.json", CONVERSATIONS, "]")
    assert sharegpt.load_sharegpt(path) == [
        Example("What is 2+2?", "4.", "abc"),
        Example("And 3+3?", "6.", "abc"),
        Example("Thanks!", "You're welcome.", "abc"),
        Example("¿Qué tal?", "Bien.", "xyz"),
    ]
    assert load_dataset(str(path)) == sharegpt.load_sharegpt(path)  # a .json path is ShareGPT


def test_a_file_cut_mid_record_keeps_every_complete_conversation(tmp_path: Path) -> None:
    # The packaged file ends inside a string, as this one does.
    path = write(tmp_path / "cut.json", CONVERSATIONS, ', {"id": "q_0", "conversations": [{"fr')
    assert [e.category for e in sharegpt.load_sharegpt(path)] == ["abc", "abc", "abc", "xyz"]


def test_category_partition_keeps_conversations_whole(tmp_path: Path) -> None:
    examples = sharegpt.load_sharegpt(write(tmp_path / "chats.json", CONVERSATIONS, "]"))
    parts = partition(examples, 2, "category", seed=0)
    owners = [{examples[i].category for i in part} for part in parts]
    assert owners == [{"abc"}, {"xyz"}]


@pytest.mark.parametrize(
    ("content", "message"),
    [("{}", "not a ShareGPT JSON array"), ("[]", "no human/assistant exchanges")],
)
def test_bad_files_are_usage_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        sharegpt.load_sharegpt(path)
    with pytest.raises(UsageError, match="does not exist"):
        sharegpt.load_sharegpt(tmp_path / "missing.json")


def test_the_preset_names_its_install_line_when_the_package_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sharegpt.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match=re.escape(sharegpt.SHAREGPT_INSTALL)):
        load_dataset("sharegpt")
