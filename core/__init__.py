"""Framework-neutral core: payload types, strategy API, registry, seeded RNG contract, serde."""
