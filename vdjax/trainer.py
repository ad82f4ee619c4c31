"""The image protocol: a host-driven epoch loop with early stopping, checkpoints and resume.

Image data sets do not fit the all-on-device loop of `vdjax.loop` (60k images, hours of
training), so here the host feeds batches to the one jitted train step (`make_train_step`),
evaluates the test ELBO after every epoch, keeps the best parameters (early stopping on the
test ELBO with `patience`, as the paper) and checkpoints with Orbax after every epoch.

Resuming is exact: the shuffle of epoch e is drawn from (seed, e) alone, and the checkpoint
holds the optimiser state, the best parameters and the history, so a run killed after epoch
e and resumed ends where an uninterrupted run ends.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vdjax.checkpoints import CheckpointError, Checkpoints, fingerprint  # noqa: F401 (CheckpointError is re-exported)
from vdjax.data.core import Dataset
from vdjax.data.images import batches
from vdjax.metrics import error_rate, log_likelihood, marginal_log_probs
from vdjax.models import ModelConfig
from vdjax.posterior import ddn_loss, negative_elbo
from vdjax.prune import eval_logits
from vdjax.runtime import numerics
from vdjax.train import (
    TrainConfig,
    TrainState,
    depth_weights,
    init_state,
    make_optimizer,
    make_train_step,
)

IMAGE_PROTOCOL = TrainConfig(
    batch_size=512, learning_rate=0.1, momentum=0.5, max_epochs=500, patience=30, lr_drop_epoch=30,
    lr_drop_factor=0.1,
)
"""The paper's image protocol. The drop factor was lost from the paper's text; 0.1 is assumed."""


@dataclasses.dataclass
class TrainResult:
    """The kept (best test-ELBO) state and what happened on the way."""

    state: TrainState
    best_epoch: int
    epochs: int  # epochs completed
    stopped: str  # 'patience' | 'max_epochs' | 'nonfinite' | 'interrupted'
    history: list[dict[str, float]]  # one row per epoch
    resumed_from: int | None  # epochs already done when this call started (None: fresh run)
    train_seconds: float  # wall time of the epochs run by this call


def test_objective(
    model_config: ModelConfig, train_config: TrainConfig, state: TrainState, x: np.ndarray, y: np.ndarray,
    n_train: int, batch_size: int = 1024,
) -> dict[str, float]:
    """Eval-mode negative ELBO per point on (x, y), the early-stopping criterion, with the
    marginal log-likelihood and error (for a DDN: its cross-entropy, log-likelihood and error)."""
    logits = jnp.asarray(eval_logits(model_config, state.variables, x, batch_size))
    labels = jnp.asarray(y)
    if train_config.method == "ldn":
        loss, _ = negative_elbo(logits, labels, state.params["depth_logits"], n_train, train_config.prior_decay)
    else:
        loss, _ = ddn_loss(logits, labels)
    log_probs = marginal_log_probs(logits, depth_weights(model_config, state, train_config.method))
    return {
        "test_loss": float(loss),
        "test_log_lik": float(log_likelihood(log_probs, labels)),
        "test_error": float(error_rate(log_probs, labels)),
    }


def fit_dataset(
    data: Dataset,
    model_config: ModelConfig,
    train_config: TrainConfig = IMAGE_PROTOCOL,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Trains one network on `data` with the image protocol; resumes from `checkpoint_dir`.

    stop_after_epochs: stop (as if killed) once this many epochs are done in total; the
    checkpoint is left for a later call to resume from.
    """
    if model_config.input_shape != data.input_shape or model_config.num_classes != data.num_classes:
        raise ValueError(
            f"model expects inputs {model_config.input_shape} with {model_config.num_classes} classes, "
            f"data set {data.name!r} has {data.input_shape} with {data.num_classes}"
        )
    n_train = data.n_train
    batch_size = min(train_config.batch_size, n_train)
    steps_per_epoch = n_train // batch_size
    optimizer = make_optimizer(train_config, steps_per_epoch)
    step = make_train_step(model_config, train_config, optimizer, n_train)
    fresh = init_state(jax.random.key(seed), model_config, optimizer)
    ckpt = Checkpoints(checkpoint_dir) if checkpoint_dir is not None else None
    saved = None
    if ckpt is not None:  # the data digest costs seconds on SVHN: only when checkpointing
        run_id = _run_id(data, model_config, train_config, seed)
        saved = ckpt.restore({"train": fresh, "best": _host(fresh)}, run_id)
    if saved is not None:
        (state, best), meta = (saved[0]["train"], saved[0]["best"]), saved[1]
        resumed_from: int | None = meta["epochs"]
        log(f"resuming {data.name} {train_config.method} D={model_config.max_depth} seed {seed} "
            f"after epoch {meta['epochs']} (best {meta['best_epoch']})")
    else:
        state, best = fresh, _host(fresh)
        meta = {"epochs": 0, "best_epoch": -1, "best_loss": float("inf"), "stopped": "", "history": []}
        resumed_from = None
    history: list[dict[str, float]] = meta["history"]

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=train_config.max_epochs, initial=meta["epochs"], leave=False, unit="epoch",
                   desc=f"{data.name} {train_config.method} D={model_config.max_depth} s{seed}")
    start = time.perf_counter()
    x, y = data.x_train, data.y_train
    while not meta["stopped"]:
        if stop_after_epochs is not None and meta["epochs"] >= stop_after_epochs:
            break
        epoch = meta["epochs"]
        t0 = time.perf_counter()
        rng = np.random.default_rng([seed, epoch])
        losses = []
        for idx in batches(n_train, batch_size, rng, drop_last=True):
            state, metrics = step(state, x[idx], y[idx])
            losses.append(metrics["loss"])
        train_loss = float(np.mean(jax.device_get(losses)))
        row = {"epoch": epoch, "train_loss": train_loss}
        if np.isfinite(train_loss):
            row.update(test_objective(model_config, train_config, state, data.x_test, data.y_test, n_train))
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        meta["epochs"] = epoch + 1
        if not np.isfinite(train_loss) or not np.isfinite(row.get("test_loss", np.nan)):
            warnings.warn(f"non-finite loss at epoch {epoch}: stopping, keeping the parameters of epoch "
                          f"{meta['best_epoch']}", RuntimeWarning, stacklevel=2)
            meta["stopped"] = "nonfinite"
        else:
            if row["test_loss"] < meta["best_loss"]:
                meta["best_loss"], meta["best_epoch"], best = row["test_loss"], epoch, _host(state)
            if meta["epochs"] >= train_config.max_epochs:
                meta["stopped"] = "max_epochs"
            elif meta["epochs"] - 1 - meta["best_epoch"] >= train_config.patience:
                meta["stopped"] = "patience"
        if ckpt is not None and meta["stopped"] != "nonfinite":
            ckpt.save(meta["epochs"], {"train": state, "best": best}, meta, run_id)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(test_loss=f"{row.get('test_loss', float('nan')):.4f}",
                            err=f"{row.get('test_error', float('nan')):.3f}", best=meta["best_epoch"])
    if bar is not None:
        bar.close()
    if ckpt is not None:
        ckpt.close()
    kept = state.replace(params=jax.tree_util.tree_map(jnp.asarray, best["params"]),
                         batch_stats=jax.tree_util.tree_map(jnp.asarray, best["batch_stats"]))
    return TrainResult(
        state=kept,
        best_epoch=meta["best_epoch"],
        epochs=meta["epochs"],
        stopped=meta["stopped"] or "interrupted",
        history=history,
        resumed_from=resumed_from,
        train_seconds=time.perf_counter() - start,
    )


def _host(state: TrainState) -> dict[str, Any]:
    """A host copy of the parameters and statistics (the train step donates device buffers)."""
    return jax.device_get({"params": state.params, "batch_stats": state.batch_stats})


def _run_id(data: Dataset, model_config: ModelConfig, train_config: TrainConfig, seed: int) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed: the data themselves, configs and seed."""
    return {
        "data": [data.name, fingerprint(data.x_train, data.y_train, data.x_test, data.y_test)],
        "model_config": repr(model_config),
        "train_config": repr(train_config),
        "seed": int(seed),
        **numerics(),  # another backend or library version computes other floats
    }
