"""The ServerApp: hosts the configured fedft strategy's server half and writes report.json."""

from fedft.simulation.flower.server_app import make_server_app

app = make_server_app()
