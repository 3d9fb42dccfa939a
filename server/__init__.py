"""Coordinator daemon: gRPC servicers, round engine, durable state and authentication."""
