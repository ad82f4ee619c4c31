"""What every spirals experiment script shares: its command line and the sweep call."""

from __future__ import annotations

import argparse

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
