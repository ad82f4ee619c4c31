"""Where computations run: splitting the CPU into XLA devices so seeds run on every core.

XLA:CPU runs each operation of one program on one thread, and the spirals loop is a long
chain of small operations, so a single program keeps about one core busy. Exposing the
cores as separate XLA devices and sharding the seed axis across them lets each core run
its own seeds (6 seeds, 2 cores: 11.3 -> 6.7 ms an epoch). Batch-sharding the CNN step
did not pay (1.45 -> 2.0 s at max_depth 20), so only the seed axis is sharded.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

_FLAG = "--xla_force_host_platform_device_count"


def use_all_cpu_cores() -> None:
    """Asks XLA for one CPU device per core. Effective only before JAX's backend starts
    (call it first thing in a script); a device count the user already set is kept."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={os.cpu_count() or 1}".strip()


def seed_sharding(n_seeds: int) -> NamedSharding | None:
    """A sharding of a leading seed axis over as many local devices as divide `n_seeds`."""
    devices = jax.local_devices()
    n = max(k for k in range(1, min(len(devices), n_seeds) + 1) if n_seeds % k == 0)
    if n == 1:
        return None
    return NamedSharding(Mesh(np.array(devices[:n]), ("seed",)), PartitionSpec("seed"))
