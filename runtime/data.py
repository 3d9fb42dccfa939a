"""Local text data: prompt/response pairs from JSONL, ShareGPT JSON or the embedded corpora."""

from __future__ import annotations

import importlib.util
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedft.core.errors import UsageError

CHATTERBOT_PACKAGE = "chatterbot_corpus"
DATASET_PRESETS = ("chatterbot", "sharegpt")


@dataclass(frozen=True)
class Example:
    """One prompt/response pair; ``category`` drives non-IID splits."""

    prompt: str
    response: str
    category: str = ""


def _field(record: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = record.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def example_from_record(record: Any) -> Example:
    """Read one JSON object in any of the accepted shapes (see ``docs/data.md``)."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    category = record.get("category", "")
    if not isinstance(category, str):
        raise ValueError("'category' must be a string")
    messages = record.get("messages")
    if messages is not None:
        return _example_from_messages(messages, category)
    prompt = _field(record, "prompt", "instruction", "question")
    response = _field(record, "response", "output", "answer", "completion")
    if prompt is None or response is None:
        raise ValueError(
            "needs non-empty 'prompt' and 'response' (or 'instruction'/'output', or 'messages')"
        )
    context = _field(record, "input", "context")
    if context is not None:
        prompt = f"{prompt}\n\n{context}"
    return Example(prompt=prompt, response=response, category=category)


def _example_from_messages(messages: Any, category: str) -> Example:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("'messages' must be a list of {role, content} objects")
    roles = [m.get("role") for m in messages]
    # The answer is the last assistant turn; the prompt is the last user turn before it.
    last_answer = max((i for i, r in enumerate(roles) if r == "assistant"), default=-1)
    last_user = max((i for i, r in enumerate(roles[:last_answer]) if r == "user"), default=-1)
    if last_user < 0:
        raise ValueError("'messages' needs a user turn followed by an assistant turn")
    prompt, answer = messages[last_user].get("content"), messages[last_answer].get("content")
    if not isinstance(prompt, str) or not isinstance(answer, str) or not prompt or not answer:
        raise ValueError("'messages' turns need non-empty string 'content'")
    return Example(prompt=prompt, response=answer, category=category)


def load_jsonl(path: Path) -> list[Example]:
    """Load examples from a JSONL file; any malformed line is a UsageError naming file and line."""
    if not path.is_file():
        raise UsageError(f"dataset file {path} does not exist")
    examples: list[Example] = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                examples.append(example_from_record(json.loads(line)))
            except (json.JSONDecodeError, ValueError) as exc:
                raise UsageError(f"{path}:{lineno}: malformed record: {exc}") from None
    if not examples:
        raise UsageError(f"{path} holds no examples")
    return examples


def chatterbot_dir(language: str = "english") -> Path:
    """Locate the YAML folder of the ``chatterbot-corpus`` package."""
    spec = importlib.util.find_spec(CHATTERBOT_PACKAGE)
    if spec is None or spec.origin is None:
        raise UsageError(
            "the embedded default dataset needs: pip install --no-deps chatterbot-corpus==1.3.3"
        )
    folder = Path(spec.origin).parent / "data" / language
    if not folder.is_dir():
        raise UsageError(f"chatterbot-corpus has no {language!r} data at {folder}")
    return folder


def load_chatterbot(language: str = "english") -> list[Example]:
    """Load chatterbot dialogs as (turn, next turn) pairs; a file's first category labels them."""
    import yaml

    # libyaml's safe loader parses the corpus ten times faster than the pure-Python one.
    safe_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    examples: list[Example] = []
    for file in sorted(chatterbot_dir(language).glob("*.yml")):
        doc = yaml.load(file.read_text(encoding="utf-8"), Loader=safe_loader) or {}
        categories = doc.get("categories") or [file.stem]
        category = str(categories[0]).lower()
        for conversation in doc.get("conversations") or []:
            turns = [str(t).strip() for t in conversation if str(t).strip()]
            examples.extend(
                Example(prompt=a, response=b, category=category)
                for a, b in itertools.pairwise(turns)
            )
    return examples


def load_dataset(spec: str) -> list[Example]:
    """Load ``chatterbot`` (the embedded default), ``sharegpt``, a ShareGPT ``.json`` or JSONL."""
    if spec == "chatterbot":
        return load_chatterbot()
    from fedft.runtime import sharegpt  # imports this module: load it only when asked

    if spec == "sharegpt":
        return sharegpt.load_sharegpt()
    path = Path(spec).expanduser()
    if path.suffix == ".json":
        return sharegpt.load_sharegpt(path)
    return load_jsonl(path)
