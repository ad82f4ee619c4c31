"""Counted costs and compile-aware wall time."""

import time

import jax
import jax.numpy as jnp

from vdjax.training.cost import Cost, clock


def test_costs_add_up_inside_jit():
    @jax.jit
    def run(cost):
        return jax.lax.fori_loop(0, 7, lambda i, c: c.add(forward=1, gradient=2), cost)

    total = run(Cost.zero()) + Cost.zero().add(hvp=3)
    assert total.counts() == {"forward_passes": 7, "gradient_evaluations": 14, "hessian_vector_products": 3}


def test_clock_separates_compilation_from_running():
    @jax.jit
    def f(x):
        time.sleep(0.2)  # runs while tracing: compile time, not run time
        return jnp.sin(x) * 2

    x = jnp.ones(8)
    with clock() as outer:
        with clock() as first:
            f(x).block_until_ready()
        with clock() as second:
            f(x).block_until_ready()
            time.sleep(0.1)
    assert first.compile_seconds >= 0.2 and first.seconds >= first.compile_seconds
    assert second.compile_seconds == 0 and second.seconds_no_compile >= 0.1
    assert outer.compile_seconds == first.compile_seconds  # nested clocks both see it
