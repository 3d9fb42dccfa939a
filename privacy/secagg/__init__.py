"""SecAgg+ secure aggregation: a host-independent protocol core (Bell et al. 2020).

Modules, one job each: ``errors`` (error types), ``graph`` (round context and the k-regular
neighbour graph), ``shamir`` (secret sharing over GF(2^521 - 1)), ``crypto`` (X25519, HKDF,
ChaCha20 masks, ChaCha20-Poly1305 share transport, Ed25519-signed keys), ``encoding``
(fixed-point ring encoding), ``config`` (a round's public parameters), ``messages`` (the four
stages' message types), ``client`` and ``server`` (pure state machines) and ``simulate`` (the
whole protocol in one process).
"""
