"""Where computations run: splitting the CPU into XLA devices so seeds run on every core.

XLA:CPU runs each operation of one program on one thread, and the spirals loop is a long
chain of small operations, so a single program keeps about one core busy. Exposing the
cores as separate XLA devices and sharding the seed axis across them lets each core run
its own seeds (6 seeds, 2 cores: 11.3 -> 6.7 ms an epoch). Batch-sharding the CNN step
did not pay (1.45 -> 2.0 s at max_depth 20), so only the seed axis is sharded.
"""

from __future__ import annotations

import os
import platform
from typing import Any

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


def seed_devices(n_seeds: int) -> int:
    """How many local devices `n_seeds` vmapped seeds are split over: the most that divide them.
    Each device runs n_seeds / that many seeds in one vmapped batch, and that batch size changes
    the floats (other kernels), so it is part of a spirals run's id."""
    return max(k for k in range(1, min(jax.local_device_count(), n_seeds) + 1) if n_seeds % k == 0)


def seed_sharding(n_seeds: int) -> NamedSharding | None:
    """A sharding of a leading seed axis over `seed_devices(n_seeds)` local devices."""
    n = seed_devices(n_seeds)
    if n == 1:
        return None
    return NamedSharding(Mesh(np.array(jax.local_devices()[:n]), ("seed",)), PartitionSpec("seed"))


def numerics() -> dict[str, Any]:
    """What a run's floats depend on besides its configs, data and seeds: the backend, the
    device kind and the versions of the libraries that compile and run it. Part of every
    checkpoint's run id, so a resume never mixes numbers of two setups."""
    import flax
    import jaxlib
    import optax

    return {"platform": jax.default_backend(), "device_kind": jax.local_devices()[0].device_kind,
            "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
            "optax": optax.__version__}


def environment() -> dict[str, Any]:
    """`numerics()` plus the machine and its device count, for results files."""
    return {**numerics(), "devices": jax.local_device_count(), "machine": platform.machine(),
            "python": platform.python_version()}
