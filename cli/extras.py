"""Optional extras: which missing module means which ``pip install`` line, said in one line.

The base install is the lean edge client. A command that needs the ``server`` extra (the
coordinator, its database tools, the simulator and the audit) fails on its first import of one
of these modules; :func:`missing_extra_hint` turns that into the install line instead of a
traceback.
"""

from __future__ import annotations

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
    what = f"`fedft {command}`" if command else "this command"
    return (
        f"{what} needs fedft's server extra ({top} is not installed): pip install 'fedft[server]'"
    )
