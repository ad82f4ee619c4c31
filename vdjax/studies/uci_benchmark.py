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

from vdjax.baselines.dun import Baselines, fit_methods, method_predictives, regression_metrics
from vdjax.studies import claims
from vdjax.studies.stats import GREATER, Claim, TTest, paired_t
from vdjax.data.core import Dataset
from vdjax.nn.models import ModelConfig
from vdjax.training.config import RunOptions, TrainConfig
from vdjax.training.epoch import Batching

SUITE_METHODS = ("ldn", "ddn", "ensemble", "dropout", "mfvi")  # ranked; 'ldn_full' is reported beside them
FULL_RANKED = ("ldn_full", *SUITE_METHODS[1:])  # the same ranking with the full LDN in the pruned one's place
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
        baselines = Baselines(config.ensemble_size, config.dropout_rate, mfvi_prior_std=config.prior_std)
        trained = fit_methods(sets, cfg, tc, [config.seed + 100 * splits[i] for i in group], baselines,
                              RunOptions(progress=progress, log=log))
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


LDNS = {"ldn": "the pruned LDN (95% rule)", "ldn_full": "the full LDN (every depth, DUN's predictor)"}


def paired_test(rows: Sequence[dict[str, Any]], a: str, b: str, stat: str = "log_lik") -> TTest:
    """The paired t-test of method a's `stat` minus method b's over the splits of one set (the
    splits are shared, so their spread cancels)."""
    return paired_t([r["test"][a][stat] for r in rows], [r["test"][b][stat] for r in rows])


def _set_rows(per_set: dict[str, dict[str, Any]], kind: str, a: str, b: str,
              margin: float | None = None) -> list[claims.Row]:
    """One row per set with at least two splits of `kind`: a - b greater than 0, or, with a
    `margin`, greater than -margin (a no worse than b; the table shows a - b itself)."""
    out = []
    for name, r in sorted(per_set.items()):
        rows = r.get(kind, {}).get("per_split", [])
        if len(rows) < 2:
            continue
        t = paired_test(rows, a, b)
        if margin is None:
            out.append(claims.Row(name, "", "", Claim(name, t, GREATER)))
        else:
            out.append(claims.Row(name, "", "", Claim(name, claims.not_worse(t, margin), GREATER), shown=t,
                                  margin=f"≥ −{margin:g}"))
    return out


def suite_verdicts(per_set: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The DUN findings the suite tests, one table per finding, LDN variant and baseline, one row
    per set (paired t over its splits; `vdjax.studies.claims`, Holm within each table). The pruned
    and the full LDN are judged separately.

    1. Test LL competitive with a deep ensemble's (standard splits): the LDN no worse than the
       ensemble by more than `claims.COMPETITIVE_MARGIN`, with the prediction cost of each beside.
    2. Better in-between uncertainty than MFVI and MC dropout: the LDN's LL of the held-out gap
       above each baseline's (gap splits)."""
    out = []
    std = {n: r for n, r in per_set.items() if "standard" in r}
    cost = {m: float(np.mean([r["standard"]["summary"][m]["cost_vs_ddn_mean"] for r in std.values()]))
            for m in ("ldn", "ldn_full", "ensemble")} if std else {}
    for ldn, who in LDNS.items():
        rows = _set_rows(std, "standard", ldn, "ensemble", claims.COMPETITIVE_MARGIN)
        if rows:
            out.append({"finding": "competitive with ensembles", "ldn": ldn, "against": "ensemble", "rows": rows,
                        "cost": {ldn: cost[ldn], "ensemble": cost["ensemble"]},
                        "statement": f"DUN's test log-likelihood is competitive with a deep ensemble's at the cost of "
                                     f"a single network: {who} minus the ensemble, standard splits"})
        for base, label in (("mfvi", "mean-field VI"), ("dropout", "MC dropout")):
            rows = _set_rows(per_set, "gap", ldn, base)
            if rows:
                out.append({"finding": "in-between uncertainty", "ldn": ldn, "against": base, "rows": rows,
                            "statement": f"DUN's in-between uncertainty (the log-likelihood of a held-out gap) is "
                                         f"better than {label}'s: {who} minus {label}, gap splits"})
    return out


def epoch_caps(per_set: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per set and kind of split: the epoch caps its networks ran under and how many of them
    stopped at the cap rather than by patience, per method (the ensemble's members are 'ddn_k')."""
    out = []
    for name, r in sorted(per_set.items()):
        for kind in KINDS:
            splits = r.get(kind, {}).get("per_split", [])
            if not splits:
                continue
            counts: dict[str, list[int]] = {}
            for split in splits:
                for net, t in split["training"].items():
                    c = counts.setdefault(net.split("_")[0], [0, 0])
                    c[0] += t["stopped"] == "max_epochs"
                    c[1] += 1
            out.append({"set": name, "kind": kind, "caps": sorted({s["max_epochs"] for s in splits}),
                        "at_cap": {m: c[0] for m, c in counts.items()},
                        "networks": {m: c[1] for m, c in counts.items()}})
    return out
