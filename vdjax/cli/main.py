"""`vdjax` command line: the main job (a spirals learnt-depth network)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from vdjax.cli import validate
from vdjax.studies.experiment import depth_verdict

MAIN_HELP = """\
Train learnt-depth networks (Variational Depth Search in ResNets) with JAX.

The main job, `vdjax spirals`, trains a spirals LDN (max_depth 20, width 20, the paper's
protocol: SGD lr 0.1 momentum 0.5, full batch, up to 8000 epochs, early stopping after 500
epochs without a better train ELBO), then prints q(d), d_opt and test metrics, and writes
results.json, the kept parameters and two PNGs to --out.
"""


def _parser() -> argparse.ArgumentParser:
    p = validate.ArgumentParser(prog="vdjax", description=MAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("spirals", help="train a spirals LDN and report its learnt depth",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--max-depth", type=validate.non_negative_int, default=20, help="D: number of residual blocks")
    s.add_argument("--width", type=validate.positive_int, default=20, help="hidden width of every block")
    s.add_argument("--seeds", type=validate.seed, nargs="+", default=[0],
                   help="network seeds (unique, >= 0), trained together (vmapped)")
    s.add_argument("--data-seed", type=validate.seed, default=0, help="seed of the spirals data set")
    s.add_argument("--rotation", type=validate.finite_float, default=720.0, help="degrees of rotation of each arm")
    s.add_argument("--n-train", type=validate.positive_int, default=200, help="training points (of 2000)")
    s.add_argument("--max-epochs", type=validate.positive_int, default=8000)
    s.add_argument("--patience", type=validate.positive_int, default=500,
                   help="epochs without a better train ELBO before stopping")
    s.add_argument("--method", choices=["ldn", "ddn"], default="ldn", help="learnt depth, or one fixed depth")
    s.add_argument("--out", type=validate.output_dir, default="results/spirals",
                   help="output directory (created if missing)")
    s.add_argument("--quick", action="store_true", help="a smoke run: 300 epochs, patience 100")
    s.add_argument("--no-plots", action="store_true")
    s.add_argument("--metrics-dir", type=validate.output_dir, default=None,
                   help="stream each seed's epochs and best train loss while training: metrics.jsonl there, and "
                        "TensorBoard event files where tensorboardX or torch is installed")
    return p


def _bar(v: float, scale: float, n: int = 40) -> str:
    return "#" * int(round(n * v / scale)) if scale > 0 else ""


def spirals_main(args: argparse.Namespace) -> int:
    from vdjax.data import SpiralsConfig, spirals_dataset
    from vdjax.studies.experiment import decision_grid, epoch_progress, run_in_memory
    from vdjax.io import write_bytes, write_json
    from vdjax.nn.models import ModelConfig
    from vdjax.studies.plots import DepthPosterior, plot_decision_functions, plot_depth_posterior
    from vdjax.training.config import RunOptions, TrainConfig

    seeds = validate.unique(args.seeds, "--seeds")
    data = spirals_dataset(SpiralsConfig(rotation=args.rotation, n_train=args.n_train, seed=args.data_seed))
    out = args.out
    plots = [] if args.no_plots else [out / "depth_posterior.png", out / "decision_function.png"]
    validate.not_directories([out / "results.json", out / "params_seed0.msgpack", *plots])
    model_config = ModelConfig("mlp", args.max_depth, data.num_classes, data.input_shape, width=args.width)
    train_config = TrainConfig(method=args.method, max_epochs=args.max_epochs, patience=args.patience)
    if args.quick:
        train_config = train_config.replace(max_epochs=300, patience=100)
    print(f"spirals: {data.n_train} train / {len(data.x_test)} test points, max_depth={args.max_depth}, "
          f"width={args.width}, seeds={seeds}, method={args.method}")
    from vdjax.training.metrics_writer import create_writer

    writer = create_writer(args.metrics_dir) if args.metrics_dir is not None else None
    try:
        with epoch_progress(train_config.max_epochs) as progress:
            run = run_in_memory(data, model_config, train_config, seeds,
                                options=RunOptions(progress=progress, metrics_writer=writer))
    finally:
        if writer is not None:
            writer.close()
    print(f"trained {len(seeds)} network(s) in {run.train_seconds:.1f} s (compile included)")

    for s in run.seeds:
        print(f"\nseed {s.seed}: stopped after {s.epochs} epochs, best train ELBO {-s.best_loss:.4f} at epoch {s.best_epoch}"
              + ("  [loss became non-finite: kept the best parameters]" if s.nonfinite else ""))
        print(" d   q(d)    test LL  test acc")
        for d, (qd, ll, err) in enumerate(zip(s.q, s.test["per_depth_log_lik"], s.test["per_depth_error"])):
            mark = " <- d_opt" if d == s.d_opt else ""
            print(f"{d:2d}  {qd:.3f}  {ll:8.4f}  {1 - err:7.3f}  {_bar(qd, s.q.max(), 20)}{mark}")
        print(depth_verdict(s.d_opt, s.d_expected, s.test, s.test_pruned), end="")
        best = int(np.argmax(s.test["per_depth_log_lik"]))
        print(f"best single depth on test: d = {best} ({s.test['per_depth_log_lik'][best]:.4f})")
    if any(s.nonfinite for s in run.seeds):
        print("warning: some seeds hit a non-finite loss; their best parameters before it were kept", file=sys.stderr)

    summary = run.summary()
    summary["data"] = {"name": data.name, "n_train": data.n_train, "n_test": len(data.x_test),
                       "rotation": args.rotation, "data_seed": args.data_seed}
    # Each write falls back to another directory if --out has become unwritable (vdjax.io).
    written = [write_json(out / "results.json", summary),
               write_bytes(out / "params_seed0.msgpack", run.variables_bytes(0))]
    if plots:
        s0 = run.seeds[0]
        posterior = DepthPosterior(np.stack([s.q for s in run.seeds]),
                                   np.stack([s.test["per_depth_log_lik"] for s in run.seeds]),
                                   np.mean([s.test["log_lik"] for s in run.seeds]), s0.d_opt)
        written.append(plot_depth_posterior(
            posterior, plots[0], f"spirals LDN, max_depth {args.max_depth}: q(d) and test log-likelihood"))
        state = run.fit.best_state(0)
        depths = sorted({0, 1, 2, s0.d_opt // 2, s0.d_opt, min(s0.d_opt + 3, args.max_depth), args.max_depth})
        gx, gy, probs, titles = decision_grid(model_config, state.variables, s0.q, data.x_train, depths)
        written.append(plot_decision_functions([(gx, gy, p) for p in probs], titles, (data.x_train, data.y_train),
                                               plots[1]))
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from vdjax.runtime import start_script

    start_script()
    if args.command == "spirals":
        return spirals_main(args)
    return 1


def main(argv: list[str] | None = None) -> int:
    """`vdjax ...`: 0 on success, 2 with one line on stderr for a user error (`vdjax.cli.validate`)."""
    return validate.run_main(_main, argv, prog="vdjax")


if __name__ == "__main__":
    sys.exit(main())
