"""The LDN against NAS baselines on the depth search space, on equal terms.

Same model, same data, same final evaluation; only the search strategy differs:
- 'ldn': one LDN trained on the whole training set, pruned to d_opt (95% rule); no
  validation split, no retraining;
- 'grid': the paper's baseline, a DDN per depth 0..D trained on one half of the training set,
  the best by validation log-likelihood (other half) retrained on the whole set;
- every `vdjax.baselines.search` strategy: search with weights on one half and architecture on the
  other, then the chosen depth retrained from scratch on the whole set (DARTS/SMASH protocol).

Each row records the chosen depth, the final network's test log-likelihood, error and ECE,
and the cost of search and retraining: wall time with and without compiling, and the network
passes run, counted as they run (`vdjax.training.cost`): the search's by its step functions, a trained
network's gradient evaluations by its train state's step counter, and the evaluation passes
of early stopping and of the grid's validation scores by the batches evaluated.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from vdjax.training.cost import Cost, clock
from vdjax.data.core import Dataset
from vdjax.depth.metrics import predictive_metrics
from vdjax.nn.models import Model
from vdjax.depth.prune import d_opt_95, pruned_log_probs
from vdjax.nn.models import eval_logits
from vdjax.baselines.search import STRATEGIES, SearchConfig, search
from vdjax.training.config import RunOptions, TrainConfig
from vdjax.studies import claims
from vdjax.studies.stats import GREATER, LESS, NO_CHANGE, Claim, paired_t, tost

ALL = ("ldn", "grid", *STRATEGIES)
EVAL_BATCH = 1024  # points per evaluation pass (`eval_logits`, the image trainer's early-stopping test)


def eval_passes(n_points: int) -> int:
    """Forward passes `eval_logits` runs over `n_points` in batches of EVAL_BATCH."""
    return len(range(0, n_points, EVAL_BATCH))


@dataclasses.dataclass(frozen=True)
class TrainedNet:
    variables: dict
    q: np.ndarray | None  # LDN posterior; None for a DDN
    cost: Cost
    seconds: float  # wall time, compilation included
    compile_seconds: float


def train_network(data: Dataset, model_config: Model, train_config: TrainConfig, seed: int) -> TrainedNet:
    """Trains one LDN or DDN with the protocol of its data: the compiled in-memory loop when early
    stopping watches the train ELBO (spirals), the epoch loop with early stopping on held-out data
    otherwise (images)."""
    with clock() as wall:
        from vdjax.training.runner import fit, with_stopping_data

        if train_config.stop_on == "train":
            run = fit(model_config, train_config, data, [seed], RunOptions(chunk_epochs=train_config.max_epochs))
            evaluated = 0  # early stopping watches the training loss the steps compute anyway
        else:
            run = fit(model_config, train_config, data, [seed], RunOptions(log=lambda s: None))
            stop_on, held = train_config.stop_on, with_stopping_data(data, train_config)
            n_held = {"val": held.n_val, "test": len(held.x_test)}[stop_on]
            evaluated = sum(f"{stop_on}_loss" in row for row in run.histories[0]) * eval_passes(n_held)
        state = run.best_state(0)
        variables = jax.device_get(state.variables)
    # The train state counts its optimiser steps, one gradient evaluation each.
    cost = Cost.zero().add(forward=evaluated, gradient=int(state.step))
    q = np.asarray(state.q, np.float64) if train_config.method == "ldn" else None
    return TrainedNet(variables, q, cost, wall.seconds, wall.compile_seconds)


def final_metrics(model_config: Model, net: TrainedNet, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Final-network metrics: a DDN at its depth; an LDN pruned to d_opt (marginal over d <= d_opt)."""
    logits = eval_logits(model_config, net.variables, x, EVAL_BATCH)
    if net.q is None:
        return {"depth": model_config.max_depth, **predictive_metrics(jax.nn.log_softmax(logits[-1]), y)}
    d = d_opt_95(net.q)
    return {"depth": d, **predictive_metrics(pruned_log_probs(logits, net.q, d), y)}


def split(data: Dataset, seed: int, val_fraction: float = 0.5) -> Dataset:
    """The training set halved for methods that need a validation signal: a Dataset whose
    'train' part is the search-train half and whose 'test' part is the validation half."""
    perm = np.random.default_rng(seed).permutation(data.n_train)
    n_val = int(round(val_fraction * data.n_train))
    tr, va = perm[n_val:], perm[:n_val]
    return Dataset(data.name + "/search", data.x_train[tr], data.y_train[tr], data.x_train[va], data.y_train[va],
                   data.num_classes)


def compare(
    data: Dataset,
    model_config: Model,
    strategies: list[str],
    seeds: list[int],
    train_config: TrainConfig,
    search_config: SearchConfig,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """One row per (strategy, seed). `train_config` is the protocol of every trained network
    (LDN, grid DDNs, retrained depths); `search_config` (its strategy is replaced) the search's."""
    unknown = [s for s in strategies if s not in ALL]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {ALL}")
    rows = []
    D = model_config.max_depth
    ddn = train_config.replace(method="ddn")
    for seed in seeds:
        half = split(data, seed)
        for strategy in strategies:
            row: dict[str, Any] = {"dataset": data.name, "strategy": strategy, "seed": seed, "max_depth": D}
            search_steps, search_cost, search_wall = 0, Cost.zero(), None
            if strategy == "ldn":
                net = train_network(data, model_config, train_config.replace(method="ldn"), seed)
                final_cfg = model_config
                row["distribution"] = net.q.tolist()
                row["chosen_depth"] = d_opt_95(net.q)
            else:
                if strategy == "grid":
                    scores = []
                    with clock() as search_wall:
                        for d in range(D + 1):
                            cfg_d = model_config.replace(max_depth=d)
                            cand = train_network(half, cfg_d, ddn, seed)
                            scores.append(final_metrics(cfg_d, cand, half.x_test, half.y_test)["log_lik"])
                            search_cost = search_cost + cand.cost.add(forward=eval_passes(len(half.x_test)))
                    search_steps = int(search_cost.gradient)
                    chosen = int(np.argmax(scores))
                    dist = np.exp(np.array(scores) - max(scores))
                    row["distribution"] = (dist / dist.sum()).tolist()
                    row["val_log_lik"] = scores
                else:
                    res = search(model_config, dataclasses.replace(search_config, strategy=strategy),
                                 (half.x_train, half.y_train), (half.x_test, half.y_test), seed=seed)
                    chosen, search_steps, search_wall = res.chosen_depth, res.steps, res
                    search_cost = res.cost
                    row["distribution"] = res.distribution.tolist()
                    row["summary"] = res.summary()
                row["chosen_depth"] = chosen
                final_cfg = model_config.replace(max_depth=chosen)
                net = train_network(data, final_cfg, ddn, seed)
            row["test"] = final_metrics(final_cfg, net, data.x_test, data.y_test)
            search_s = (search_wall.seconds, search_wall.compile_seconds) if search_wall is not None else (0.0, 0.0)
            row.update(search_steps=search_steps, search=_cost_record(search_cost, *search_s),
                       final=_cost_record(net.cost, net.seconds, net.compile_seconds),
                       total=_cost_record(search_cost + net.cost, search_s[0] + net.seconds,
                                          search_s[1] + net.compile_seconds))
            if "summary" not in row:
                row["summary"] = (f"{strategy}: depth {row['chosen_depth']}; {search_steps} search steps, "
                                  f"{row['total']['seconds']:.1f} s in all")
            t, c = row["test"], row["total"]
            log(f"{data.name} seed {seed} {strategy:>14}: depth {row['chosen_depth']:3d}, test LL {t['log_lik']:.3f}, "
                f"error {t['error']:.3f}, ECE {t['ece']:.3f}, {c['seconds']:.0f} s ({c['compile_seconds']:.0f} s "
                f"compiling), {c['gradient_evaluations']} gradient evaluations, {c['forward_passes']} forward passes")
            rows.append(row)
    return rows


def _cost_record(cost: Cost, seconds: float, compile_seconds: float) -> dict[str, Any]:
    return {**cost.counts(), "seconds": seconds, "compile_seconds": compile_seconds,
            "seconds_no_compile": seconds - compile_seconds}


def summary_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (data set, strategy): means and stds over seeds."""
    out = []
    keys = sorted({(r["dataset"], r["strategy"]) for r in rows}, key=lambda k: (k[0], ALL.index(k[1])))
    for dataset, strategy in keys:
        rs = [r for r in rows if r["dataset"] == dataset and r["strategy"] == strategy]
        entry: dict[str, Any] = {"dataset": dataset, "strategy": strategy, "seeds": len(rs)}
        for name, get in (("depth", lambda r: r["chosen_depth"]), ("log_lik", lambda r: r["test"]["log_lik"]),
                          ("error", lambda r: r["test"]["error"]), ("ece", lambda r: r["test"]["ece"]),
                          *((k, lambda r, k=k: r["total"][k]) for k in (
                              "seconds", "seconds_no_compile", "gradient_evaluations", "forward_passes",
                              "hessian_vector_products"))):
            v = np.array([get(r) for r in rs], np.float64)
            entry[name], entry[name + "_std"] = float(v.mean()), float(v.std())
        out.append(entry)
    return out


def markdown_table(table: list[dict[str, Any]]) -> str:
    """Means ± std over seeds; costs (search plus final training) as means."""
    lines = ["| data | strategy | depth | test LL | test error | ECE | wall s | wall s w/o compile | gradient evals "
             "| forward passes | Hessian-vector products |",
             "|---|---|---|---|---|---|---:|---:|---:|---:|---:|"]
    for e in table:
        lines.append(
            f"| {e['dataset']} | {e['strategy']} | {e['depth']:.1f} ± {e['depth_std']:.1f} | "
            f"{e['log_lik']:.3f} ± {e['log_lik_std']:.3f} | {e['error']:.3f} ± {e['error_std']:.3f} | "
            f"{e['ece']:.3f} ± {e['ece_std']:.3f} | {e['seconds']:.1f} | {e['seconds_no_compile']:.1f} | "
            f"{e['gradient_evaluations']:.0f} | {e['forward_passes']:.0f} | {e['hessian_vector_products']:.0f} |")
    return "\n".join(lines) + "\n"


# The page's statements about the spirals comparison, each a claim on the pruned LDN's test LL
# minus the strategy's, paired by seed (a seed's strategies share its data split).
CLAIMS: tuple[tuple[str, str, str], ...] = (
    ("grid", NO_CHANGE, "the LDN matches the grid search's test log-likelihood"),
    ("smash", LESS, "retraining SMASH's chosen depth gives a better final network than the LDN"),
    ("binary_masked", LESS, "retraining binary_masked's chosen depth gives a better final network than the LDN"),
    ("proxyless", LESS, "retraining proxyless's chosen depth gives a better final network than the LDN"),
    ("darts1", GREATER, "first-order DARTS ends on a worse network than the LDN"),
    ("darts2", GREATER, "second-order DARTS ends on a worse network than the LDN"),
    ("gumbel", GREATER, "Gumbel-softmax ends on a worse network than the LDN"),
)


def verdict_rows(rows: list[dict[str, Any]]) -> list[claims.Row]:
    """The page's claims on every data set that has them: the pruned LDN (d_opt by the 95% rule;
    the rows hold no full-LDN metrics) against each strategy, paired t over seeds, TOST against
    `claims.STABLE_LL_MARGIN` for "matches"."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        ll = {(r["strategy"], r["seed"]): r["test"]["log_lik"] for r in rows if r["dataset"] == dataset}
        for strategy, expect, statement in CLAIMS:
            seeds = sorted(s for k, s in ll if k == strategy and ("ldn", s) in ll)
            if len(seeds) < 2:
                continue
            ldn, other = np.array([ll["ldn", s] for s in seeds]), np.array([ll[strategy, s] for s in seeds])
            t = paired_t(ldn, other)
            result = tost(t, claims.STABLE_LL_MARGIN) if expect == NO_CHANGE else t
            ours = f"test LL, pruned LDN {ldn.mean():.3f}, {strategy} {other.mean():.3f}; effect LDN − {strategy}"
            out.append(claims.Row(f"{dataset}: {strategy}", statement, ours, Claim(strategy, result, expect)))
    return out
