"""The trainers before and after the one driver and the data on the device, in one run.

Image epochs: host round trips, program dispatches and seconds per epoch of one program of an
LDN and a DDN (the reference CNN), three ways: the trainer at `--before` (batches gathered in
numpy and transferred every step), today's with `feed='host'` (that path, kept for data that
does not fit on the device) and today's default `feed='device'` (shuffle, batches, steps and
held-out evaluation in one compiled program per epoch). Spirals: equal work (6 seeds, every
seed 1000 epochs, compiled) on the loop at `--before` and today's, and whether their numbers
are identical.

    python benchmarks/trainer_feed.py --out benchmarks/latest/feed   # about 15 min on 2 CPU cores
    python benchmarks/trainer_feed.py --quick                        # checks the script only

Each measurement runs in a child process on its tree's vdjax (`git archive --before`).
Counts: every call of a function compiled with `jax.jit` (dispatches) and every
`jax.device_put` / `jax.device_get` (host round trips) of a run of `--epochs` epochs, less those
of a one-epoch run (set-up and results), per epoch. Seconds: the median of the epochs after the
first over `--rounds` runs. Data: Fashion-MNIST (`--data-dir`, or the Debian package's
/usr/share/datasets/fashion-mnist) cut to `--train` images, 10% of them held out for early
stopping; random images when neither is there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # report.py renders the table

import vdjax  # noqa: E402

if (Path(vdjax.__file__).parent / "cli").is_dir():  # a child on the tree at --before may predate the layout
    from vdjax.cli import validate
else:
    from vdjax import validate

FMNIST = Path("/usr/share/datasets/fashion-mnist")


class Counter:
    """Counts jitted calls and host<->device transfers while `on`."""

    def __init__(self):
        import jax

        self.on, self.counts = False, {"dispatches": 0, "transfers": 0}
        jit, put, get = jax.jit, jax.device_put, jax.device_get

        def counted(kind, fn):
            def call(*a, **k):
                if self.on:
                    self.counts[kind] += 1
                return fn(*a, **k)
            return call

        def counting_jit(*a, **k):
            compiled = jit(*a, **k)
            wrapper = counted("dispatches", compiled)
            wrapper.lower = compiled.lower
            return wrapper

        jax.jit = counting_jit
        jax.device_put, jax.device_get = counted("transfers", put), counted("transfers", get)

    def take(self) -> dict[str, int]:
        out, self.counts = self.counts, {"dispatches": 0, "transfers": 0}
        return out


def load(args):
    import numpy as np

    from vdjax.data import load_images
    from vdjax.data.core import Dataset

    root = args.data_dir or (FMNIST if FMNIST.exists() else None)
    if root is not None:
        d = load_images("fashion_mnist", root, source="files")
        return Dataset("fashion_mnist", d.x_train[: args.train], d.y_train[: args.train], d.x_test[:1000],
                       d.y_test[:1000], 10), "fashion_mnist"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.train + 1000, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, len(x)).astype(np.int32)
    return Dataset("random", x[: args.train], y[: args.train], x[args.train:], y[args.train:], 10), "random"


VARIANTS = ("before", "host", "device")  # the trainer at --before; today's with each feed


def library(module: str, before_the_layout: str):
    """A vdjax module in a child's tree, which (at `--before`) may predate the package layout.
    Decided by the tree's files: an import that fails there would be found by an editable
    install's finder in this checkout instead."""
    import importlib

    import vdjax

    laid_out = (Path(vdjax.__file__).parent / module.split(".")[0]).is_dir()
    return importlib.import_module(f"vdjax.{module if laid_out else before_the_layout}")


def measure(args, variant: str, depth: int) -> dict:
    """In this process (a child whose vdjax is the variant's tree): dispatches, transfers and
    epoch seconds of one program of an LDN and a DDN at max depth `depth`."""
    counter = Counter()  # before the trainer compiles anything
    ModelConfig = library("nn.models", "models").ModelConfig
    fit_networks, IMAGE_PROTOCOL = image_trainer(variant)

    data, _ = load(args)
    tc = IMAGE_PROTOCOL.replace(batch_size=args.batch, max_epochs=args.epochs, patience=args.epochs)
    cfg = ModelConfig("cnn", depth, 10, data.input_shape)
    members = [("ldn", 0), ("ddn", 0)]
    counter.on = True  # compiles; what a one-epoch call costs besides its epoch
    fit_networks(data, cfg, tc.replace(max_epochs=1), members)
    counter.on = False
    one, row, seconds = counter.take(), {}, []
    for _ in range(args.rounds):
        counter.on = True
        history = fit_networks(data, cfg, tc, members)
        counter.on = False
        counts = counter.take()
        seconds += [h["seconds"] for h in history[1:]]
        row.update({kind: (counts[kind] - one[kind]) / (args.epochs - 1) for kind in counts})
    return {**row, "epoch_s": statistics.median(seconds), "val_loss": [h["val_loss"] for h in history]}


def image_trainer(variant: str):
    """(train(data, cfg, tc, members) -> the first network's history, the image protocol) of
    the tree's vdjax: `vdjax.fit` with the variant's feed, or the trainer of a tree before it."""
    if hasattr(vdjax, "RunOptions"):
        options = vdjax.RunOptions(feed=variant)
        return (lambda data, cfg, tc, members: vdjax.fit(cfg, tc, data, members, options).histories[0]), \
            vdjax.IMAGE_PROTOCOL
    trainer = library("training.trainer", "trainer")
    feed = {} if variant == "before" else {"feed": variant}
    return (lambda data, cfg, tc, members: trainer.fit_networks(data, cfg, tc, members, progress=False,
                                                                **feed)[0].history), trainer.IMAGE_PROTOCOL


def spirals(seeds: int, epochs: int) -> dict:
    """Equal work on the spirals loop (`fit`, every seed exactly `epochs` epochs), compiled: the
    second of two identical calls; and its best losses, to compare the trees' numbers."""
    import jax

    from vdjax.data import spirals_dataset

    ModelConfig = library("nn.models", "models").ModelConfig
    if hasattr(vdjax, "RunOptions"):
        TrainConfig = vdjax.TrainConfig
        fit = lambda cfg, tc, x, y, seeds: vdjax.fit(cfg, tc, (x, y), seeds)  # noqa: E731
    else:
        fit = library("training.loop", "loop").fit
        TrainConfig = library("training.train", "train").TrainConfig

    data, cfg = spirals_dataset(), ModelConfig("mlp", 20, 2, (2,))
    tc = TrainConfig(max_epochs=epochs, patience=epochs)
    fit(cfg, tc, data.x_train, data.y_train, list(range(seeds)))
    t0 = time.perf_counter()
    r = fit(cfg, tc, data.x_train, data.y_train, list(range(seeds)))
    jax.block_until_ready(r.state.best_loss)
    return {"seconds": time.perf_counter() - t0, "best_loss": [float(v) for v in r.state.best_loss]}


def child(tree: Path, *argv: str) -> dict:
    """This script run in a child process on the vdjax of `tree` (its copy of this script)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    script = tree / "benchmarks" / "trainer_feed.py"
    out = subprocess.run([sys.executable, str(script), *argv], env=env, capture_output=True, text=True, cwd=tree)
    if out.returncode:
        raise RuntimeError(f"the benchmark child {argv} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.split("JSON ")[-1])


def main(argv=None) -> int:
    p = validate.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depths", type=validate.non_negative_int, nargs="+", default=[0, 2, 10, 20])
    p.add_argument("--train", type=validate.positive_int, default=2048, help="training images (default 2048)")
    p.add_argument("--batch", type=validate.positive_int, default=128, help="batch size (default 128)")
    p.add_argument("--epochs", type=validate.positive_int, default=4, help="epochs per run (default 4)")
    p.add_argument("--rounds", type=validate.positive_int, default=2, help="runs of each feed, in turn (default 2)")
    p.add_argument("--data-dir", type=validate.existing_dir, default=None, help="Fashion-MNIST IDX files")
    p.add_argument("--out", type=validate.output_dir, default=None, help="write <out>/feed.json")
    p.add_argument("--quick", action="store_true", help="D = 1, 192 images, 3 epochs; spirals 2 seeds x 50 epochs")
    p.add_argument("--before", default="ce3ce06", help="the commit to compare against (default ce3ce06, the last "
                   "with the host-fed trainer alone)")
    p.add_argument("--seeds", type=validate.positive_int, default=6, help="spirals seeds (default 6)")
    p.add_argument("--spirals-epochs", type=validate.positive_int, default=1000,
                   help="spirals equal-work epochs per seed (default 1000)")
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.depths, args.train, args.epochs, args.batch, args.rounds = [1], 192, 3, 64, 1
        args.seeds, args.spirals_epochs = 2, 50
    if args.epochs < 2:
        raise validate.UserError("--epochs must be at least 2 (the first is left out)")
    if args.child:
        what, depth = args.child
        print("JSON " + json.dumps(spirals(args.seeds, args.spirals_epochs) if what == "spirals"
                                   else measure(args, what, int(depth))))
        return 0
    import jax

    from vdjax.io import write_json
    from vdjax.runtime import environment
    from vdjax.training.epoch import Batching

    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp)
        archive = subprocess.run(["git", "-C", str(here), "archive", args.before, "vdjax", "benchmarks"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        (before / "benchmarks" / "trainer_feed.py").write_text(Path(__file__).read_text())  # this script, that code
        trees = {"before": before, "host": here, "device": here}
        common = [f"--{k}={v}" for k, v in (("train", args.train), ("batch", args.batch), ("epochs", args.epochs),
                                            ("rounds", args.rounds))] + (["--data-dir", str(args.data_dir)]
                                                                          if args.data_dir else [])
        load_before, rows = os.getloadavg(), []
        for depth in args.depths:
            row = {"max_depth": depth}
            for variant in VARIANTS:
                m = child(trees[variant], *common, "--child", variant, str(depth))
                row.update({f"{variant}_{k}": v for k, v in m.items()})
            row["device_vs_before"] = row["before_epoch_s"] / row["device_epoch_s"]
            row["host_matches_before"] = row["host_val_loss"] == row["before_val_loss"]
            rows.append(row)
            print(f"D={depth:3d}  before {row['before_epoch_s']:.3f} s ({row['before_dispatches']:.0f} dispatches, "
                  f"{row['before_transfers']:.0f} transfers)  host {row['host_epoch_s']:.3f} s  device "
                  f"{row['device_epoch_s']:.3f} s ({row['device_dispatches']:.0f}, {row['device_transfers']:.0f})  "
                  f"{row['device_vs_before']:.2f}x", flush=True)
        spiral = {}
        for _ in range(args.rounds):
            for variant in ("before", "after"):
                m = child(trees["device" if variant == "after" else variant], f"--seeds={args.seeds}", f"--spirals-epochs={args.spirals_epochs}", "--child", "spirals", "0")
                spiral.setdefault(variant, []).append(m)
        spirals_row = {"seeds": args.seeds, "epochs": args.spirals_epochs,
                       **{f"{v}_ms_per_epoch": 1e3 * statistics.median(m["seconds"] for m in ms) / args.spirals_epochs
                          for v, ms in spiral.items()},
                       "identical": spiral["before"][0]["best_loss"] == spiral["after"][0]["best_loss"]}
        print(f"spirals {spirals_row}")
    steps = Batching.for_size(args.train - round(0.1 * args.train), args.batch).n_batches
    result = {"rows": rows, "spirals": spirals_row, "before": args.before,
              "before_commit": subprocess.run(["git", "-C", str(here), "rev-parse", args.before], capture_output=True,
                                              text=True).stdout.strip(),
              "settings": {"train_images": args.train, "batch": args.batch, "steps_per_epoch": steps, "networks": 2,
                           "epochs": args.epochs, "rounds": args.rounds, "quick": args.quick,
                           "data": "fashion_mnist" if (args.data_dir or FMNIST.exists()) else "random"},
              "environment": {**environment(), "processor": platform.processor(), "devices": jax.device_count()},
              "load_average": {"before": load_before[0], "after": os.getloadavg()[0]}}
    if args.out is not None:
        print(f"wrote {write_json(args.out / 'feed.json', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(validate.run_main(main))
