"""What a run costs: network passes counted where they run, and wall time with and without compiling.

Costs are counted, not estimated: `Cost` is carried through jitted code and each function that runs
the network adds the passes it runs, so a count cannot drift from the code. Wall time is split
with JAX's own compile events (tracing, lowering, XLA compilation), which every `jit` reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Iterator

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


class Cost(flax.struct.PyTreeNode):
    """Network passes run so far. A gradient evaluation is one forward and one backward pass; a
    Hessian-vector product is one more backward pass, through a gradient (second-order DARTS)."""

    forward: jax.Array  # forward-only passes (architecture steps that need no weight gradient, rankings)
    gradient: jax.Array
    hvp: jax.Array

    @classmethod
    def zero(cls) -> "Cost":
        z = jnp.zeros((), jnp.int32)
        return cls(forward=z, gradient=z, hvp=z)

    def add(self, forward: int = 0, gradient: int = 0, hvp: int = 0) -> "Cost":
        return Cost(forward=self.forward + forward, gradient=self.gradient + gradient, hvp=self.hvp + hvp)

    def __add__(self, other: "Cost") -> "Cost":
        return jax.tree_util.tree_map(lambda a, b: a + b, self, other)

    def counts(self) -> dict[str, int]:
        """Host integers, e.g. for a results file."""
        return {"forward_passes": int(np.asarray(self.forward)), "gradient_evaluations": int(np.asarray(self.gradient)),
                "hessian_vector_products": int(np.asarray(self.hvp))}


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_open_clocks: list["Clock"] = []


def _on_event(name: str, seconds: float, **_) -> None:
    if name in _COMPILE_EVENTS:
        for clock in _open_clocks:
            clock.compile_seconds += seconds


jax.monitoring.register_event_duration_secs_listener(_on_event)


@dataclasses.dataclass
class Clock:
    """Wall time of a block, and the part of it JAX spent compiling (filled in when the block ends)."""

    seconds: float = 0.0
    compile_seconds: float = 0.0

    @property
    def seconds_no_compile(self) -> float:
        return self.seconds - self.compile_seconds


@contextlib.contextmanager
def clock() -> Iterator[Clock]:
    """`with clock() as c: ...`; afterwards `c.seconds` (compile included) and `c.seconds_no_compile`.
    Clocks nest: a compilation counts towards every clock open at the time."""
    c = Clock()
    _open_clocks.append(c)
    start = time.perf_counter()
    try:
        yield c
    finally:
        c.seconds = time.perf_counter() - start
        _open_clocks.remove(c)


def median_seconds(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of `fn()` over `repeats` calls after `warmup` calls (which compile):
    the running cost without compilation. `fn` must block until its result is ready."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))

