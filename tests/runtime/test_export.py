"""Exported models load with transformers + peft alone and score what fedft scored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fedft.runtime.batching import collate, encode
from fedft.runtime.export import base_model_id, model_card
from fedft.simulation.engine import InProcessEngine
from fedft.simulation.spec import SimulationSpec

# Runs in a fresh interpreter where `import fedft` fails: a Hugging Face user's environment.
OUTSIDER = r"""
import json, sys
sys.modules["fedft"] = None  # any import of fedft now raises ImportError
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, base, batch_file = sys.argv[1:4]
tokenizer = AutoTokenizer.from_pretrained(folder)
if (__import__("pathlib").Path(folder) / "adapter_config.json").exists():
    from peft import PeftModel
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder)
else:
    model = AutoModelForCausalLM.from_pretrained(folder)
model.eval()
batch = torch.load(batch_file)
with torch.no_grad():
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
labels = batch["labels"][:, 1:]
loss = torch.nn.functional.cross_entropy(
    logits[:, :-1].float().reshape(-1, logits.size(-1)), labels.reshape(-1),
    ignore_index=-100, reduction="sum",
)
print(json.dumps({"loss": float(loss) / int((labels != -100).sum()),
                  "vocab": len(tokenizer)}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "options", "folder", "extra"),
    [
        ("fedavg_lora", {"local_steps": 2, "batch_size": 2}, "adapter", {}),
        # Per-device depth and rank: the export must carry the real ranks, not rank-64 padding.
        ("legend", {"local_steps": 2, "batch_size": 2}, "adapter", {"device_mix": "fast:1,slow:1"}),
        ("fedkseed", {"local_steps": 5, "seeds": 64, "lr": 5e-5}, "model", {}),
        ("ferret", {"local_steps": 2, "seeds": 64, "lr": 1e-4}, "model", {}),
    ],
    ids=["fedavg_lora", "legend", "fedkseed", "ferret"],
)
def test_exports_load_without_fedft_and_reproduce_the_eval_loss(
    tmp_path: Path, strategy: str, options: dict[str, object], folder: str, extra: dict[str, str]
) -> None:
    spec = SimulationSpec(
        strategy=strategy, strategy_options=options, model="tiny", clients=2, rounds=1,
        seed=0, out=tmp_path / "run", rouge_examples=0, eval_examples=8, device="cpu", **extra,
    )  # fmt: skip
    engine = InProcessEngine(spec)
    engine.run()
    out = tmp_path / "run" / folder
    assert (out / "README.md").is_file()
    assert (out / "tokenizer.json").is_file() or (out / "tokenizer_config.json").is_file()
    if folder == "adapter":
        config = json.loads((out / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "fedft/tiny-llama"  # never a machine path
        ranks = {
            k: t.shape[0]
            for k, t in load_file(out / "adapter_model.safetensors").items()
            if "lora_A" in k
        }
        if strategy == "legend":  # the layers' real ranks, below the shared rank
            assert config["rank_pattern"]
            assert max(ranks.values()) < config["r"]
            assert len(set(ranks.values())) > 1

    # The same held-out batch, scored by fedft and by a process that cannot import fedft.
    bundle = engine.bundle
    items = [encode(bundle.tokenizer, ex, spec.max_length) for ex in engine.eval_set]
    batch = collate(items, bundle.tokenizer.pad_token_id)
    torch.save(batch, tmp_path / "batch.pt")
    with torch.no_grad():
        logits = bundle.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    labels = batch["labels"][:, 1:]
    ours = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.size(-1)),
        labels.reshape(-1),
        ignore_index=-100,
        reduction="sum",
    ) / int((labels != -100).sum())
    proc = subprocess.run(
        [sys.executable, "-c", OUTSIDER, str(out), str(bundle.path), str(tmp_path / "batch.pt")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert theirs["loss"] == pytest.approx(float(ours), abs=1e-5)


def test_base_ids_never_name_a_path_of_this_machine() -> None:
    assert base_model_id("smollm2") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model_id("/home/alice/.cache/fedft/models/my-model") == "my-model"
    card = model_card("smollm2", True, {"strategy": "legend", "rounds": 3, "note": "a|b"})
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert "Q4_1 GGUF" in card  # says how the base was obtained
    assert "PeftModel.from_pretrained" in card
    assert "a\\|b" in card  # table cells stay one cell
