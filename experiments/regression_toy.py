"""Toy 1-D regression with gaps in the inputs (DUN, Fig. 1/4): does each method's predictive
uncertainty grow in the gaps and outside the data?

Trains the LDN, a DDN, a deep ensemble and MC dropout (same networks, same protocol) on a
seeded toy set, then draws each method's predictive mean +- 2 std over the input range
(<out>/toy_<dataset>.png) and writes <out>/toy_<dataset>.json: test log-likelihood and RMSE,
the median predictive std in the data, in the gaps and outside the data, and test-time cost.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _dun  # noqa: E402

from vdjax.cli import validate  # noqa: E402

# Where the 'gap' set's inputs are (raw units): the three clusters, and what lies between and beyond.
GAP_REGIONS = {"data": [(-1.0, 0.0), (1.7, 2.5), (4.0, 5.0)], "gaps": [(0.0, 1.7), (2.5, 4.0)],
               "outside": [(-3.0, -1.0), (5.0, 7.0)]}

CPU = _dun.DunPreset("""\
python3 experiments/regression_toy.py: a few minutes on 2 CPU cores. The 'gap' set (DUN's
'my_1d': three input clusters, 501 train points), width 50, max depth 5, batch 128, lr 0.005
momentum 0.9, at most 300 epochs with patience 50, 5 ensemble members.""",
                     max_depth=5, width=50, lr=0.005, momentum=0.9, batch_size=128, max_epochs=300, patience=50,
                     ensemble_size=5)
PAPER = _dun.DunPreset("""\
python3 experiments/regression_toy.py --paper: not timed (up to 4000 full-batch epochs for each of
7 networks). DUN's toy setting as far as it is stated: width 100, 10 layers, lr 1e-3, momentum 0.9, full batch, up to
4000 epochs, patience 500.""",
                       max_depth=10, width=100, lr=1e-3, momentum=0.9, batch_size=None, max_epochs=4000, patience=500,
                       ensemble_size=5)


def main(argv=None) -> int:
    p = _dun.parser(__doc__ + _dun.presets_help(CPU, PAPER), "dun_toy")
    p.add_argument("--dataset", choices=["gap", "wiggle"], default="gap", help="toy set (default gap)")
    args = p.parse_args(argv)
    _dun.check_rates(args)

    import jax
    import numpy as np

    from vdjax.baselines.dun import Baselines, fit_methods, method_predictives, regression_curve, regression_metrics
    from vdjax.data.regression import toy_dataset
    from vdjax.io import save_figure, write_json
    from vdjax.nn.models import ModelConfig
    from vdjax.training.config import RunOptions, TrainConfig

    s = _dun.settings(args, CPU, PAPER)
    data, sx = toy_dataset(args.dataset, seed=args.seed)
    cfg = ModelConfig("mlp", s.max_depth, 1, (1,), width=s.width, likelihood="gaussian")
    tc = TrainConfig(learning_rate=s.lr, momentum=s.momentum, batch_size=s.batch_size or data.n_train,
                     max_epochs=s.max_epochs, patience=s.patience, stop_on="val", prior_decay=1.0)
    trained = fit_methods(data, cfg, tc, args.seed, Baselines(s.ensemble_size, args.dropout_rate),
                          RunOptions(progress=not args.no_progress))
    key = jax.random.key(args.seed)
    preds, seconds = method_predictives(trained, data.x_test, key, args.samples)
    test = {m: regression_metrics(pr, data.y_test, data.target_scale) for m, pr in preds.items()}

    raw_x = sx.invert(data.x_train)[:, 0]
    lo, hi = raw_x.min() - 2.0, raw_x.max() + 2.0
    grid = np.linspace(lo, hi, 400)[:, None]
    curves, _ = method_predictives(trained, sx.apply(grid), key, args.samples, timing_repeats=1)
    curves = {m: regression_curve(pr, data.target_scale) for m, pr in curves.items()}
    regions = GAP_REGIONS if args.dataset == "gap" else {"data": [(lo + 2, hi - 2)], "outside": [(lo, lo + 2),
                                                                                                 (hi - 2, hi)]}
    # Medians: one ensemble member's extrapolation can blow up (a ReLU unit dead on the data has a
    # near-zero BatchNorm running variance), and a mean would report only that.
    uncertainty = {m: {r: float(np.median(std[np.any([(grid[:, 0] > a) & (grid[:, 0] < b) for a, b in spans], axis=0)]))
                       for r, spans in regions.items()} for m, (_, std) in curves.items()}

    from vdjax.studies.plots import subplots

    names = ["ldn", "ddn", "ensemble", "dropout"]
    fig, axes = subplots(1, len(names), figsize=(4 * len(names), 3.2), sharey=True)
    y_raw = data.target_scale[0] + data.target_scale[1] * data.y_train
    for ax, m in zip(axes, names):
        mean, std = curves[m]
        ax.scatter(raw_x, y_raw, s=3, c="k", alpha=0.4, label="train")
        ax.plot(grid[:, 0], mean, c="C0")
        ax.fill_between(grid[:, 0], mean - 2 * std, mean + 2 * std, color="C0", alpha=0.3, label="mean ± 2 std")
        for a, b in regions.get("gaps", []):
            ax.axvspan(a, b, color="C1", alpha=0.08)
        ax.set_title(f"{m}: test LL {test[m]['log_lik']:.2f}")
        ax.set_xlabel("x")
    spread = y_raw.max() - y_raw.min()
    axes[0].set_ylim(y_raw.min() - 0.75 * spread, y_raw.max() + 0.75 * spread)  # an exploding member is clipped
    axes[0].legend(loc="lower left", fontsize=7)
    fig.suptitle(f"toy '{args.dataset}': predictive mean ± 2 std (gaps shaded)")
    save_figure(fig, args.out / f"toy_{args.dataset}.png")

    d_opt = preds["ldn"].outputs.shape[0] - 1
    result = {
        "dataset": data.name, "n_train": data.n_train, "n_test": len(data.x_test), "paper": args.paper,
        "model_config": repr(cfg), "train_config": repr(tc), "ensemble_size": len(trained.ddns),
        "dropout_rate": args.dropout_rate, "dropout_samples": args.samples,
        "q": np.asarray(trained.ldn.q).tolist(), "d_opt": d_opt,
        "test": test, "predictive_std": uncertainty, "regions": regions,
        "test_time_seconds": seconds, "training": trained.summary(),
    }
    path = write_json(args.out / f"toy_{args.dataset}.json", result)
    for m in test:
        print(f"{m:9s} test LL {test[m]['log_lik']:7.3f}  RMSE {test[m]['rmse']:.3f}  std data/gaps/outside "
              + " / ".join(f"{v:.2f}" for v in uncertainty[m].values()) + f"  predict {1e3 * seconds[m]:.2f} ms")
    print(f"wrote {path} and {args.out / f'toy_{args.dataset}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(validate.run_main(main))
