"""How long the paper-scale image grid would take on this machine, from measured step times.

Times the CNN train step at batch 512 (the paper's) for a few depths, fits step time as
a + b * D (the blocks dominate and cost the same each), and extrapolates to the paper's grid:
depths 0,5,...,50,60,...,100, LDN + DDN, 4 repeats, MNIST + Fashion-MNIST (60k train images,
28x28x1) and SVHN (73,257, 32x32x3, costed by pixel count), at an assumed number of epochs per
network (early stopping after 30 epochs without improvement; the cap is 500). Evaluation of
the test set each epoch is added at a third of a training step per image.

    python benchmarks/image_grid_estimate.py --depths 10 50 --epochs 100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnn_step import time_train_step  # noqa: E402

from vdjax import validate  # noqa: E402
from vdjax.models import ModelConfig  # noqa: E402

PAPER_DEPTHS = [*range(0, 51, 5), *range(60, 101, 10)]
DATASETS = {"mnist": (60000, 10000), "fashion_mnist": (60000, 10000), "svhn": (73257, 26032)}


def main(argv=None) -> dict:
    p = validate.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depths", type=validate.non_negative_int, nargs="+", default=[10, 50])
    p.add_argument("--batch", type=validate.positive_int, default=512)
    p.add_argument("--steps", type=validate.positive_int, default=2)
    p.add_argument("--epochs", type=validate.positive_int, default=100, help="assumed epochs per network")
    args = p.parse_args(argv)
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
    per_epoch_grid = {}
    for name, (n_train, n_test) in DATASETS.items():
        # SVHN's 32x32 images make every feature map (32/28)^2 larger; its 3 input channels only
        # touch the first convolution.
        spatial = (32 * 32) / (28 * 28) if name == "svhn" else 1.0
        seconds = sum(step(d) * spatial * (n_train + n_test / 3) / args.batch for d in PAPER_DEPTHS)
        per_epoch_grid[name] = seconds
    one_epoch = sum(per_epoch_grid.values())
    total = one_epoch * args.epochs * 2 * 4  # LDN + DDN, 4 repeats
    print(f"fit: step = {a:.3f} + {b:.4f} * D seconds ({jax.default_backend()})")
    for name, s in per_epoch_grid.items():
        print(f"{name}: one epoch of every depth of the grid, one network each: {s / 3600:.1f} h")
    print(f"paper grid, {args.epochs} epochs per network, LDN + DDN, 4 repeats, 3 data sets: "
          f"{total / 3600:.0f} h = {total / 86400 / 365:.2f} years on this machine")
    return {"step_fit": (a, b), "per_epoch_grid_s": per_epoch_grid, "total_s": total}


if __name__ == "__main__":
    sys.exit(validate.run_main(main))
