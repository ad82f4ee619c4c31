"""A depth-learning demonstration on any network and data set: one results file, one page.

`run_demo(make_network, data, config, out)` takes a model factory `max_depth -> Network`, a
`Dataset` (one prediction per example, or per position: outputs [B, T, C], targets [B, T]) and
a `DemoConfig`, and

1. trains the LDNs at `config.max_depth`, one per seed, as one vmapped program (`vdjax.fit`);
2. reads q(d) and d_opt per seed, by the 95% rule (`vdjax.select_depth`) and as argmax q, and
   whether each network learnt (`learnt_record`: q off uniform and the loss converged);
3. trains DDNs, one per seed, at no fewer than three depths: 1, the median d_opt, max_depth (and
   `config.ddn_depths`). A DDN of depth d is the network `make_network(d)`, a different
   architecture from the others, so each depth is its own vmapped program over the seeds (`fit`
   trains one architecture per program; a DDN trained inside the max-depth network, one-hot on
   depth d, would cost every DDN the full max_depth blocks);
4. evaluates on the test set: the full LDN (the q-marginal), the LDN pruned at d_opt, each DDN
   (log-likelihood, error, ECE; per position when the targets are), with mean, sample std and a
   paired t-test over seeds (`vdjax.studies.stats`) for pruned vs full and pruned vs the DDN at
   the median d_opt;
5. the early-exit curve over `config.thresholds` from `vdjax.exit_depths` on the pruned network's
   outputs (mean depth used against error / LL / ECE), beside pruning every example to each
   fixed depth 0..max_depth (`pruned_log_probs`);
6. wall time on the trained weights: the full LDN's forward pass, the deployed DDN-max_depth's
   (its last head only), the pruned LDN's, and `vdjax.early_exit` at `config.timing_thresholds`,
   each at every batch size of `config.timing_batches` (the median of `timing_repeats` rounds
   after a warm-up, the variants interleaved so drifting load hits all alike), with the depth
   each early-exit batch computed to.

It writes `<out>/<config.name>.json` atomically (the command, the machine and its load, the
wall time of each phase), the trained weights under `<out>/weights/`, and keeps its training
checkpoints under `<out>/checkpoints/`: run again after a kill, it resumes training where it
stopped and redoes the (minutes of) evaluation. `demo_markdown(result)` renders the page.

The analysis holds every depth's test outputs, [max_depth + 1, N_test, *P, C] floats, in memory.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import flax.serialization
import jax
import numpy as np

from vdjax.data.core import Dataset, check_inputs
from vdjax.depth.early_exit import check_threshold, early_exit, exit_depths
from vdjax.depth.metrics import marginal_log_probs, predictive_metrics
from vdjax.depth.prune import fold_posterior, last_head_only, prune, pruned_log_probs, select_depth
from vdjax.io import write_bytes, write_json
from vdjax.nn.models import eval_logits, forward_fn
from vdjax.nn.network import Network
from vdjax.runtime import environment
from vdjax.studies import stats
from vdjax.training.config import IMAGE_PROTOCOL, RunOptions, TrainConfig
from vdjax.training.runner import FitResult, fit, with_stopping_data

Factory = Callable[[int], Network]
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
PLATEAU = 0.01  # converged at the epoch cap: the last quarter improved the best loss by < 1% (relative)
LEARNT_RULE = ("an LDN learnt when max_d q(d) > 2/(D+1), twice the uniform mass, and its watched loss converged: "
               "early stopping ended it, or at the epoch cap the last quarter of the epochs since its last change "
               f"of learning rate (at least 2 such epochs) improved their best watched loss by less than {PLATEAU:.0%} "
               "(relative). A DDN learnt when its loss converged.")

NOTES = [
    "LDNs: one vmapped program over the seeds. DDNs: one vmapped program over the seeds per depth (a DDN of depth d "
    "is the network make_network(d), another architecture than the other depths').",
    "Spread over seeds: sample standard deviation (ddof 1). Paired t-tests pair networks of the same seed.",
    "Pruned: each seed's LDN cut after its own d_opt (95% rule), q folded onto d_opt, predicting with the marginal "
    "over depths 0..d_opt. Early exit and fixed-depth curves: from every depth's test outputs of the full network "
    "(exit_depths, pruned_log_probs); wall times: vdjax.early_exit on the pruned network.",
    "training_seconds: the wall time of each training program over every call that resumed it, compilation "
    "included; phases_seconds: this call's; resumed_from_epoch: the epochs a program's checkpoint held when this "
    "call started (null: trained from scratch).",
]


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """What a demonstration trains and measures.

    name: the results file's stem. ddn_depths: DDN depths besides 1, the median d_opt and
    max_depth. timing_examples: test examples each timed pass runs (in batches of each of
    `timing_batches`); timing_seeds: how many of the seeds are timed (None: all).
    about: free text for the page (the data, the network); command: how the run was started."""

    name: str
    max_depth: int
    seeds: tuple[int, ...] = (0, 1, 2)
    train: TrainConfig = IMAGE_PROTOCOL
    ddn_depths: tuple[int, ...] = ()
    thresholds: tuple[float, ...] = THRESHOLDS
    timing_thresholds: tuple[float, ...] = (0.9, 0.99, 1.0)
    timing_batches: tuple[int, ...] = (1024, 16)
    timing_examples: int = 1024
    timing_repeats: int = 5
    timing_seeds: int | None = None
    about: str = ""
    command: str = ""
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.max_depth, bool) or not isinstance(self.max_depth, int) or self.max_depth < 1:
            raise ValueError(f"max_depth must be an integer >= 1, got {self.max_depth!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {list(self.seeds)}")
        for t in (*self.thresholds, *self.timing_thresholds):
            check_threshold(t)
        if any(not 0 <= d <= self.max_depth for d in self.ddn_depths):
            raise ValueError(f"DDN depths must lie in [0, {self.max_depth}], got {list(self.ddn_depths)}")
        if min(self.timing_batches, default=0) < 1 or self.timing_examples < 1 or self.timing_repeats < 1:
            raise ValueError("timing batches, examples and repeats must be positive")

    def settings(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["train"] = dataclasses.asdict(self.train)
        return out


# ---------------------------------------------------------------------------- the run


class _Phases:
    """Wall seconds of each phase, and a tqdm bar over the phases."""

    def __init__(self, progress: bool, total: int):
        self.seconds: dict[str, float] = {}
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="phase", desc="demo", position=1, leave=False)

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        if self.bar is not None:
            self.bar.set_description(name)
        start = time.perf_counter()
        value = fn()
        self.seconds[name] = round(time.perf_counter() - start, 2)
        if self.bar is not None:
            self.bar.update(1)
        return value

    def grow(self, more: int) -> None:
        if self.bar is not None:
            self.bar.total += more
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_demo(make_network: Factory, data: Dataset, config: DemoConfig, out: str | Path,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains, evaluates and times (see the module docstring); writes and returns the result."""
    out, started = Path(out), time.perf_counter()
    data = with_stopping_data(data, config.train)
    machine = machine_record()
    phases = _Phases(config.progress, 4)
    try:
        ldn = phases.run("train LDNs", lambda: train(make_network(config.max_depth), data, config, "ldn", out))
        posteriors = [ldn_posterior(ldn, seed, config) for seed in config.seeds]
        depths = ddn_depths([p["d_opt"] for p in posteriors], config)
        log(f"d_opt per seed {[p['d_opt'] for p in posteriors]}; DDN depths {depths}")
        phases.grow(len(depths))
        ddns = {d: phases.run(f"train DDN-{d}", lambda d=d: train(make_network(d), data, config, "ddn", out))
                for d in depths}
        save_weights(out, ldn, ddns, config)
        evaluated = phases.run("evaluate", lambda: evaluate_all(data, ldn, ddns, posteriors, config))
        timing = phases.run("time", lambda: time_all(data, ldn, ddns, posteriors, config))
    finally:
        phases.close()
    result = {
        "demo": config.name, "about": config.about, "command": config.command,
        "machine": {**machine, "load_average_end": list(os.getloadavg())},
        "settings": config.settings(), "network": make_network(config.max_depth).describe(),
        "data": data_record(data), "max_depth": config.max_depth, "seeds": list(config.seeds),
        "ldn": posteriors, "d_opt": d_opt_summary(posteriors), "learnt": learnt_summary(posteriors, ddns, config),
        "ddn_depths": depths,
        "ddn": {str(d): [ddn_training(r, s, config) for s in config.seeds] for d, r in ddns.items()},
        **evaluated, "timing": timing,
        "training_seconds": {"ldn": round(ldn.seconds, 1),
                             **{f"ddn_{d}": round(r.seconds, 1) for d, r in ddns.items()}},
        "resumed_from_epoch": {"ldn": ldn.resumed_from, **{f"ddn_{d}": r.resumed_from for d, r in ddns.items()}},
        "phases_seconds": phases.seconds, "wall_seconds": round(time.perf_counter() - started, 1), "notes": NOTES,
    }
    path = write_json(out / f"{config.name}.json", result)
    log(f"wrote {path} ({result['wall_seconds']:.0f} s)")
    return result


def train(network: Network, data: Dataset, config: DemoConfig, method: str, out: Path) -> FitResult:
    """One vmapped program: a network of `method` per seed, checkpointed (and resumed) under
    <out>/checkpoints/<method>_D<depth>."""
    where = out / "checkpoints" / f"{method}_D{network.max_depth}"
    options = RunOptions(checkpoint_dir=where, progress=config.progress)
    return fit(network, config.train.replace(method=method), data, [(method, s) for s in config.seeds], options)


def ddn_depths(d_opts: list[int], config: DemoConfig) -> list[int]:
    """1, the median d_opt over seeds, max_depth and `config.ddn_depths`; filled up to three
    distinct depths from the middle of [0, max_depth] when those coincide."""
    d_max = config.max_depth
    depths = {min(1, d_max), median_depth(d_opts), d_max, *config.ddn_depths}
    for extra in (d_max // 2, (d_max + 1) // 2, 0, *range(d_max + 1)):
        if len(depths) >= 3:
            break
        depths.add(extra)
    return sorted(depths)


def median_depth(depths: list[int]) -> int:
    """The median of integer depths, rounded half up (one depth to train a DDN at)."""
    return int(np.floor(np.median(depths) + 0.5))


def machine_record() -> dict[str, Any]:
    return {**environment(), "os": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "load_average_start": list(os.getloadavg())}


def data_record(data: Dataset) -> dict[str, Any]:
    return {"name": data.name, "n_train": data.n_train, "n_val": data.n_val, "n_test": int(len(data.x_test)),
            "validation": data.validation, "num_classes": data.num_classes, "input_shape": list(data.input_shape),
            "target_shape": list(data.target_shape), "inputs": data.inputs}


def save_weights(out: Path, ldn: FitResult, ddns: dict[int, FitResult], config: DemoConfig) -> None:
    """Every trained network's kept variables (and an LDN's depth logits), one msgpack each."""
    for method, depth, result in [("ldn", config.max_depth, ldn), *(("ddn", d, r) for d, r in ddns.items())]:
        for seed in config.seeds:
            state = result.best_state(result.index(method, seed))
            blob = {"variables": jax.device_get(state.variables),
                    "depth_logits": np.asarray(state.params["depth_logits"])}
            write_bytes(weights_path(out, method, depth, seed), flax.serialization.msgpack_serialize(blob))


def weights_path(out: str | Path, method: str, depth: int, seed: int) -> Path:
    return Path(out) / "weights" / f"{method}_D{depth}_s{seed}.msgpack"


def load_weights(out: str | Path, method: str, depth: int, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    """(variables, q) of a network `run_demo` trained (q: softmax of its depth logits)."""
    blob = flax.serialization.msgpack_restore(weights_path(out, method, depth, seed).read_bytes())
    return blob["variables"], np.asarray(jax.nn.softmax(np.asarray(blob["depth_logits"], np.float64)))


# ---------------------------------------------------------------------------- posteriors and learning


def ldn_posterior(result: FitResult, seed: int, config: DemoConfig) -> dict[str, Any]:
    """q(d), d_opt by the 95% rule, argmax q and expected depth, how it trained and whether it learnt."""
    i = result.index("ldn", seed)
    q = trained_q(result, i)
    summary = result.summary(i)
    return {"seed": seed, "q": q.tolist(), "d_opt": select_depth(q, "95"), "d_argmax": int(np.argmax(q)),
            "d_expected": select_depth(q, "expected"), "training": summary,
            "learnt": learnt_record(q, result.histories[i], summary["stopped"], config.train),
            "history": compact_history(result.histories[i])}


def trained_q(result: FitResult, index: int) -> np.ndarray:
    logits = np.asarray(result.best_state(index).params["depth_logits"], np.float64)
    return np.asarray(jax.nn.softmax(logits))


def compact_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per epoch: the losses and held-out metrics, and q(d) rounded to 4 digits."""
    return [{k: (np.round(v, 4).tolist() if k == "q" else v) for k, v in h.items()} for h in history]


def settled_epochs(history: list[dict[str, Any]], train: TrainConfig, method: str) -> list[dict[str, Any]]:
    """The epochs since the last change of learning rate. The drop itself improves the loss at
    once, so epochs on either side of it say nothing together about convergence at the final rate."""
    if not history:
        return []
    final = train.epoch_learning_rate(history[-1]["epoch"], method)
    first = len(history)
    while first > 0 and train.epoch_learning_rate(history[first - 1]["epoch"], method) == final:
        first -= 1
    return history[first:]


def learnt_record(q: np.ndarray | None, history: list[dict[str, Any]], stopped: str,
                  train: TrainConfig) -> dict[str, Any]:
    """Whether a network learnt (an LDN when `q` is given, else a DDN). Converged: early stopping
    ended it (the watched loss had not improved for `patience` epochs), or at the epoch cap the last
    quarter of the epochs since its last change of learning rate improved their best watched loss
    by less than PLATEAU (relative); fewer than 2 such epochs cannot show it. An LDN also needs q
    off uniform: max_d q(d) > 2 / (D + 1), twice the uniform mass."""
    key = f"{train.stop_on}_loss" if train.held_out else "train_loss"
    settled = settled_epochs(history, train, "ldn" if q is not None else "ddn")
    losses = np.array([h[key] for h in settled if np.isfinite(h.get(key, np.nan))], np.float64)
    improvement = float("nan")
    if losses.size >= 2:
        cut = losses.size - max(1, losses.size // 4)
        best, before = losses.min(), losses[:cut].min()
        improvement = float((before - best) / max(abs(best), 1e-12))
    converged = stopped == "patience" or (stopped == "max_epochs" and improvement < PLATEAU)
    out = {"stopped": stopped, "watched": key, "settled_from_epoch": settled[0]["epoch"] if settled else None,
           "last_quarter_improvement": improvement, "converged": bool(converged)}
    if q is not None:
        bar = 2.0 / len(q)
        out.update(q_max=float(np.max(q)), uniform_bar=bar, q_off_uniform=bool(np.max(q) > bar))
    out["learnt"] = bool(converged and out.get("q_off_uniform", True))
    return out


def ddn_training(result: FitResult, seed: int, config: DemoConfig) -> dict[str, Any]:
    i = result.index("ddn", seed)
    summary = result.summary(i)
    return {"seed": seed, "training": summary, "learnt": learnt_record(None, result.histories[i], summary["stopped"],
                                                                       config.train)}


def d_opt_summary(posteriors: list[dict[str, Any]]) -> dict[str, Any]:
    d95 = [p["d_opt"] for p in posteriors]
    return {"rule_95": d95, "argmax": [p["d_argmax"] for p in posteriors],
            "expected": [p["d_expected"] for p in posteriors], "median_95": median_depth(d95)}


def learnt_summary(posteriors: list[dict[str, Any]], ddns: dict[int, FitResult], config: DemoConfig) -> dict[str, Any]:
    ldn = {p["seed"]: p["learnt"]["learnt"] for p in posteriors}
    ddn = {f"{d}_s{s}": ddn_training(r, s, config)["learnt"]["converged"] for d, r in ddns.items()
           for s in config.seeds}
    return {"rule": LEARNT_RULE,
            "ldn": ldn, "ddn_converged": ddn, "all_ldns": all(ldn.values()), "all_ddns": all(ddn.values())}


# ---------------------------------------------------------------------------- test metrics and curves


def evaluate_all(data: Dataset, ldn: FitResult, ddns: dict[int, FitResult], posteriors: list[dict[str, Any]],
                 config: DemoConfig) -> dict[str, Any]:
    """Test metrics of every network, the curves per seed, their summaries and the paired tests."""
    per_seed = [evaluate_seed(data, ldn, p, config) for p in posteriors]
    ddn = {str(d): [ddn_metrics(data, r, s) for s in config.seeds] for d, r in ddns.items()}
    test = {"ldn_full": [s["full"] for s in per_seed], "ldn_pruned": [s["pruned"] for s in per_seed], "ddn": ddn}
    median = str(median_depth([p["d_opt"] for p in posteriors]))
    return {"test": {**test, "summary": test_summary(test)},
            "comparisons": comparisons(test["ldn_pruned"], test["ldn_full"], ddn[median], int(median)),
            "fixed_depth": [s["fixed_depth"] for s in per_seed], "early_exit": [s["early_exit"] for s in per_seed],
            "early_exit_summary": curve_summary([s["early_exit"] for s in per_seed], "threshold"),
            "fixed_depth_summary": curve_summary([s["fixed_depth"] for s in per_seed], "depth")}


def evaluate_seed(data: Dataset, ldn: FitResult, posterior: dict[str, Any], config: DemoConfig) -> dict[str, Any]:
    """One LDN on the test set: full, pruned at d_opt, every fixed depth, the early-exit curve."""
    state = ldn.best_state(ldn.index("ldn", posterior["seed"]))
    logits = eval_logits(ldn.model_config, jax.device_get(state.variables), data.x_test)
    q, d_opt, y = np.asarray(posterior["q"]), posterior["d_opt"], data.y_test
    fixed = [{"depth": d, **token_metrics(pruned_log_probs(logits, q, d), y)} for d in range(len(q))]
    return {"full": {"seed": posterior["seed"], **token_metrics(marginal_log_probs(logits, q), y)},
            "pruned": {"seed": posterior["seed"], "depth": d_opt, **fixed[d_opt]},
            "fixed_depth": fixed, "early_exit": early_exit_curve(logits, q, d_opt, y, config.thresholds)}


def early_exit_curve(logits: np.ndarray, q: np.ndarray, d_opt: int, labels: np.ndarray,
                     thresholds: tuple[float, ...]) -> list[dict[str, Any]]:
    """Per threshold: the mean depth used (over examples, or positions) and the metrics of the
    early-exit predictions of the LDN pruned at d_opt, from its outputs at every depth."""
    kept, folded = np.asarray(logits)[: d_opt + 1], fold_posterior(q, d_opt)
    rows = []
    for t in thresholds:
        log_probs, depth = exit_depths(kept, folded, t)
        depth = np.asarray(depth)
        rows.append({"threshold": t, "mean_depth": float(depth.mean()), "at_cap": float(np.mean(depth == d_opt)),
                     **token_metrics(np.asarray(log_probs), labels)})
    return rows


def ddn_metrics(data: Dataset, result: FitResult, seed: int) -> dict[str, Any]:
    state = result.best_state(result.index("ddn", seed))
    config, variables = last_head_only(result.model_config, jax.device_get(state.variables))
    logits = eval_logits(config, variables, data.x_test)
    return {"seed": seed, "depth": result.model_config.max_depth,
            **token_metrics(jax.nn.log_softmax(logits[-1]), data.y_test)}


METRICS = ("log_lik", "error", "ece")
HIGHER_IS_BETTER = {"log_lik": True, "error": False, "ece": False}


# Per-position targets (a language model's next tokens): every metric is per position (LL per
# token, token error, ECE over every position's prediction; `predictive_metrics`), and each
# record also has the perplexity exp(-LL per token) of its own seed, summarised over seeds like
# the others (the paired tests stay on the LL, of which perplexity is a monotone function).
PERPLEXITY = "perplexity"


def token_metrics(log_probs: Any, labels: np.ndarray) -> dict[str, float]:
    """`predictive_metrics`, and the perplexity exp(-LL per position) where labels are per position."""
    out = predictive_metrics(log_probs, labels)
    if np.ndim(labels) > 1:
        out[PERPLEXITY] = float(np.exp(-out["log_lik"]))
    return out


def summarised(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """The metrics a predictor's records are summarised over: METRICS, and perplexity where present."""
    return METRICS + ((PERPLEXITY,) if PERPLEXITY in rows[0] else ())


def mean_std(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"), "n": int(v.size)}


def test_summary(test: dict[str, Any]) -> dict[str, Any]:
    """Mean and sample std over seeds of each metric of each predictor."""
    groups = {"ldn_full": test["ldn_full"], "ldn_pruned": test["ldn_pruned"],
              **{f"ddn_{d}": rows for d, rows in test["ddn"].items()}}
    out = {name: {m: mean_std([r[m] for r in rows]) for m in summarised(rows)} for name, rows in groups.items()}
    out["ldn_pruned"]["depth"] = mean_std([r["depth"] for r in test["ldn_pruned"]])
    return out


def curve_summary(curves: list[list[dict[str, Any]]], key: str) -> list[dict[str, Any]]:
    """Mean and sample std over seeds, row by row, of a curve every seed has (same `key` values)."""
    rows = []
    for i, first in enumerate(curves[0]):
        row = {key: first[key]}
        for m in (*METRICS, PERPLEXITY, "mean_depth"):
            if m in first:
                row[m] = mean_std([c[i][m] for c in curves])
        rows.append(row)
    return rows


def comparisons(pruned: list[dict], full: list[dict], ddn: list[dict], ddn_depth: int) -> dict[str, Any]:
    """Paired t-tests over seeds (pruned - other) for each metric, Holm-adjusted within the table;
    the verdict says which is better where the adjusted p is below 5%."""
    pairs = [("pruned_vs_full", full), (f"pruned_vs_ddn_{ddn_depth}", ddn)]
    tests = {(name, m): _paired(pruned, other, m) for name, other in pairs for m in METRICS}
    ran = [k for k, t in tests.items() if t is not None]
    adjusted = dict(zip(ran, stats.holm([tests[k].p for k in ran]))) if ran else {}
    out: dict[str, Any] = {"ddn_depth": ddn_depth, "test": "paired t over seeds, Holm within the table"}
    for (name, m), t in tests.items():
        out.setdefault(name, {})[m] = None if t is None else {
            **dataclasses.asdict(t), "p_holm": float(adjusted[(name, m)]), "cells": stats.cells(t),
            "verdict": verdict_word(t.effect, float(adjusted[(name, m)]), m)}
    return out


def _paired(a: list[dict], b: list[dict], metric: str) -> stats.TTest | None:
    if len(a) < 2:
        return None
    return stats.paired_t([r[metric] for r in a], [r[metric] for r in b])


def verdict_word(effect: float, p_holm: float, metric: str) -> str:
    if not p_holm < stats.ALPHA:
        return "no significant difference"
    better = (effect > 0) == HIGHER_IS_BETTER[metric]
    return "pruned better" if better else "pruned worse"


# ---------------------------------------------------------------------------- wall time


def time_all(data: Dataset, ldn: FitResult, ddns: dict[int, FitResult], posteriors: list[dict[str, Any]],
             config: DemoConfig) -> dict[str, Any]:
    """Wall time of the predictors on trained weights, per timed seed, and the medians over seeds."""
    timed = posteriors[: config.timing_seeds] if config.timing_seeds else posteriors
    deepest = ddns.get(config.max_depth)
    per_seed = [time_seed(data, ldn, deepest, p, config) for p in timed]
    return {"examples": int(min(config.timing_examples, len(data.x_test))), "batches": list(config.timing_batches),
            "repeats": config.timing_repeats, "per_seed": per_seed, "median": timing_median(per_seed),
            "note": "seconds to predict `examples` test examples in batches of each size: the median of the "
                    "repeats after a warm-up (variants interleaved); then the median over seeds"}


def time_seed(data: Dataset, ldn: FitResult, deepest: FitResult | None, posterior: dict[str, Any],
              config: DemoConfig) -> dict[str, Any]:
    seed = posterior["seed"]
    variables = jax.device_get(ldn.best_state(ldn.index("ldn", seed)).variables)
    full = ldn.model_config
    pruned = prune(full, variables, np.asarray(posterior["q"]), posterior["d_opt"])
    ddn_net, ddn_vars = (last_head_only(deepest.model_config, jax.device_get(
        deepest.best_state(deepest.index("ddn", seed)).variables)) if deepest is not None
                         else last_head_only(full, variables))
    x = check_inputs(data.x_test[: config.timing_examples], full.input_shape, inputs=full.inputs)
    variants = {"ldn_full": forward_runner(full, variables),
                f"ddn_{config.max_depth}": forward_runner(ddn_net, ddn_vars),
                "ldn_pruned": forward_runner(pruned.config, pruned.variables),
                **{f"early_exit_{t:g}": exit_runner(pruned, t) for t in config.timing_thresholds}}
    rows = {}
    for batch in config.timing_batches:
        seconds, extra = interleaved_seconds(variants, x, batch, config.timing_repeats)
        rows[str(batch)] = {name: {"seconds": seconds[name], **extra.get(name, {})} for name in variants}
    return {"seed": seed, "d_opt": posterior["d_opt"], "by_batch": rows}


def forward_runner(config: Network, variables: dict[str, Any]):
    """x, batch -> (a blocking run over x in batches, None): a jitted eval-mode forward pass."""
    fn, variables = forward_fn(config), jax.device_put(variables)

    def run(x: np.ndarray, batch: int):
        outs = [fn(variables, x[i : i + batch]) for i in range(0, len(x), batch)]
        jax.block_until_ready(outs)
        return None

    return run


def exit_runner(pruned, threshold: float):
    """x, batch -> early exit over x (blocking: its results come back to the host), and what it
    computed: the mean depth used per example and the depth each batch ran to."""
    def run(x: np.ndarray, batch: int):
        r = early_exit(pruned, x, threshold, batch_size=batch)
        return {"mean_depth": float(r.depth.mean()), "computed_mean": float(r.computed.mean()),
                "computed": r.computed.tolist()}

    return run


def interleaved_seconds(variants: dict[str, Callable], x: np.ndarray, batch: int,
                        repeats: int) -> tuple[dict[str, float], dict[str, dict]]:
    """Median seconds of each variant over `repeats` rounds after a warm-up round; every round
    runs each variant once, in turn. Returns the medians and what each variant reported."""
    extra = {name: run(x, batch) for name, run in variants.items()}  # warm-up: compiles
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            t0 = time.perf_counter()
            run(x, batch)
            times[name].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}, {k: v for k, v in extra.items() if v}


def timing_median(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per batch size and variant: the median over seeds of the seconds (and of the depths)."""
    out: dict[str, dict[str, Any]] = {}
    for batch, rows in per_seed[0]["by_batch"].items():
        out[batch] = {}
        for name, first in rows.items():
            out[batch][name] = {k: float(np.median([s["by_batch"][batch][name][k] for s in per_seed]))
                                for k in ("seconds", "mean_depth", "computed_mean") if k in first}
    return out


# ---------------------------------------------------------------------------- the page


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _pm(cell: dict[str, float], spec: str = ".3f") -> str:
    if cell["n"] < 2 or not np.isfinite(cell["std"]):
        return format(cell["mean"], spec)
    return f"{cell['mean']:{spec}} ± {cell['std']:{spec}}"


def demo_markdown(result: dict[str, Any]) -> str:
    """The results page of one demonstration: whether it learnt, q(d) and d_opt per seed, the
    pruned / full / DDN table with the paired tests, the early-exit curve beside fixed-depth
    pruning, wall times, and how the run went (command, machine, phases)."""
    parts = [learnt_markdown(result), q_markdown(result), test_markdown(result), tests_markdown(result),
             curve_markdown(result), timing_markdown(result), run_markdown(result)]
    return "\n\n".join(parts) + "\n"


def learnt_markdown(result: dict[str, Any]) -> str:
    learnt, d = result["learnt"], result["data"]
    setting = (f"{d['name']}: {d['n_train']} training / {d['n_val']} validation / {d['n_test']} test examples; "
               f"max depth {result['max_depth']}, seeds {result['seeds']}.")
    failed = [f"seed {p['seed']} (max q {p['learnt']['q_max']:.3f} vs bar {p['learnt']['uniform_bar']:.3f}; "
              f"stopped: {p['learnt']['stopped']}, converged: {p['learnt']['converged']})"
              for p in result["ldn"] if not p["learnt"]["learnt"]]
    if failed:
        head = ("**Did not learn.** These LDNs did not learn their depth: " + "; ".join(failed) +
                ". Their q(d), d_opt and every comparison below are recorded as measured; they are not findings.")
    else:
        head = "Every LDN learnt: q(d) off uniform and the watched loss converged."
    ddn = [k for k, ok in learnt["ddn_converged"].items() if not ok]
    if ddn:
        head += f" DDNs not converged: {', '.join('DDN-' + k.replace('_s', ' seed ') for k in ddn)}."
    return f"{setting}\n\n{head} (Learnt: {learnt['rule']})"


def q_markdown(result: dict[str, Any]) -> str:
    depths = range(result["max_depth"] + 1)
    rows = [[str(p["seed"]), *(f"{v:.3f}" for v in p["q"]), str(p["d_opt"]), str(p["d_argmax"]),
             str(p["d_expected"])] for p in result["ldn"]]
    lines = _grid(["seed", *(f"q({d})" for d in depths), "d_opt (95%)", "argmax q", "expected"], rows)
    return ("q(d) per seed, and d_opt by the 95% rule, as argmax q and as the expected depth:\n\n" + "\n".join(lines)
            + "\n\n" + trajectory_markdown(result))


def trajectory_markdown(result: dict[str, Any]) -> str:
    """How each LDN got there: argmax q after every epoch, and the watched loss's relative change
    over the epochs the convergence rule reads."""
    rows = []
    for p in result["ldn"]:
        history, record = p["history"], p["learnt"]
        key, start = record["watched"], record.get("settled_from_epoch")
        settled = [h[key] for h in history if start is not None and h["epoch"] >= start]
        change = (f"{100 * (settled[-1] - settled[0]) / abs(settled[0]):+.2f}% over epochs {start}-"
                  f"{history[-1]['epoch']}" if len(settled) >= 2 else "–")
        kept = f"{record['stopped']}; kept epoch {p['training']['best_epoch']} of 0-{p['training']['epochs'] - 1}"
        rows.append([str(p["seed"]), " ".join(str(int(np.argmax(h["q"]))) for h in history), change, kept])
    lines = _grid(["seed", "argmax q after each epoch",
                   "watched loss: change over the epochs at the final learning rate", "stopped by"], rows)
    return "How q(d) moved during training:\n\n" + "\n".join(lines)


def _unit(result: dict[str, Any]) -> str:
    return "per position" if result["data"]["target_shape"] else "per example"


def test_markdown(result: dict[str, Any]) -> str:
    summary, per_position = result["test"]["summary"], bool(result["data"]["target_shape"])
    names = [("ldn_full", "LDN full (q-marginal)", "all"),
             ("ldn_pruned", "LDN pruned at d_opt", _pm(summary["ldn_pruned"]["depth"], ".1f"))]
    names += [(f"ddn_{d}", f"DDN-{d}", str(d)) for d in result["ddn_depths"]]
    rows = []
    for key, label, depth in names:
        s = summary[key]
        row = [label, depth, _pm(s["log_lik"]), _pm(s["error"]), _pm(s["ece"])]
        rows.append(row + ([_perplexity(s)] if per_position else []))
    header = ["predictor", "depth", f"test LL {_unit(result)}", "error", "ECE"] + (["perplexity"] if per_position else [])
    note = " Perplexity is exp(-LL per token), each seed's own, then mean ± std." if per_position else ""
    return (f"Test set, mean ± sample std over {len(result['seeds'])} seeds:{note}\n\n"
            + "\n".join(_grid(header, rows)))


def _perplexity(summary: dict[str, Any]) -> str:
    """A perplexity cell: mean ± std over seeds (results files before it was recorded: exp(-mean LL))."""
    return _pm(summary[PERPLEXITY], ".2f") if PERPLEXITY in summary else f"{np.exp(-summary['log_lik']['mean']):.2f}"


def tests_markdown(result: dict[str, Any]) -> str:
    comp = result["comparisons"]
    rows = []
    for name in (k for k in comp if k.startswith("pruned_vs")):
        other = "LDN full" if name == "pruned_vs_full" else f"DDN-{comp['ddn_depth']}"
        for m, t in comp[name].items():
            if t is None:
                rows.append([f"pruned - {other}", m, "n/a (one seed)", "", "", "", "", ""])
                continue
            c = t["cells"]
            rows.append([f"pruned - {other}", m, c["effect"], c["95% CI"], c["n"], c["p"], f"{t['p_holm']:.2g}",
                         t["verdict"]])
    lines = _grid(["comparison", "metric", "mean difference", "95% CI", "n", "p", "Holm p", "verdict"], rows)
    return (f"Paired t-tests over seeds (pruned at each seed's d_opt; DDN at the median d_opt, "
            f"{comp['ddn_depth']}), Holm-adjusted within the table:\n\n" + "\n".join(lines))


def curve_markdown(result: dict[str, Any]) -> str:
    ee = [[f"{r['threshold']:g}", _pm(r["mean_depth"], ".2f"), _pm(r["error"]), _pm(r["log_lik"]), _pm(r["ece"])]
          + _curve_perplexity(r) for r in result["early_exit_summary"]]
    fixed = [[str(r["depth"]), _pm(r["error"]), _pm(r["log_lik"]), _pm(r["ece"])] + _curve_perplexity(r)
             for r in result["fixed_depth_summary"]]
    more = ["perplexity"] if PERPLEXITY in result["early_exit_summary"][0] else []
    return ("Early exit on the LDN pruned at d_opt: each example stops at the first depth whose renormalised "
            f"q-marginal reaches the threshold (1: never early), mean over seeds ({_unit(result)}):\n\n"
            + "\n".join(_grid(["threshold", "mean depth used", "error", "test LL", "ECE", *more], ee))
            + "\n\nBeside it, every example pruned to one fixed depth d (the LDN cut after block d, "
              "its q folded onto d):\n\n" + "\n".join(_grid(["depth", "error", "test LL", "ECE", *more], fixed)))


def _curve_perplexity(row: dict[str, Any]) -> list[str]:
    return [_pm(row[PERPLEXITY], ".2f")] if PERPLEXITY in row else []


def timing_markdown(result: dict[str, Any]) -> str:
    timing = result["timing"]
    med = timing["median"]
    names = list(next(iter(med.values())))
    rows = []
    for name in names:
        cells = [name.replace("_", " ")]
        for batch in med:
            r = med[batch][name]
            depth = (f", computed to {r['computed_mean']:.1f} (used {r['mean_depth']:.1f})"
                     if "computed_mean" in r else "")
            cells.append(f"{r['seconds']:.3f} s ({r['seconds'] / med[batch]['ldn_full']['seconds']:.2f}x full){depth}")
        rows.append(cells)
    lines = _grid(["predictor", *(f"batch {b}" for b in med)], rows)
    return (f"Wall time to predict {timing['examples']} test examples on the trained weights (median of "
            f"{timing['repeats']} repeats after a warm-up, then over {len(timing['per_seed'])} seed(s)); for "
            "early exit, the mean depth each batch computed to and the mean depth examples used:\n\n"
            + "\n".join(lines) + "\n\n" + batching_sentence(result))


def batching_sentence(result: dict[str, Any]) -> str:
    """What batching does to early exit's wall-time gain, in numbers from this run."""
    med = result["timing"]["median"]
    exits = [n for n in next(iter(med.values())) if n.startswith("early_exit_") and n != "early_exit_1"]
    if not exits:
        return ""
    name, d_opt = exits[0], float(np.median([s["d_opt"] for s in result["timing"]["per_seed"]]))
    said = []
    for batch, rows in med.items():
        r, p = rows[name], rows["ldn_pruned"]
        line = (f"at batch {batch} it took {r['seconds'] / p['seconds']:.2f}x the pruned forward pass's time, its "
                f"batches computing to depth {r['computed_mean']:.1f} on average while examples used "
                f"{r['mean_depth']:.1f}")
        if r["computed_mean"] >= 0.95 * d_opt:
            line += " (batches this large ran to d_opt, or within 5% of it: early exit saved almost no blocks)"
        said.append(line)
    return (f"Early exit at threshold {name.rsplit('_', 1)[1]} (median d_opt of the timed seeds {d_opt:g}): "
            + "; ".join(said) + ". "
            "A batch runs as deep as its deepest example, so the blocks a batch saves are those beyond the depth it "
            "computed to, not beyond the mean depth its examples used (what batches of one would compute), and "
            "smaller batches pay more per-call overhead.")


def run_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in result["phases_seconds"].items())
    return (f"Command: `{result['command']}`. Machine: {m['os']}, {m['cpus']} CPUs, JAX {m['jax']} on "
            f"{m['platform']} ({m['devices']} devices), load average {m['load_average_start'][0]:.1f} at the start and "
            f"{m['load_average_end'][0]:.1f} at the end. Wall time {result['wall_seconds']:.0f} s: {phases}."
            + resumed_markdown(result))


def resumed_markdown(result: dict[str, Any]) -> str:
    """Where a call resumed training from checkpoints, each program's wall time over all its calls."""
    def program(key: str) -> str:  # 'ldn' -> 'LDNs', 'ddn_2' -> 'DDN-2'
        return "LDNs" if key == "ldn" else "DDN-" + key.split("_", 1)[1]

    resumed = {k: e for k, e in result.get("resumed_from_epoch", {}).items() if e}
    if not resumed:
        return ""
    after = ", ".join(f"{program(k)} after epoch {e}" for k, e in resumed.items())
    total = ", ".join(f"{program(k)} {v:.0f} s" for k, v in result["training_seconds"].items())
    return (f" This call resumed training from checkpoints ({after}); each training program's wall time over "
            f"all its calls, compilation included: {total}.")
