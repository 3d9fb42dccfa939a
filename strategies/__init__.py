"""Built-in federated strategies; importing this package registers them."""

from fedft.strategies import (
    fedavg_lora,
    fedkseed,
    fedkseed_pro,
    ferret,
    flexlora,
    hetlora,
    legend,
)

__all__ = ["fedavg_lora", "fedkseed", "fedkseed_pro", "ferret", "flexlora", "hetlora", "legend"]
