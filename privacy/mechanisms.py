"""DP building blocks: L2 clipping, CSPRNG Gaussian noise, adaptive clipping (Andrew et al.)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from fedft.core.errors import UsageError

_UNIT = 2.0**-53


def clip_l2(vector: torch.Tensor, clip_norm: float) -> tuple[torch.Tensor, bool]:
    """Scale ``vector`` down to L2 norm ``clip_norm`` if longer; return it and "was within"."""
    norm = float(torch.linalg.vector_norm(vector.to(torch.float64)))
    if not math.isfinite(norm):
        raise ValueError("cannot clip a vector with NaN or Inf entries")
    if norm <= clip_norm:
        return vector, True
    return vector * (clip_norm / norm), False


class SecureGaussian:
    """Standard normal samples whose bits come from a ChaCha20 keystream keyed by the OS.

    DP noise must be unpredictable: an adversary who can reproduce it subtracts it and the
    guarantee is gone. numpy's and torch's generators are fast but not cryptographic (their
    state can be recovered from outputs, and a seed from a clock or a 32-bit fold can be
    brute-forced, as in Flower's SecAgg+ PRG). So the bits come from ChaCha20 under a 256-bit key
    from ``os.urandom``, re-keyed for every draw, and become normals by Box-Muller in float64.
    (Floating-point sampling has its own subtle leak (Mironov 2012); that is out of scope here.)
    """

    def __init__(self, key: bytes | None = None):
        # A fixed key makes draws reproducible: for tests only, never for a real release.
        self._fixed = key
        self._draws = 0

    def _keystream(self, nbytes: int) -> bytes:
        # Imported here: a run without DP never needs cryptography (GPU images may lack it).
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

        key = self._fixed if self._fixed is not None else os.urandom(32)
        nonce = self._draws.to_bytes(16, "little")
        self._draws += 1
        encryptor = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
        return encryptor.update(bytes(nbytes))

    def standard_normal(self, size: int) -> torch.Tensor:
        """Return ``size`` independent N(0, 1) samples as float64."""
        if size < 0:
            raise ValueError("size must be >= 0")
        pairs = (size + 1) // 2
        words = np.frombuffer(self._keystream(16 * pairs), dtype="<u8").reshape(pairs, 2)
        # 53 random bits each; u1 in (0, 1] so that log(u1) is finite.
        u1 = ((words[:, 0] >> np.uint64(11)).astype(np.float64) + 1.0) * _UNIT
        u2 = (words[:, 1] >> np.uint64(11)).astype(np.float64) * _UNIT
        radius = np.sqrt(-2.0 * np.log(u1))
        angle = 2.0 * math.pi * u2
        samples = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:size]
        return torch.from_numpy(samples.copy())

    def normal(self, size: int, std: float) -> torch.Tensor:
        """Return ``size`` samples of N(0, std^2) as float64."""
        if not (math.isfinite(std) and std >= 0):
            raise ValueError(f"noise std must be finite and >= 0, got {std}")
        return self.standard_normal(size) * std


def update_noise_multiplier(total: float, count_stddev: float) -> float:
    """Noise multiplier on the updates so that updates and clipped count together spend ``total``.

    Releasing the sum with multiplier z_u and the count of unclipped clients with noise sigma_b
    (sensitivity 1/2) costs as one Gaussian with z = (z_u^-2 + (2 sigma_b)^-2)^-1/2 (Andrew et al.,
    Thm. 1), so z_u = (z^-2 - (2 sigma_b)^-2)^-1/2.
    """
    if total <= 0:
        raise UsageError("adaptive clipping needs a noise multiplier > 0")
    rest = total**-2 - (2 * count_stddev) ** -2
    if rest <= 0:
        raise UsageError(
            f"noise multiplier {total} is too large for the clipped-count noise {count_stddev}: "
            f"it must be below {2 * count_stddev:g} (raise --dp-count-stddev)"
        )
    return float(rest**-0.5)


@dataclass
class AdaptiveClip:
    """Geometric quantile tracking of the clip norm (Andrew, Thakkar, McMahan, Ramaswamy 2021).

    Each round, b is the noisy fraction of clients whose update was NOT clipped (norm <= C);
    ``C <- C * exp(-lr * (b - target))``. More unclipped than the target quantile means C is too
    large, so it shrinks. Flower 1.42 counts the *clipped* clients with the same sign, which
    drives C to zero; ``tests/privacy/test_mechanisms.py`` replays both rules.
    """

    clip: float
    target_quantile: float = 0.5
    lr: float = 0.2

    def update(self, unclipped: int, participants: int, expected: float, noise: float) -> float:
        """Move the clip norm from this round's counts; ``noise`` is the count's Gaussian noise.

        The count is centred (each client adds b - 1/2, sensitivity 1/2) and divided by the
        expected number of participants, never the realised one, which would be data dependent.
        """
        centred = unclipped - participants / 2 + noise
        fraction = min(max(centred / expected + 0.5, 0.0), 1.0)
        self.clip *= math.exp(-self.lr * (fraction - self.target_quantile))
        return self.clip
