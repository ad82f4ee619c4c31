"""Training: state and step, the protocol, the one driver, its regimes, checkpoints."""
