"""Error types of the secure aggregation protocol: each failure mode has its own class."""

from __future__ import annotations

from fedft.core.errors import ProtocolError


class SecAggError(ProtocolError):
    """Base class: the secure aggregation round cannot go on as asked."""


class StageError(SecAggError):
    """A message arrived for a stage that is not the current one, or twice from one client."""


class BelowThresholdError(SecAggError):
    """Too few clients remain to finish the round; nothing is aggregated and nothing leaks."""


class KeyVerificationError(SecAggError):
    """An advertised key's signature does not verify against the sender's enrolled identity."""


class ShareDecryptionError(SecAggError):
    """A share ciphertext failed authentication (tampered, misaddressed or from another round)."""


class RefusedRequestError(SecAggError):
    """An honest client refuses an unmask request that would let the server unmask a client."""


class EncodingOverflowError(SecAggError):
    """The ring has too little headroom for the number of summands at this encoding."""
