"""The UCI regression benchmark of DUN (Sec. 5.1) as one suite: every set, its standard and its
gap splits, five methods (`SUITE_METHODS`) under one fixed protocol.

The splits of one kind of one set that have the same training size (every standard split of a
set; every gap split of a set) train together: `vdjax.baselines.dun.fit_methods` runs all their
LDNs and DDNs as one vmapped program, their MC-dropout networks as a second and their MFVI
networks as a third. Splits of other sizes form groups of their own (grouped by shape, no
padding).

Hyperparameters are fixed per method (`SuiteConfig`), not tuned per set: DUN tuned the learning
rate, depth and regularisation of every method on every set with BOHB, so these numbers are a
same-protocol comparison, not a reproduction of DUN's table. The mean rank is DUN's: the
methods ranked by mean test log-likelihood on each set (1 = best, ties share the mean rank),
the ranks averaged over sets.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import numpy as np

from vdjax.baselines.dun import fit_methods, method_predictives, regression_metrics
from vdjax.data.core import Dataset
from vdjax.nn.models import ModelConfig
from vdjax.training.config import TrainConfig
from vdjax.training.epoch import Batching

SUITE_METHODS = ("ldn", "ddn", "ensemble", "dropout", "mfvi")  # ranked; 'ldn_full' is reported beside them
KINDS = ("standard", "gap")


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    """The one protocol of every method on every set. The epoch cap of a set is
    min(max_epochs, ceil(max_steps / steps per epoch)): large sets get fewer epochs, the same
    order of gradient steps (None: max_epochs everywhere)."""

    width: int = 50
    max_depth: int = 5
    learning_rate: float = 0.005
    momentum: float = 0.9
    batch_size: int = 128
    max_epochs: int = 200
    max_steps: int | None = 2000
    patience: int = 30
    val_fraction: float = 0.1
    ensemble_size: int = 5
    dropout_rate: float = 0.1
    samples: int = 10  # MC-dropout and MFVI forward passes at test time
    prior_std: float = 1.0  # MFVI's prior N(0, prior_std^2) on every weight and bias
    seed: int = 0

    def model_config(self, input_shape: tuple[int, ...]) -> ModelConfig:
        return ModelConfig("mlp", self.max_depth, 1, input_shape, width=self.width, likelihood="gaussian")

    def epochs_for(self, n_train: int) -> int:
        """The epoch cap for a training set of `n_train` rows (before the validation split)."""
        if self.max_steps is None:
            return self.max_epochs
        n_fit = n_train - int(round(self.val_fraction * n_train))
        steps = Batching.for_size(max(n_fit, 1), self.batch_size).n_batches
        return max(1, min(self.max_epochs, math.ceil(self.max_steps / steps)))

    def train_config(self, n_train: int) -> TrainConfig:
        """SGD with momentum, early stopping on the validation split's objective (the LDN's
        ELBO, the others' NLL, MFVI's negative ELBO at its posterior means), keeping the best."""
        return TrainConfig(learning_rate=self.learning_rate, momentum=self.momentum, batch_size=self.batch_size,
                           max_epochs=self.epochs_for(n_train), patience=self.patience, stop_on="val",
                           val_fraction=self.val_fraction, prior_decay=1.0)


def shape_groups(datasets: Sequence[Dataset]) -> list[list[int]]:
    """Positions of `datasets` grouped by (training size, input shape): one program per group."""
    groups: dict[tuple, list[int]] = {}
    for i, d in enumerate(datasets):
        groups.setdefault((d.n_train, d.input_shape), []).append(i)
    return list(groups.values())


def run_splits(datasets: Sequence[Dataset], splits: Sequence[int], config: SuiteConfig, progress: bool = False,
               log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Trains every method on each split (`datasets[i]` is split `splits[i]`), in shape groups,
    and evaluates each on its split's test set: one row per split, in the order given."""
    rows: dict[int, dict[str, Any]] = {}
    for group in shape_groups(datasets):
        sets = [datasets[i] for i in group]
        cfg, tc = config.model_config(sets[0].input_shape), config.train_config(sets[0].n_train)
        trained = fit_methods(sets, cfg, tc, seed=[config.seed + 100 * splits[i] for i in group],
                              ensemble_size=config.ensemble_size, dropout_rate=config.dropout_rate,
                              mfvi_prior_std=config.prior_std, progress=progress, log=log)
        for i, data, tr in zip(group, sets, trained):
            key = jax.random.key(config.seed + splits[i])
            preds, seconds = method_predictives(tr, data.x_test, key, config.samples, n_mfvi_samples=config.samples)
            test = {m: regression_metrics(p, data.y_test, data.target_scale) for m, p in preds.items()}
            rows[i] = {"split": int(splits[i]), "dataset": data.name, "n_train": data.n_train,
                       "n_test": len(data.x_test), "target_scale": data.target_scale, "max_epochs": tc.max_epochs,
                       "splits_in_program": len(group), "d_opt": int(preds["ldn"].outputs.shape[0] - 1),
                       "q": np.asarray(tr.ldn.q).tolist(), "test": test, "test_time_seconds": seconds,
                       "cost_vs_ddn": {m: s / seconds["ddn"] for m, s in seconds.items()},
                       "training": tr.summary()}
    return [rows[i] for i in range(len(datasets))]


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per method: mean and standard error over splits (std / sqrt(n), DUN's error bars) of the
    test log-likelihood and RMSE, and the mean prediction time and cost relative to the DDN."""
    out = {}
    for m in rows[0]["test"]:
        entry: dict[str, float] = {"n_splits": len(rows)}
        for stat in ("log_lik", "rmse"):
            v = np.array([r["test"][m][stat] for r in rows], np.float64)
            entry[f"{stat}_mean"] = float(v.mean())
            entry[f"{stat}_se"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
        entry["test_time_seconds_mean"] = float(np.mean([r["test_time_seconds"][m] for r in rows]))
        entry["cost_vs_ddn_mean"] = float(np.mean([r["cost_vs_ddn"][m] for r in rows]))
        out[m] = entry
    return out


def mean_ranks(summaries: dict[str, dict[str, dict[str, float]]], methods: Sequence[str] = SUITE_METHODS
               ) -> dict[str, float]:
    """DUN's mean rank: on every set the methods ranked by mean test log-likelihood (1 = best,
    ties share their mean rank), averaged over the sets. `summaries`: {set: `aggregate(...)`}."""
    from scipy.stats import rankdata

    ranks = np.array([rankdata([-s[m]["log_lik_mean"] for m in methods]) for s in summaries.values()])
    return {m: float(r) for m, r in zip(methods, ranks.mean(axis=0))}


def summarise(per_set: dict[str, dict[str, Any]], kinds: Sequence[str] = ("standard", "gap")) -> dict[str, Any]:
    """A suite summary (as `experiments/regression_uci.py` writes it) from the per-set results
    files that exist, so that a suite still running can be rendered on the sets it has finished."""
    out: dict[str, Any] = {"methods": list(SUITE_METHODS), "sets_done": sorted(per_set)}
    if per_set:
        out["suite"] = next(iter(per_set.values()))["suite"]
    out["wall_seconds"] = round(sum(r[k]["wall_seconds"] for r in per_set.values() for k in kinds if k in r), 1)
    for kind in kinds:
        sets = {n: r[kind]["summary"] for n, r in per_set.items() if kind in r}
        if sets:
            out[kind] = {"sets": sets, "splits": {n: r[kind]["splits"] for n, r in per_set.items() if kind in r},
                         "mean_rank": mean_ranks(sets)}
    return out


def paired_difference(rows: Sequence[dict[str, Any]], a: str, b: str, stat: str = "log_lik") -> tuple[float, float]:
    """Mean and standard error over splits of method a's `stat` minus method b's, split by split
    (the splits are shared, so their spread cancels)."""
    d = np.array([r["test"][a][stat] - r["test"][b][stat] for r in rows], np.float64)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


def _tally(per_set: dict[str, dict[str, Any]], kind: str, a: str, b: str) -> dict[str, Any]:
    """Per set, a's test LL minus b's (mean ± SE of the paired differences) and which side leads
    beyond its SE."""
    rows = {}
    for name, r in sorted(per_set.items()):
        if kind in r:
            mean, se = paired_difference(r[kind]["per_split"], a, b)
            rows[name] = {"mean": mean, "se": se, "lead": a if mean > se else b if mean < -se else "tie"}
    return rows


def suite_verdicts(per_set: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One verdict per DUN finding the suite tests, from the spread over splits. The LDN is
    DUN's predictor, the marginal over every depth ('ldn_full'). A set counts for a side only
    where the paired difference exceeds its standard error; a verdict rests on the sets done.

    1. Test LL competitive with a deep ensemble at the cost of one network (standard splits):
       reproduced when on a majority of sets the ensemble does not lead beyond the SE and the
       LDN's prediction costs under half the ensemble's; not reproduced when the ensemble leads
       on a majority; partly otherwise.
    2. Better in-between uncertainty than MFVI and MC dropout (the LL of the held-out gap):
       reproduced when the LDN leads both beyond the SE on a majority of sets; not reproduced
       when it leads neither on a majority; partly otherwise."""
    out = []
    std = {n: r for n, r in per_set.items() if "standard" in r}
    if std:
        vs_ens = _tally(std, "standard", "ldn_full", "ensemble")
        cost = {m: float(np.mean([r["standard"]["summary"][m]["cost_vs_ddn_mean"] for r in std.values()]))
                for m in ("ldn_full", "ensemble")}
        held = sum(v["lead"] != "ensemble" for v in vs_ens.values())
        lost = len(vs_ens) - held
        cheap = cost["ldn_full"] < 0.5 * cost["ensemble"]
        verdict = ("reproduced" if held * 2 > len(vs_ens) and cheap else
                   "not reproduced" if lost * 2 > len(vs_ens) else "partly")
        out.append({"finding": "competitive with ensembles", "kind": "standard", "sets": vs_ens, "cost": cost,
                    "held": held, "n_sets": len(vs_ens), "verdict": verdict,
                    "statement": "DUN's test log-likelihood is competitive with a deep ensemble's at the cost of "
                                 "a single network"})
    gap = {n: r for n, r in per_set.items() if "gap" in r}
    if gap:
        tallies = {b: _tally(gap, "gap", "ldn_full", b) for b in ("mfvi", "dropout")}
        both = sum(all(tallies[b][n]["lead"] == "ldn_full" for b in tallies) for n in gap)
        neither = sum(all(tallies[b][n]["lead"] != "ldn_full" for b in tallies) for n in gap)
        verdict = ("reproduced" if both * 2 > len(gap) else "not reproduced" if neither * 2 > len(gap)
                   else "partly")
        out.append({"finding": "in-between uncertainty", "kind": "gap", "sets": tallies, "both": both,
                    "neither": neither, "n_sets": len(gap), "verdict": verdict,
                    "statement": "DUN's in-between uncertainty (the log-likelihood of a held-out gap) is better "
                                 "than mean-field VI's and MC dropout's"})
    return out
