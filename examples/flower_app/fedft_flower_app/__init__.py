"""fedft's strategy plugins packaged as a Flower app (ServerApp + ClientApp)."""
