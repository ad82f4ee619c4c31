"""What every spirals experiment script shares: its command line and the sweep call."""

from __future__ import annotations

import argparse

from vdjax.cli import validate

REPEATS = 6  # the paper's repeats for spirals


def parser(doc: str, default_out: str) -> argparse.ArgumentParser:
    p = validate.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Each grid point's record holds its wall time (`wall_seconds`); a rerun into "
                                "the same --out\nresumes from its checkpoints and skips the grid points already "
                                "recorded.")
    p.add_argument("--quick", action="store_true", help="a smoke run: a short grid, 2 repeats, 300 epochs")
    p.add_argument("--repeats", type=validate.positive_int, default=None,
                   help=f"network seeds per grid point (default {REPEATS})")
    p.add_argument("--out", type=validate.output_dir, default=f"results/{default_out}",
                   help="results directory (created if missing)")
    p.add_argument("--max-epochs", type=validate.positive_int, default=None, help="override the protocol's 8000 epochs")
    return p


def protocol(args):
    from vdjax.training.train import TrainConfig

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
    points = [spirals_point(f"{s.key}={v:04d}", {s.key: v}, train=protocol(args), **point_kwargs(v)) for v in values]
    records = run_grid(points, args.out, seeds(args))
    if s.functions_figure:
        functions_figure(records, args.out, s.key, args.out / s.functions_figure)
    return plot_sweep(sweep_table(records, s.key), s.key, args.out / s.figure, xlabel=s.xlabel, log_x=s.log_x)
