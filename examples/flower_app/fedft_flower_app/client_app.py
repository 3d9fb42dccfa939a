"""The ClientApp: runs the configured fedft strategy's client half on this node's data."""

from fedft.simulation.flower.client_app import make_client_app

app = make_client_app()
