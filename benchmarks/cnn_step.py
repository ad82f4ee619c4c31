"""CNN LDN train step on this machine: compile time and median step time per implementation.

    python benchmarks/cnn_step.py --depths 10 20 50 100 --impls im2col xla --batch 128
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import jax
import numpy as np

from vdjax.cli import validate
from vdjax.training.cost import median_seconds
from vdjax.nn.models import ModelConfig
from vdjax.training.config import TrainConfig
from vdjax.training.step import init_state, make_optimizer, make_train_step


def train_step_call(cfg: ModelConfig, batch: int) -> tuple[float, Callable[[], None]]:
    """The library's jitted train step for `cfg` on a fixed random batch: its compile time (trace +
    XLA compile) and a zero-argument call that runs one step and waits for it (the step donates
    its state, so the call carries the state forward)."""
    tc = TrainConfig()
    opt = make_optimizer(tc, 1)
    state = init_state(jax.random.key(0), cfg, opt)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, *cfg.input_shape)).astype(np.float32)
    y = rng.integers(0, cfg.num_classes, batch).astype(np.int32)
    x, y = jax.device_put((x, y))  # the batch lives on the device, as the PyTorch peer's does
    t0 = time.perf_counter()
    compiled = make_train_step(cfg, tc, opt, batch).lower(state, x, y).compile()
    compile_s = time.perf_counter() - t0
    box = [state]

    def step() -> None:
        box[0], metrics = compiled(box[0], x, y)
        jax.block_until_ready(metrics["loss"])

    return compile_s, step


def time_train_step(cfg: ModelConfig, batch: int, steps: int, warmup: int = 1) -> dict[str, float]:
    """Compile time (trace + XLA compile) and median seconds per step after warm-up."""
    compile_s, step = train_step_call(cfg, batch)
    step_s = median_seconds(step, steps, warmup)
    return {"compile_s": compile_s, "step_s": step_s, "examples_per_s": batch / step_s}


def main(argv=None) -> None:
    p = validate.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depths", type=validate.non_negative_int, nargs="+", default=[10, 20, 50, 100])
    p.add_argument("--impls", nargs="+", choices=["auto", "im2col", "xla"], default=["im2col", "xla"])
    p.add_argument("--unroll", type=validate.positive_int, nargs="+", default=[1])
    p.add_argument("--batch", type=validate.positive_int, default=128)
    p.add_argument("--steps", type=validate.positive_int, default=5)
    p.add_argument("--shape", type=validate.positive_int, nargs=3, default=[28, 28, 1], metavar=("H", "W", "C"))
    args = p.parse_args(argv)
    print(f"backend {jax.default_backend()}, devices {jax.devices()}")
    print(f"{'impl':8s} {'unroll':>6s} {'D':>4s} {'compile s':>10s} {'step s':>8s} {'ex/s':>8s}")
    for impl in args.impls:
        for unroll in args.unroll:
            for d in args.depths:
                cfg = ModelConfig("cnn", d, 10, tuple(args.shape), conv_impl=impl, unroll=unroll)
                r = time_train_step(cfg, args.batch, args.steps)
                print(f"{impl:8s} {unroll:6d} {d:4d} {r['compile_s']:10.2f} {r['step_s']:8.3f} {r['examples_per_s']:8.1f}",
                      flush=True)


if __name__ == "__main__":
    sys.exit(validate.run_main(main))
