"""Optional extras: which missing module means which ``pip install`` line, said in one line.

The base install is the lean edge client. A command that needs the ``server`` extra (the
coordinator, its database tools, the simulator and the audit) fails on its first import of one
of these modules; :func:`missing_extra_hint` turns that into the install line instead of a
traceback.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

# Top-level modules the ``server`` extra brings (pyproject.toml lists their distributions).
SERVER_MODULES = (
    "sqlalchemy",
    "alembic",
    "prometheus_client",
    "dp_accounting",
    "scipy",
    "matplotlib",
    "rouge_score",
    "rouge",
)


def missing_extra_hint(exc: ModuleNotFoundError, command: str | None) -> str | None:
    """The one-line install hint for ``exc``, or None when no extra of ours provides it."""
    top = (exc.name or "").partition(".")[0]
    if top not in SERVER_MODULES:
        return None
    return _hint(top, command)


def require_server_modules(command: str, modules: Sequence[str]) -> None:
    """Refuse now, in one line, when a module a command will need at its end is missing.

    For commands that import a module only late (``simulate`` plots and scores Rouge-L after
    training): better said before the work than after it.
    """
    from fedft.core.errors import UsageError

    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise UsageError(_hint(module, command))


def _hint(module: str, command: str | None) -> str:
    what = f"`fedft {command}`" if command else "this command"
    missing = f"({module} is not installed)"
    return f"{what} needs fedft's server extra {missing}: pip install 'fedft[server]'"
