"""Built-in federated strategies; importing this package registers them."""

from fedft.strategies import fedavg_lora

__all__ = ["fedavg_lora"]
