"""Triton kernels; import a module here only after the dispatcher chose Triton (lazy import)."""
