"""How long the paper-scale image grid would take: on this machine from measured step times, or
on GPUs from a FLOP count (--flops). Both are estimates.

The grid: depths 0,5,...,50,60,...,100, LDN + DDN, 4 repeats, MNIST + Fashion-MNIST (60k train
images, 28x28x1) and SVHN (73,257, 32x32x3), batch 512, an assumed number of epochs per network
(early stopping after 30 epochs without improvement; the cap is 500), and each epoch an
evaluation of the test set (the paper stops on the test ELBO).

Measured time (default): times the CNN train step at batch 512 for a few depths, fits step time
as a + b * D (the blocks dominate and cost the same each), costs SVHN by pixel count and an
evaluation at a third of a training step per image.

FLOPs (--flops): XLA's count (`cost_analysis`) of the train step and the evaluation forward
pass for each input shape, at D = 0 and D = 1 (the block stack is one scan, whose body XLA
counts once, so D blocks cost F(0) + D * (F(1) - F(0))), turned into GPU hours at an assumed
peak and utilisation.

    python benchmarks/image_grid_estimate.py --depths 10 50 --epochs 100
    python benchmarks/image_grid_estimate.py --flops --epochs 100
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Callable

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # report.py renders the tables
from cnn_step import time_train_step  # noqa: E402

from vdjax.cli import validate  # noqa: E402
from vdjax.nn.models import ModelConfig  # noqa: E402

PAPER_DEPTHS = [*range(0, 51, 5), *range(60, 101, 10)]
DATASETS = {"mnist": (60000, 10000, (28, 28, 1)), "fashion_mnist": (60000, 10000, (28, 28, 1)),
            "svhn": (73257, 26032, (32, 32, 3))}  # (train, test, image shape)
NETWORKS_PER_DEPTH = 2 * 4  # LDN + DDN, 4 repeats


@dataclasses.dataclass(frozen=True)
class Gpu:
    """A GPU's dense peak for this network's arithmetic (FP32 convolutions run as TF32 on
    tensor cores by default in XLA on Ampere and later) and the fraction of it assumed reached."""

    name: str
    peak_tflops: float
    utilisation: float


# Datasheet dense peaks (no sparsity). The utilisation is an assumption, not a measurement: the
# network is small (64 channels, 12x12 maps, batch 512), far from the shapes that reach the peak.
GPUS = (Gpu("A100 SXM, TF32 tensor cores", 156.0, 0.15), Gpu("H100 SXM, TF32 tensor cores", 494.5, 0.10))


def grid_epoch(train_step: Callable[[str, int], float], eval_image: Callable[[str, int], float],
               batch: int) -> dict[str, float]:
    """Per data set, the cost of one epoch of every depth of the grid (one network each): the
    train steps of an epoch plus an evaluation of the test set, from the cost of one train step
    and of one evaluated image (seconds or FLOPs) of (data set, depth)."""
    return {name: sum(train_step(name, d) * n_train / batch + eval_image(name, d) * n_test for d in PAPER_DEPTHS)
            for name, (n_train, n_test, _) in DATASETS.items()}


def counted_flops(shape: tuple[int, int, int], depth: int, batch: int) -> tuple[float, float]:
    """XLA's FLOP count of (one train step, one evaluation forward pass) at `batch`, with the
    native convolution (as on a GPU), lowered but not compiled."""
    from vdjax.nn.models import forward_fn
    from vdjax.training.config import TrainConfig
    from vdjax.training.step import init_state, make_optimizer, make_train_step

    cfg = ModelConfig("cnn", depth, 10, shape, conv_impl="xla")
    tc = TrainConfig()
    opt = make_optimizer(tc, 1)
    state = jax.eval_shape(lambda: init_state(jax.random.key(0), cfg, opt))
    x = jax.ShapeDtypeStruct((batch, *shape), np.float32)
    y = jax.ShapeDtypeStruct((batch,), np.int32)
    train = make_train_step(cfg, tc, opt, 60000).lower(state, x, y).cost_analysis()["flops"]
    forward = forward_fn(cfg).lower(state.variables, x).cost_analysis()["flops"]
    return float(train), float(forward)


def flops_estimate(epochs: int, batch: int = 512, gpus: tuple[Gpu, ...] = GPUS, gpu_counts=(1, 8)) -> dict:
    """The paper grid's FLOPs and, per GPU and GPU count, its hours at the assumed utilisation.
    The grid's 384 networks are independent, so n GPUs take 1/n of the time (the grid split)."""
    per_shape = {}
    for shape in sorted({s for _, _, s in DATASETS.values()}):
        (t0, f0), (t1, f1) = counted_flops(shape, 0, batch), counted_flops(shape, 1, batch)
        per_shape[shape] = {"train_step": (t0, t1 - t0), "forward_batch": (f0, f1 - f0)}  # F(0), per block
    line = lambda ab, d: ab[0] + ab[1] * d  # noqa: E731
    shape_of = {name: s for name, (_, _, s) in DATASETS.items()}
    epoch = grid_epoch(lambda n, d: line(per_shape[shape_of[n]]["train_step"], d),
                       lambda n, d: line(per_shape[shape_of[n]]["forward_batch"], d) / batch, batch)
    total = sum(epoch.values()) * epochs * NETWORKS_PER_DEPTH
    hours = {g.name: {n: total / (g.peak_tflops * 1e12 * g.utilisation * n) / 3600 for n in gpu_counts} for g in gpus}
    return {"estimate": True, "epochs_assumed": epochs, "batch": batch, "networks": len(PAPER_DEPTHS) * 3 * 8,
            "flops_per_shape": {"x".join(map(str, s)): v for s, v in per_shape.items()},
            "epoch_flops_per_dataset": epoch, "total_flops": total,
            "gpus": [dataclasses.asdict(g) for g in gpus], "gpu_hours": hours}


def print_flops(est: dict) -> None:
    from report import grid_estimate_text

    print(grid_estimate_text(est), end="")


def main(argv=None) -> dict:
    p = validate.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depths", type=validate.non_negative_int, nargs="+", default=[10, 50])
    p.add_argument("--batch", type=validate.positive_int, default=512)
    p.add_argument("--steps", type=validate.positive_int, default=2)
    p.add_argument("--epochs", type=validate.positive_int, default=100, help="assumed epochs per network")
    p.add_argument("--flops", action="store_true", help="count FLOPs and estimate GPU hours instead of timing")
    args = p.parse_args(argv)
    if args.flops:
        est = flops_estimate(args.epochs, args.batch)
        print_flops(est)
        return est
    depths = validate.unique(args.depths, "--depths")
    if len(depths) < 2:
        raise validate.UserError(f"--depths needs at least two depths to fit a line, got {depths}")
    times = {}
    for d in depths:
        r = time_train_step(ModelConfig("cnn", d, 10, (28, 28, 1)), args.batch, args.steps)
        times[d] = r["step_s"]
        print(f"D={d:3d}: {r['step_s']:.2f} s a step at batch {args.batch} (compile {r['compile_s']:.1f} s)", flush=True)
    b, a = np.polyfit(list(times), list(times.values()), 1)
    step = lambda d: a + b * d  # noqa: E731
    # SVHN's 32x32 images make every feature map (32/28)^2 larger; its 3 input channels only
    # touch the first convolution.
    spatial = {name: math.prod(shape[:2]) / (28 * 28) for name, (_, _, shape) in DATASETS.items()}
    per_epoch_grid = grid_epoch(lambda n, d: step(d) * spatial[n], lambda n, d: step(d) * spatial[n] / (3 * args.batch),
                                args.batch)
    one_epoch = sum(per_epoch_grid.values())
    total = one_epoch * args.epochs * NETWORKS_PER_DEPTH
    print(f"fit: step = {a:.3f} + {b:.4f} * D seconds ({jax.default_backend()})")
    for name, s in per_epoch_grid.items():
        print(f"{name}: one epoch of every depth of the grid, one network each: {s / 3600:.1f} h")
    print(f"paper grid, {args.epochs} epochs per network, LDN + DDN, 4 repeats, 3 data sets: "
          f"{total / 3600:.0f} h = {total / 86400 / 365:.2f} years on this machine")
    return {"step_fit": (a, b), "per_epoch_grid_s": per_epoch_grid, "total_s": total}


if __name__ == "__main__":
    sys.exit(validate.run_main(main))
