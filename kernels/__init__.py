"""Compute kernels: pure-torch references, Triton implementations and dispatchers."""
