"""What experiment scripts share: the spirals scans' command line and sweep call, and (at the
end) the depth demonstrations' command line (`vdjax.studies.depth_demo`)."""

from __future__ import annotations

import argparse
import dataclasses

from vdjax.cli import validate

REPEATS = 6  # the paper's repeats for spirals
DATA_SEEDS = """Data seeds: repeat i (network seed i) trains and is tested on its own spirals draw, seeded
i, as each run of the reference code drew new data; its record stores `data_seed` per seed.
--shared-data-seed N trains and tests every repeat on the one draw of seed N instead (the
records made before per-repeat data, which --shared-data-seed 0 --unroll 1 reproduces)."""


def parser(doc: str, default_out: str) -> argparse.ArgumentParser:
    p = validate.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=DATA_SEEDS + "\n\nEach grid point's record holds its wall time "
                                "(`wall_seconds`); a rerun into the same --out\nresumes from its checkpoints and "
                                "skips the grid points already recorded.")
    p.add_argument("--quick", action="store_true", help="a smoke run: a short grid, 2 repeats, 300 epochs")
    p.add_argument("--repeats", type=validate.positive_int, default=None,
                   help=f"network seeds per grid point (default {REPEATS})")
    p.add_argument("--out", type=validate.output_dir, default=f"results/{default_out}",
                   help="results directory (created if missing)")
    p.add_argument("--max-epochs", type=validate.positive_int, default=None, help="override the protocol's 8000 epochs")
    p.add_argument("--shared-data-seed", type=validate.seed, default=None, metavar="N",
                   help="every repeat on the one spirals draw of seed N (default: repeat i on its own draw, seed i)")
    p.add_argument("--unroll", type=validate.positive_int, default=None,
                   help="the block scan's unroll factor (default: all blocks up to D = 20, else 1; the "
                        "records before per-repeat data: 1)")
    p.add_argument("--remat", choices=("auto", "true", "false"), default=None,
                   help="recompute blocks in the backward pass (default: auto, on for CPU)")
    return p


def point_options(args) -> dict:
    """The `spirals_point` keywords of the data seeds and the block scan chosen on the command line."""
    out = {}
    if args.shared_data_seed is not None:
        out.update(data_seeds="shared", seed=args.shared_data_seed)
    if args.unroll is not None:
        out["unroll"] = args.unroll
    if args.remat is not None:
        out["remat"] = {"auto": "auto", "true": True, "false": False}[args.remat]
    return out


def protocol(args):
    from vdjax.training.config import TrainConfig

    if args.quick:
        return TrainConfig(max_epochs=args.max_epochs or 300, patience=100)
    return TrainConfig(max_epochs=args.max_epochs or 8000, patience=500)


def seeds(args) -> list[int]:
    return list(range(args.repeats or (2 if args.quick else REPEATS)))


def start() -> None:
    """First thing in a script: one XLA device per CPU core, so repeats run on every core, and
    the persistent compilation cache, so a rerun does not compile again."""
    from vdjax.runtime import start_script

    start_script()


def scan(doc: str, name: str, point_kwargs, argv=None):
    """A one-variable spirals scan (`vdjax.studies.spirals_study.SCANS[name]`): run (or resume) every grid
    point, then draw its figure, and the per-depth functions of every grid point where it has one
    (Figs 7/8). point_kwargs(value) gives the `spirals_point` keywords for one value."""
    args = parser(doc, name).parse_args(argv)
    start()
    from vdjax.studies.plots import plot_sweep
    from vdjax.studies.spirals_study import SCANS
    from vdjax.studies.sweeps import functions_figure, run_grid, spirals_point, sweep_table

    s = SCANS[name]
    values = s.quick_grid if args.quick else s.grid
    points = [spirals_point(f"{s.key}={v:04d}", {s.key: v}, train=protocol(args), **point_options(args), **point_kwargs(v))
              for v in values]
    records = run_grid(points, args.out, seeds(args))
    if s.functions_figure:
        functions_figure(records, args.out, s.key, args.out / s.functions_figure)
    return plot_sweep(sweep_table(records, s.key), s.key, args.out / s.figure, xlabel=s.xlabel, log_x=s.log_x)


# ---------------------------------------------------------------------------- depth demonstrations
# The command line every `vdjax.studies.depth_demo` script shares (experiments/lm_fortunes.py; the
# multi-stage ResNet script can take it too): seeds, the optimisation, the DDN depths, the early-exit
# thresholds, --tiny, --out and --no-progress. A script adds its own network and data options.


@dataclasses.dataclass(frozen=True)
class DemoPreset:
    """What a depth demonstration trains unless the command line says otherwise; a script's
    preset subclasses it with its network's and its data's fields. The optimisation is
    `vdjax.IMAGE_PROTOCOL` (early stopping on the validation ELBO) with these changes; the
    learning rate drops 10x at `drop_epoch(epochs)` (after `drop_words` of the epochs)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 30
    patience: int = 10
    batch_size: int = 128
    learning_rate: float = 0.1
    momentum: float = 0.5
    timing_examples: int = 1024
    timing_batches: tuple[int, ...] = (1024, 16)
    timing_repeats: int = 5
    timing_seeds: int | None = None  # None: every seed
    drop_words = "3/4"

    def drop_epoch(self, epochs: int) -> int:
        return max(1, round(0.75 * epochs))


def threshold(text: str) -> float:
    """argparse type: an early-exit threshold, a confidence in (0, 1]."""
    value = validate.finite_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"an early-exit threshold is a confidence in (0, 1], got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a learning rate)."""
    value = validate.finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def momentum(text: str) -> float:
    """argparse type: an SGD momentum in [0, 1)."""
    value = validate.finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"a momentum lies in [0, 1), got {text}")
    return value


def add_demo_arguments(p: argparse.ArgumentParser, default: DemoPreset, default_out: str, tiny: str,
                       committed: str = "") -> None:
    """The options every depth demonstration takes, their help giving `default`'s values;
    `tiny` says what --tiny runs, `committed` where the committed copy of the results goes."""
    kept = f"; the committed copy goes to {committed}" if committed else ""
    p.add_argument("--out", type=validate.output_dir, default=None,
                   help=f"results directory (default {default_out}{kept}); a killed run resumes there when run "
                        "again with the same options")
    p.add_argument("--seeds", type=validate.seed, nargs="+", default=None,
                   help=f"seeds, one LDN and one DDN per depth each (default {' '.join(map(str, default.seeds))})")
    p.add_argument("--epochs", type=validate.positive_int, default=None,
                   help=f"most epochs per network (default {default.epochs}); the learning rate drops 10x after "
                        f"{default.drop_words} of them")
    p.add_argument("--patience", type=validate.positive_int, default=None,
                   help=f"epochs without a better validation ELBO before a network stops (default {default.patience})")
    p.add_argument("--batch-size", type=validate.positive_int, default=None,
                   help=f"SGD batch (default {default.batch_size})")
    p.add_argument("--lr", type=positive_float, default=None,
                   help=f"SGD learning rate (default {default.learning_rate:g})")
    p.add_argument("--momentum", type=momentum, default=None, help=f"SGD momentum (default {default.momentum:g})")
    p.add_argument("--ddn-depths", type=validate.non_negative_int, nargs="+", default=(),
                   help="DDN depths besides 1, the LDNs' median d_opt and the max depth")
    p.add_argument("--thresholds", type=threshold, nargs="+", default=None,
                   help="early-exit thresholds of the curve, each a confidence in (0, 1] (default 0.5 0.6 0.7 0.8 "
                        "0.9 0.95 0.99 1)")
    p.add_argument("--timing-thresholds", type=threshold, nargs="+", default=None,
                   help="early-exit thresholds that are timed, each in (0, 1] (default 0.9 0.99 1)")
    p.add_argument("--tiny", action="store_true", help=f"a smoke test: {tiny}")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def demo_config(args, preset: DemoPreset, *, name: str, max_depth: int, about: str, script: str):
    """The `vdjax.studies.depth_demo.DemoConfig` of a command line parsed with `add_demo_arguments`
    (`args.argv`: the arguments as given, for the record). Bad settings raise here, before any
    data or JAX work."""
    from vdjax.studies.depth_demo import DemoConfig
    from vdjax.training.config import IMAGE_PROTOCOL

    epochs = args.epochs or preset.epochs
    train = IMAGE_PROTOCOL.replace(
        batch_size=args.batch_size or preset.batch_size, max_epochs=epochs, patience=args.patience or preset.patience,
        learning_rate=args.lr or preset.learning_rate,
        momentum=preset.momentum if args.momentum is None else args.momentum,
        lr_drop_epoch=preset.drop_epoch(epochs))
    extra = {"thresholds": tuple(args.thresholds)} if args.thresholds else {}
    if args.timing_thresholds:
        extra["timing_thresholds"] = tuple(args.timing_thresholds)
    seeds = tuple(validate.unique(args.seeds or preset.seeds, "--seeds"))
    return DemoConfig(name=name, max_depth=max_depth, seeds=seeds, train=train, ddn_depths=tuple(args.ddn_depths),
                      timing_batches=preset.timing_batches, timing_examples=preset.timing_examples,
                      timing_repeats=preset.timing_repeats, timing_seeds=preset.timing_seeds, about=about,
                      command=" ".join([f"python3 experiments/{script}", *args.argv]), progress=not args.no_progress,
                      **extra)
