"""The Flower tests need the optional extra; CI installs it and must not silently skip them.

Each module starts with ``pytest.importorskip("flwr")``, so a plain setup reports them skipped.
"""

from __future__ import annotations

import importlib.util
import os

if os.environ.get("CI") == "true" and (
    importlib.util.find_spec("flwr") is None or importlib.util.find_spec("ray") is None
):
    raise RuntimeError("CI must run the Flower tests: install fedft[flower] (FEDFT_EXTRAS=flower)")
