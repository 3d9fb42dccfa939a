"""Flower host: run fedft strategy plugins on Flower's engine (the only place importing flwr).

Importing this package does not import flwr, so callers can check for the optional extra first
with :func:`ensure_flower` and give a one-line install hint instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import os

from fedft.core.errors import UsageError

# flwr reads these when it is first imported, which can only happen through this package's
# modules: no telemetry and no update check (fedft runs offline; a user may still opt in).
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

INSTALL_HINT = "pip install 'fedft[flower]'"


def flower_missing() -> str | None:
    """Return which part of the Flower extra is missing (``flwr`` or ``ray``), or None."""
    for module in ("flwr", "ray"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return module
    return None


def ensure_flower() -> None:
    """Raise a UsageError naming the install command when the Flower extra is not installed."""
    missing = flower_missing()
    if missing is not None:
        raise UsageError(
            f"--engine flower needs the optional Flower extra ({missing} is not installed): "
            f"{INSTALL_HINT}"
        )
