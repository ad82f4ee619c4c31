"""Running and summarising learnt-depth networks on in-memory data sets (spirals).

`run_in_memory` trains every seed with the compiled loop, then evaluates each seed's kept
parameters: q(d), d_opt (95% rule, argmax q and expected depth), marginal test metrics of the
full and the pruned network, and test metrics of every single depth. The seeds share one data
set or each train and test on their own (`data` a list, one per seed). Experiment scripts and
the main job call it and only choose configs, files and plots.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import flax.serialization
import jax
import numpy as np

from vdjax.data import Dataset
from vdjax.depth.metrics import predictive_metrics
from vdjax.depth.prune import d_opt_95, expected_depth, predict_log_probs, prune
from vdjax.nn.models import Model, eval_logits
from vdjax.training.config import RunOptions, TrainConfig
from vdjax.training.objective import evaluate
from vdjax.training.runner import FitResult, fit


@dataclasses.dataclass
class SeedResult:
    """Everything measured for one trained network (one seed)."""

    seed: int
    q: np.ndarray
    d_opt: int
    d_expected: int
    test: dict[str, Any]  # marginal over all depths + per-depth metrics
    test_pruned: dict[str, float]  # marginal over d <= d_opt after pruning
    test_pruned_expected: dict[str, float]
    best_epoch: int
    epochs: int
    best_loss: float
    nonfinite: bool
    # Fields added later: records written before them lack them.
    data_seed: int | None  # the seed of the data this network trained and was tested on (None: not given)
    d_argmax: int  # argmax q(d): the paper's pruning rule in low-data regimes (the spirals)
    test_pruned_argmax: dict[str, float]  # marginal over d <= d_argmax after pruning


@dataclasses.dataclass
class RunResult:
    model_config: Model
    train_config: TrainConfig
    seeds: list[SeedResult]
    fit: FitResult
    train_seconds: float

    def summary(self) -> dict[str, Any]:
        """A JSON-ready record (configs, per-seed metrics, means and stds)."""
        per_seed = [dataclasses.asdict(s) for s in self.seeds]
        stats = {k: [getattr(s, k) for s in self.seeds] for k in ("d_opt", "d_expected")}
        stats["test_log_lik"] = [s.test["log_lik"] for s in self.seeds]
        stats["test_error"] = [s.test["error"] for s in self.seeds]
        stats["pruned_log_lik"] = [s.test_pruned["log_lik"] for s in self.seeds]
        stats["pruned_error"] = [s.test_pruned["error"] for s in self.seeds]
        stats["d_argmax"] = [s.d_argmax for s in self.seeds]
        stats["argmax_log_lik"] = [s.test_pruned_argmax["log_lik"] for s in self.seeds]
        stats["argmax_error"] = [s.test_pruned_argmax["error"] for s in self.seeds]
        return {
            "model_config": self.model_config.describe(),
            "train_config": dataclasses.asdict(self.train_config),
            "train_seconds": self.train_seconds,
            "environment": self.fit.layout,  # platform, versions, devices, seeds per vmapped batch
            "mean": {k: float(np.mean(v)) for k, v in stats.items()},
            "std": {k: float(np.std(v)) for k, v in stats.items()},
            "seeds": per_seed,
        }

    def variables_bytes(self, seed_index: int = 0) -> bytes:
        """The kept parameters of one seed, serialised with flax (msgpack)."""
        state = self.fit.best_state(seed_index)
        return flax.serialization.to_bytes({"variables": state.variables, "depth_logits": state.params["depth_logits"]})


def depth_verdict(d_opt: int, d_expected: int, test: dict[str, Any], test_pruned: dict[str, Any]) -> str:
    """One network's learnt depth and test metrics in three lines: what the main job prints for a
    seed, and what README's quick start renders from its results.json."""
    return (f"d_opt (95% rule) = {d_opt}   expected depth = {d_expected}\n"
            "test accuracy / log-likelihood, marginal over all depths : "
            f"{1 - test['error']:.4f} / {test['log_lik']:.4f}\n"
            f"test accuracy / log-likelihood, pruned to d <= {d_opt:<2d}       : "
            f"{1 - test_pruned['error']:.4f} / {test_pruned['log_lik']:.4f}\n")


def d_argmax(q: np.ndarray) -> int:
    """The most probable depth, argmax q(d) (the shallowest on ties): the paper's pruning rule in
    low-data regimes such as the spirals, where the 95% rule (`d_opt_95`, the shallowest depth
    with q(d) >= 0.95 max q) is its rule for medium and big data. Never below the 95% rule's."""
    return int(np.argmax(np.asarray(q)))


def pruned_metrics(
    model_config: Model, variables: dict, q: np.ndarray, depth: int, x: np.ndarray, y: np.ndarray
) -> dict[str, float]:
    """Marginal test log-likelihood, error and ECE of the network pruned to `depth`."""
    pruned = prune(model_config, variables, q, depth)
    return predictive_metrics(predict_log_probs(pruned.config, pruned.variables, pruned.q, x), y)


@contextlib.contextmanager
def epoch_progress(total: int, desc: str = "training", leave: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar over epochs, and the `progress(done, total)` callback of `fit` that moves it."""
    from tqdm import tqdm

    with tqdm(total=total, unit="epoch", desc=f"{desc} (compile first)", leave=leave) as bar:
        def progress(done: int, total: int) -> None:
            bar.set_description(desc)
            bar.update(done - bar.n)

        yield progress


def run_in_memory(data: Dataset | Sequence[Dataset], model_config: Model, train_config: TrainConfig,
                  seeds: list[int], data_seeds: Sequence[int] | None = None,
                  options: RunOptions = RunOptions()) -> RunResult:
    """Trains `len(seeds)` networks in one compiled, seed-vmapped program and evaluates them.

    data: one data set that every seed trains and is tested on, or a list of one per seed (same
    sizes) where seed i trains on `data[i].x_train` and is tested on `data[i].x_test`.
    data_seeds: what drew each seed's data, recorded as its `data_seed` (None: not recorded).
    options: how `vdjax.fit` runs (checkpoints to resume from, chunking, progress, metrics stream).
    """
    shared = isinstance(data, Dataset)
    datasets = [data] * len(seeds) if shared else list(data)
    if len(datasets) != len(seeds):
        raise ValueError(f"one data set per seed: {len(seeds)} seeds, {len(datasets)} data sets")
    if data_seeds is not None and len(data_seeds) != len(seeds):
        raise ValueError(f"one data seed per seed: {len(seeds)} seeds, {len(data_seeds)} data seeds")
    for d in datasets:
        if model_config.input_shape != d.input_shape or model_config.num_classes != d.num_classes:
            raise ValueError(
                f"model expects inputs {model_config.input_shape} with {model_config.num_classes} classes, "
                f"data set {d.name!r} has {d.input_shape} with {d.num_classes}"
            )
    if shared:
        x, y = data.x_train, data.y_train
    else:
        if len({d.x_train.shape for d in datasets}) != 1:
            raise ValueError(f"per-seed data sets must have equal train sizes, got {[d.n_train for d in datasets]}")
        x, y = np.stack([d.x_train for d in datasets]), np.stack([d.y_train for d in datasets])
    result = fit(model_config, train_config, (x, y), seeds, options)
    method = train_config.method
    seed_results = []
    for i, seed in enumerate(seeds):
        state = result.best_state(i)
        own = datasets[i]
        test = evaluate(model_config, state, own.x_test, own.y_test, method)
        if method == "ldn":
            q = np.asarray(state.q, dtype=np.float64)
        else:
            q = np.eye(model_config.max_depth + 1)[model_config.max_depth]
        d95, dexp, dmax = d_opt_95(q), expected_depth(q), d_argmax(q)
        pruned95 = pruned_metrics(model_config, state.variables, q, d95, own.x_test, own.y_test)
        seed_results.append(SeedResult(
            seed=int(seed),
            q=q,
            d_opt=d95,
            d_expected=dexp,
            test=test,
            test_pruned=pruned95,
            test_pruned_expected=pruned_metrics(model_config, state.variables, q, dexp, own.x_test, own.y_test),
            best_epoch=int(result.host.best_epoch[i]),
            epochs=int(result.host.epoch[i]),
            best_loss=float(result.host.best_loss[i]),
            nonfinite=bool(result.host.nonfinite[i]),
            data_seed=None if data_seeds is None else int(data_seeds[i]),
            d_argmax=dmax,
            test_pruned_argmax=pruned95 if dmax == d95 else pruned_metrics(model_config, state.variables, q, dmax,
                                                                           own.x_test, own.y_test),
        ))
    return RunResult(model_config, train_config, seed_results, result, result.seconds)


def input_grid(x_train: np.ndarray, resolution: int = 120) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A square grid over the 2-D input plane around the training points: (gx, gy, points [R*R, 2])."""
    lo, hi = x_train.min(0) - 0.5, x_train.max(0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    return gx, gy, np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def depth_probs(model_config: Model, variables: dict, points: np.ndarray) -> np.ndarray:
    """p(class 1 | x, d) at every depth d: [max_depth + 1, len(points)]."""
    return np.asarray(jax.nn.softmax(eval_logits(model_config, variables, points), axis=-1))[..., 1]


def decision_grid(
    model_config: Model, variables: dict, q: np.ndarray, x_train: np.ndarray, depths: list[int],
    resolution: int = 120,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """p(class 1 | x) on a grid over the input plane: one map per listed depth, then the
    marginal of the network pruned to d_opt (95% rule). Returns (gx, gy, probs [K, R, R], titles)."""
    gx, gy, pts = input_grid(x_train, resolution)
    probs = depth_probs(model_config, variables, pts)
    maps = [probs[d].reshape(gx.shape) for d in depths]
    titles = [f"d = {d}  q = {q[d]:.3f}" for d in depths]
    d95 = d_opt_95(q)
    pruned = prune(model_config, variables, q, d95)
    marg = np.exp(predict_log_probs(pruned.config, pruned.variables, pruned.q, pts))[:, 1]
    maps.append(marg.reshape(gx.shape))
    titles.append(f"marginal, d <= d_opt = {d95}")
    return gx, gy, np.stack(maps), titles
