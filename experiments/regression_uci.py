"""The UCI regression benchmark (DUN, Sec. 5.1): LDN, DDN, a deep ensemble, MC dropout and mean-field
VI on every set, standard and gap splits; test log-likelihood and RMSE in the data's units, the
test-time cost of each method, and DUN's mean rank over sets.

    python3 experiments/regression_uci.py --out docs/data/dun/uci   # the committed run
    python3 experiments/regression_uci.py --quick                   # a smoke run

Data: data/uci/ of this repository (DUN's UCI_for_sharing: boston, concrete, energy, kin8nm, naval,
power, protein, wine, yacht; 20 standard 90/10 splits each, protein 5; one gap split per input
feature, whose test set is the middle third of the rows sorted by that feature). --root or
VDJAX_UCI_DIR reads another copy; --data-dir DIR (with --index-dir for other split files) one set
in the MC-dropout layout; --sets diabetes scikit-learn's diabetes set (3 seeded 90/10 splits).

Default (CPU-sized): every set, all standard splits (20; protein 5) and all gap splits. Width 50,
max depth 5, batch 128, SGD lr 0.005 momentum 0.9, patience 30 epochs, epoch cap min(200,
ceil(2000 / steps per epoch)) (boston, concrete, energy, yacht 200 epochs; wine 182; kin8nm 39;
power 33; naval 27; protein 7), 5 ensemble members, dropout 0.1, MFVI prior N(0, 1), 10
test-time samples for MC dropout and MFVI. Cost: the committed run, 82 min of wall time on 2
CPU cores (`wall_seconds` in docs/data/dun/uci/summary.json); --kinds standard leaves the gap
splits out.

--quick: boston and yacht, 2 standard and 2 gap splits each, at most 20 epochs (patience 20).
--paper: DUN's network size (width 100, 10 layers) and up to 4000 epochs with patience 200.

Hyperparameters are fixed, the same for every set and method, and NOT tuned: DUN tuned the
learning rate, depth and regularisation of each method on each set with BOHB.

MFVI: the DDN's architecture with a factorised Gaussian posterior on every weight and bias
(vdjax.nn.mfvi: local reparameterisation, the closed-form KL to the prior / N_train in the loss,
early stopping on that negative ELBO at the posterior means), --samples Monte-Carlo forward passes
at test time, whose mixture gives the LL (RMSE: of its mean). The splits of a set with one training
size (all its standard splits; all its gap splits) train together: one vmapped program for the
LDN and the ensemble, one for MC dropout, one for MFVI; other sizes form their own group.

Writes <out>/uci_<set>.json (per split and method: test LL, RMSE, prediction seconds, cost
relative to the DDN; the gap splits separately: LL and RMSE on the held-out gap) and
<out>/summary.json (mean +- standard error over splits per set and method, mean rank per method).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _dun  # noqa: E402

from vdjax.cli import validate  # noqa: E402

QUICK_SETS = ("boston", "yacht")


def main(argv=None) -> int:
    from vdjax.data.regression import UCI_SETS

    p = _dun.parser(__doc__, "dun_uci")
    p.add_argument("--quick", action="store_true", help="2 sets, 2 splits of each kind, at most 20 epochs")
    p.add_argument("--sets", nargs="+", default=None,
                   help=f"sets to run (default: all of {' '.join(UCI_SETS)}; also 'diabetes')")
    p.add_argument("--splits", type=validate.positive_int, default=None,
                   help="the first N splits of each kind of each set (default: all; --quick 2)")
    p.add_argument("--kinds", nargs="+", choices=("standard", "gap"), default=["standard", "gap"],
                   help="which splits (default: standard and gap)")
    p.add_argument("--root", type=validate.existing_dir, default=None,
                   help="the UCI archive (standard/<set>/data, gap/<set>/data; default data/uci or $VDJAX_UCI_DIR)")
    p.add_argument("--data-dir", type=validate.existing_dir, default=None,
                   help="one set in the MC-dropout/DUN layout instead of the archive")
    p.add_argument("--index-dir", type=validate.existing_dir, default=None,
                   help="where --data-dir's index_train_K/index_test_K files are (default --data-dir)")
    p.add_argument("--max-steps", type=validate.positive_int, default=None,
                   help="gradient steps that set a set's epoch cap (default 4000; --paper: none)")
    p.add_argument("--prior-std", type=validate.finite_float, default=1.0, help="MFVI prior std (default 1)")
    args = p.parse_args(argv)
    _dun.check_rates(args)
    if args.prior_std <= 0:
        raise validate.UserError(f"--prior-std must be positive, got {args.prior_std}")
    if args.index_dir is not None and args.data_dir is None:
        raise validate.UserError("--index-dir needs --data-dir")
    if args.quick and args.paper:
        raise validate.UserError("--quick and --paper exclude each other")
    from vdjax.runtime import start_script

    start_script()  # before JAX starts: a device per core (networks sharded over them), the compilation cache
    config = suite_config(args)
    jobs = plan(args)  # every file is found (or the error named) before anything trains

    from vdjax.io import read_json, write_json
    from vdjax.studies.uci_benchmark import SUITE_METHODS, aggregate, mean_ranks, run_splits

    per_set: dict[str, dict] = {}
    for name, kinds in jobs.items():
        result: dict = {"dataset": name, "suite": suite_record(args, config)}
        done = _finished(args.out / f"uci_{name}.json", result, kinds, read_json)
        if done is not None:  # an earlier call of the same suite (killed later) wrote this set
            print(f"{name}: reusing {args.out / f'uci_{name}.json'}")
            per_set[name] = done
            continue
        for kind, (splits, load) in kinds.items():
            t0 = time.perf_counter()
            rows = run_splits([load(k) for k in splits], splits, config, progress=not args.no_progress)
            result[kind] = {"splits": splits, "summary": aggregate(rows), "per_split": rows,
                            "wall_seconds": round(time.perf_counter() - t0, 1)}
            for m, s in result[kind]["summary"].items():
                print(f"{name:9s} {kind:8s} {m:9s} LL {s['log_lik_mean']:8.3f} ± {s['log_lik_se']:.3f}  "
                      f"RMSE {s['rmse_mean']:8.3f} ± {s['rmse_se']:.3f}  cost/DDN {s['cost_vs_ddn_mean']:.1f}")
        write_json(args.out / f"uci_{name}.json", result)
        per_set[name] = result
    import jax

    summary = {"suite": suite_record(args, config), "methods": list(SUITE_METHODS),
               "wall_seconds": round(sum(r[k]["wall_seconds"] for r in per_set.values() for k in args.kinds if k in r), 1),
               "compilation_cache": jax.config.jax_compilation_cache_dir or None}
    for kind in args.kinds:
        sets = {n: r[kind]["summary"] for n, r in per_set.items() if kind in r}
        if sets:
            summary[kind] = {"sets": sets, "splits": {n: r[kind]["splits"] for n, r in per_set.items() if kind in r},
                             "mean_rank": mean_ranks(sets)}
    path = write_json(args.out / "summary.json", summary)
    for kind in args.kinds:
        if kind in summary:
            ranks = ", ".join(f"{m} {r:.2f}" for m, r in summary[kind]["mean_rank"].items())
            print(f"mean rank ({kind}, {len(summary[kind]['sets'])} sets): {ranks}")
    print(f"wrote {path} ({summary['wall_seconds']:.0f} s)")
    return 0


def _finished(path: Path, result: dict, kinds: dict, read_json) -> dict | None:
    """The results already in `path` when they come from the same suite and splits, else None."""
    if not path.exists():
        return None
    try:
        old = read_json(path)
    except (OSError, ValueError):
        return None
    import json

    from vdjax.io import to_jsonable

    same = old.get("suite") == json.loads(json.dumps(to_jsonable(result["suite"]))) and all(
        kind in old and old[kind].get("splits") == list(splits) for kind, (splits, _) in kinds.items())
    return old if same else None


def suite_config(args):
    """The protocol from the options: --quick, --paper or the CPU default, then explicit values."""
    from vdjax.studies.uci_benchmark import SuiteConfig

    base = SuiteConfig(seed=args.seed, samples=args.samples, dropout_rate=args.dropout_rate, prior_std=args.prior_std)
    presets = {"quick": dict(max_epochs=20, patience=20), "paper": dict(width=100, max_depth=10, max_epochs=4000,
                                                                        patience=200, max_steps=None)}
    changes = presets["quick"] if args.quick else presets["paper"] if args.paper else {}
    given = {"width": args.width, "max_depth": args.max_depth, "max_epochs": args.max_epochs,
             "patience": args.patience, "learning_rate": args.lr, "ensemble_size": args.ensemble_size,
             "max_steps": args.max_steps}
    changes.update({k: v for k, v in given.items() if v is not None})
    return dataclasses.replace(base, **changes)


def suite_record(args, config) -> dict:
    """What the results file says about how they were made."""
    return {"mode": "quick" if args.quick else "paper" if args.paper else "cpu_default",
            "hyperparameters": dataclasses.asdict(config), "tuned": False,
            "note": "fixed hyperparameters, the same for every set and method; DUN tuned each with BOHB",
            "kinds": list(args.kinds)}


def plan(args) -> dict:
    """{set: {kind: (splits, load(split) -> Dataset)}}, every split's files checked to exist."""
    from vdjax.data.regression import (
        UCI_SETS,
        load_diabetes,
        load_uci,
        load_uci_benchmark,
        uci_benchmark_dirs,
        uci_splits,
    )

    first = args.splits if args.splits is not None else 2 if args.quick else None
    jobs: dict = {}
    if args.data_dir is not None:
        index_dir = args.index_dir or args.data_dir
        name = args.sets[0] if args.sets else (args.data_dir.parent.name if args.data_dir.name == "data"
                                               else args.data_dir.name)
        kind = "gap" if args.index_dir is not None and "gap" in str(args.index_dir) else "standard"
        present = uci_splits(index_dir)[:first]
        if not present:
            raise validate.UserError(f"no index_train_K/index_test_K files in {index_dir}")
        load = lambda k: load_uci(args.data_dir, k, args.index_dir, name=name)  # noqa: E731
        load(present[0])
        return {name: {kind: (present, load)}}
    names = validate.unique(args.sets or (QUICK_SETS if args.quick else UCI_SETS), "--sets")
    for name in names:
        if name == "diabetes":
            jobs[name] = {"standard": ([0, 1, 2][:first], lambda k: load_diabetes(split=k))}
            continue
        if name not in UCI_SETS:
            raise validate.UserError(f"unknown set {name!r}; choose from {', '.join(UCI_SETS)} or diabetes")
        jobs[name] = {}
        for kind in args.kinds:
            gap = kind == "gap"
            _, index_dir = uci_benchmark_dirs(name, gap, args.root)
            splits = uci_splits(index_dir)[:first]
            if not splits:
                raise validate.UserError(f"no splits in {index_dir}")
            load = (lambda k, name=name, gap=gap: load_uci_benchmark(name, k, gap, args.root))
            load(splits[0])
            jobs[name][kind] = (splits, load)
    return jobs


if __name__ == "__main__":
    sys.exit(validate.run_main(main))
