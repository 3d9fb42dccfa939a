"""The fixed choices a run offers (base quantization, participation weighting), in one place.

Kept free of torch so that building the command line (``fedft --help``) stays fast; the modules
that implement each choice, the specs that validate it and the flags that offer it all read here.
"""

from __future__ import annotations

# Frozen-base quantization for LoRA training (fedft.runtime.quantization).
QUANT_CHOICES = ("none", "nf4", "int8")
# How the server weights the clients that take part (fedft.strategies.participation).
PARTICIPATION_CHOICES = ("none", "fedau")
# Mixed precision of local training steps' forward (fedft.runtime.trainer).
AUTOCAST_CHOICES = ("none", "bf16")
