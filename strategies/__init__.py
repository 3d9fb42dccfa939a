"""Built-in federated strategies, found like any plugin through their entry points.

``pyproject.toml`` lists each one's ``register``; :func:`fedft.core.registry.get_strategy` loads
them on first use, so importing this package registers nothing by itself.
"""

# The built-ins' registered names, for tests and docs that must not depend on which third-party
# plugins happen to be installed (a test keeps this equal to the entry points).
BUILT_IN = ("fedavg_lora", "fedkseed", "fedkseed_pro", "ferret", "flexlora", "hetlora", "legend")
