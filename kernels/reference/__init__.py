"""Pure-torch references of the kernels: the specification every Triton kernel must match."""
