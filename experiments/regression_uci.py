"""Tabular regression (DUN, Sec. 5.1): LDN vs DDN, deep ensemble and MC dropout on test
log-likelihood and RMSE in the data's units, and the test-time cost of each.

Default (CPU-sized, a few minutes on 2 cores): scikit-learn's diabetes set (442 rows, 10
features; ships inside scikit-learn), 3 seeded 90/10 train/test splits, width 50, max depth 5,
batch 128, lr 0.005, at most 300 epochs with patience 30, 5 ensemble members.

--data-dir DIR reads a UCI set in the MC-dropout/DUN layout instead (data.txt,
index_features.txt, index_target.txt, index_train_K.txt, index_test_K.txt); --index-dir points
at other split files (DUN's gap splits: UCI_for_sharing/gap/<name>/data/). --splits picks them.

--paper: DUN's regression scale as far as it is fixed in their code (width 100, batch 128,
10 layers, up to 4000 epochs, patience 200, every split present). DUN tuned the learning rate,
depth and regularisation per data set and method with BOHB; vdjax does not.

Writes <out>/uci_<name>.json (per split and mean +- std over splits, per method) and
<out>/uci_<name>.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _dun  # noqa: E402

from vdjax import validate  # noqa: E402


def main(argv=None) -> int:
    p = _dun.parser(__doc__, "dun_uci")
    p.add_argument("--data-dir", type=validate.existing_dir, default=None,
                   help="a UCI set in the MC-dropout/DUN layout (default: scikit-learn's diabetes)")
    p.add_argument("--index-dir", type=validate.existing_dir, default=None,
                   help="where the index_train_K/index_test_K files are (default --data-dir; e.g. a gap split)")
    p.add_argument("--name", default=None, help="name of the set in the results (default: from the directory)")
    p.add_argument("--splits", type=validate.non_negative_int, nargs="+", default=None,
                   help="splits to run (default 0 1 2; --paper: all present)")
    args = p.parse_args(argv)
    _dun.check_rates(args)
    if args.index_dir is not None and args.data_dir is None:
        raise validate.UserError("--index-dir needs --data-dir")
    splits = args.splits

    from vdjax.data.regression import load_diabetes, load_uci, uci_splits

    if args.data_dir is not None:
        present = uci_splits(args.index_dir or args.data_dir)
        splits = validate.unique(splits if splits is not None else (present if args.paper else present[:3]), "--splits")
        missing = sorted(set(splits) - set(present))
        if not present or missing:
            raise validate.UserError(f"splits {missing or splits} not in {args.index_dir or args.data_dir} "
                                     f"(present: {present})")
        load = lambda k: load_uci(args.data_dir, k, args.index_dir, name=args.name)  # noqa: E731
        load(splits[0])  # a bad file fails before anything trains
    else:
        splits = validate.unique(splits if splits is not None else ([*range(20)] if args.paper else [0, 1, 2]),
                                 "--splits")
        load = load_diabetes
    name = args.name or (Path(args.data_dir).parent.name if args.data_dir and Path(args.data_dir).name == "data"
                         else Path(args.data_dir).name if args.data_dir else "diabetes")
    if args.index_dir is not None and "gap" in str(args.index_dir):
        name += "_gap"

    import jax
    import numpy as np
    from tqdm import tqdm

    from vdjax.baselines import fit_methods, method_predictives, regression_metrics
    from vdjax.io import save_figure, write_json
    from vdjax.models import ModelConfig
    from vdjax.train import TrainConfig

    rows = []
    for k in tqdm(splits, desc=f"{name} splits", disable=args.no_progress):
        data = load(k)
        cfg = ModelConfig("mlp", _dun.pick(args, "max_depth", 5, 10), 1, data.input_shape,
                          width=_dun.pick(args, "width", 50, 100), likelihood="gaussian")
        tc = TrainConfig(learning_rate=_dun.pick(args, "lr", 0.005, 0.005), momentum=0.9, batch_size=128,
                         max_epochs=_dun.pick(args, "max_epochs", 300, 4000), patience=_dun.pick(args, "patience", 30, 200),
                         stop_on="val", prior_decay=1.0)
        trained = fit_methods(data, cfg, tc, seed=args.seed + 100 * k,
                              ensemble_size=_dun.pick(args, "ensemble_size", 5, 5), dropout_rate=args.dropout_rate,
                              progress=not args.no_progress, log=tqdm.write)
        preds, seconds = method_predictives(trained, data.x_test, jax.random.key(args.seed + k), args.samples)
        rows.append({"split": k, "dataset": data.name, "n_train": data.n_train, "n_test": len(data.x_test),
                     "target_scale": data.target_scale, "d_opt": preds["ldn"].outputs.shape[0] - 1,
                     "q": np.asarray(trained.ldn.state.q).tolist(),
                     "test": {m: regression_metrics(pr, data.y_test, data.target_scale) for m, pr in preds.items()},
                     "test_time_seconds": seconds, "training": trained.summary()})
    methods = list(rows[0]["test"])
    summary = {m: {f"{stat}_{agg}": float(fn([r["test"][m][stat] for r in rows]))
                   for stat in ("log_lik", "rmse") for agg, fn in (("mean", np.mean), ("std", np.std))}
               for m in methods}
    for m in methods:
        summary[m]["test_time_seconds_mean"] = float(np.mean([r["test_time_seconds"][m] for r in rows]))
    result = {"dataset": name, "paper": args.paper, "splits": splits, "model_config": repr(cfg),
              "train_config": repr(tc), "dropout_rate": args.dropout_rate, "dropout_samples": args.samples,
              "summary": summary, "per_split": rows}
    path = write_json(args.out / f"uci_{name}.json", result)

    from vdjax.plots import subplots

    fig, axes = subplots(1, 3, figsize=(12, 3.2))
    for ax, (stat, label) in zip(axes, (("log_lik", "test log-likelihood"), ("rmse", "test RMSE"),
                                        ("test_time_seconds_mean", "test-time seconds"))):
        vals = [summary[m].get(f"{stat}_mean", summary[m].get(stat)) for m in methods]
        errs = [summary[m].get(f"{stat}_std", 0.0) for m in methods]
        ax.bar(methods, vals, yerr=errs, color=[f"C{i}" for i in range(len(methods))])
        ax.set_title(label)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{name}: {len(splits)} splits (mean ± std)")
    save_figure(fig, args.out / f"uci_{name}.png")
    for m in methods:
        s = summary[m]
        print(f"{m:9s} LL {s['log_lik_mean']:8.3f} ± {s['log_lik_std']:.3f}  RMSE {s['rmse_mean']:8.3f} ± "
              f"{s['rmse_std']:.3f}  predict {1e3 * s['test_time_seconds_mean']:.2f} ms")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(validate.run_main(main))
