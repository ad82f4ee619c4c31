"""The whole training protocol as one compiled program, vmapped over seeds.

Small data sets (spirals) live on the device, so epochs, shuffling, early stopping and
best-parameter tracking all run inside `lax.while_loop`; repeats with different seeds run
together under `vmap` from a single compile. The host only calls the compiled loop in
chunks of epochs, to draw a progress bar and stop once every seed has stopped.

Batching: an epoch is split into ceil(N / batch_size) equal batches of N // n_batches points
after a fresh shuffle (static shapes under `jit`); fewer than n_batches points sit out each
epoch, a different few every time. At the paper's spirals sizes (200 train points, batch 512)
this is exactly full-batch gradient descent.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from vdjax.checkpoints import Checkpoints, fingerprint
from vdjax.data.core import check_inputs, check_labels
from vdjax.models import ModelConfig
from vdjax.runtime import environment, numerics, seed_devices, seed_sharding
from vdjax.train import TrainConfig, TrainState, init_state, make_optimizer, train_step
from vdjax.validate import MAX_SEED


class LoopState(flax.struct.PyTreeNode):
    """Everything the compiled loop carries for one seed."""

    train: TrainState
    best_params: dict[str, Any]
    best_batch_stats: dict[str, Any]
    best_loss: jax.Array
    best_epoch: jax.Array
    epoch: jax.Array  # epochs completed
    done: jax.Array  # stopped: patience exhausted, max_epochs reached or non-finite loss
    nonfinite: jax.Array  # stopped because the loss became NaN/inf (best parameters kept)
    key: jax.Array  # for shuffling
    history: jax.Array  # [max_epochs] training loss (the negative train ELBO) per epoch


@dataclasses.dataclass(frozen=True)
class Batching:
    n_batches: int
    batch_size: int

    @staticmethod
    def for_size(n_train: int, batch_size: int) -> "Batching":
        n_batches = math.ceil(n_train / batch_size)
        return Batching(n_batches, n_train // n_batches)


def init_loop_state(key: jax.Array, model_config: ModelConfig, train_config: TrainConfig, n_train: int) -> LoopState:
    init_key, shuffle_key = jax.random.split(key)
    batching = Batching.for_size(n_train, train_config.batch_size)
    state = init_state(init_key, model_config, make_optimizer(train_config, batching.n_batches))
    return LoopState(
        train=state,
        best_params=state.params,
        best_batch_stats=state.batch_stats,
        best_loss=jnp.array(jnp.inf, jnp.float32),
        best_epoch=jnp.array(-1, jnp.int32),
        epoch=jnp.array(0, jnp.int32),
        done=jnp.array(False),
        nonfinite=jnp.array(False),
        key=shuffle_key,
        history=jnp.full((train_config.max_epochs,), jnp.nan, jnp.float32),
    )


def _epoch(
    loop: LoopState, x: jax.Array, y: jax.Array, *, model_config: ModelConfig, train_config: TrainConfig
) -> LoopState:
    n_train = x.shape[0]
    batching = Batching.for_size(n_train, train_config.batch_size)
    step = functools.partial(
        train_step,
        model_config=model_config,
        train_config=train_config,
        optimizer=make_optimizer(train_config, batching.n_batches),
        n_train=n_train,
    )
    key, perm_key = jax.random.split(loop.key)
    if batching.n_batches == 1 and batching.batch_size == n_train:
        # Full batch: order does not matter, and the loss belongs to the pre-step parameters.
        new, metrics = step(loop.train, x, y)
        loss, candidate = metrics["loss"], loop.train
    else:
        idx = jax.random.permutation(perm_key, n_train)[: batching.n_batches * batching.batch_size]
        idx = idx.reshape(batching.n_batches, batching.batch_size)

        def body(state, batch_idx):
            state, metrics = step(state, x[batch_idx], y[batch_idx])
            return state, metrics["loss"]

        new, losses = jax.lax.scan(body, loop.train, idx)
        loss, candidate = jnp.mean(losses), new  # as the reference: parameters after the epoch
    finite = jnp.isfinite(loss)
    improved = finite & (loss < loop.best_loss)
    pick = lambda a, b: jax.tree_util.tree_map(lambda u, v: jnp.where(improved, u, v), a, b)  # noqa: E731
    best_epoch = jnp.where(improved, loop.epoch, loop.best_epoch)
    epoch = loop.epoch + 1
    done = (~finite) | (epoch >= train_config.max_epochs) | (epoch - best_epoch > train_config.patience)
    return loop.replace(
        # A non-finite loss freezes the run where it was: nothing after it is kept.
        train=jax.tree_util.tree_map(lambda u, v: jnp.where(finite, u, v), new, loop.train),
        best_params=pick(candidate.params, loop.best_params),
        best_batch_stats=pick(candidate.batch_stats, loop.best_batch_stats),
        best_loss=jnp.where(improved, loss, loop.best_loss),
        best_epoch=best_epoch,
        epoch=epoch,
        done=done,
        nonfinite=~finite,
        key=key,
        history=loop.history.at[loop.epoch].set(loss),
    )


def run_epochs(
    loop: LoopState, x: jax.Array, y: jax.Array, stop_epoch: jax.Array, *, model_config: ModelConfig,
    train_config: TrainConfig,
) -> LoopState:
    """Runs epochs until `stop_epoch` or until this seed's run has stopped."""
    epoch = functools.partial(_epoch, x=x, y=y, model_config=model_config, train_config=train_config)
    return jax.lax.while_loop(lambda s: (~s.done) & (s.epoch < stop_epoch), epoch, loop)


@dataclasses.dataclass
class FitResult:
    """Per-seed results of `fit`; every array has a leading seed axis."""

    model_config: ModelConfig
    train_config: TrainConfig
    state: LoopState
    seconds: float = 0.0  # wall time of training, compile included, over every call that resumed it
    layout: dict[str, Any] = dataclasses.field(default_factory=dict)  # what the floats depend on (see `fit`)

    @property
    def n_seeds(self) -> int:
        return int(self.state.epoch.shape[0])

    def best_state(self, seed: int) -> TrainState:
        """The kept (best-ELBO) parameters of one seed as a TrainState (optimiser state is the last)."""
        take = lambda t: jax.tree_util.tree_map(lambda a: a[seed], t)  # noqa: E731
        return take(self.state.train).replace(
            params=take(self.state.best_params), batch_stats=take(self.state.best_batch_stats)
        )


def fit(
    model_config: ModelConfig,
    train_config: TrainConfig,
    x: np.ndarray,
    y: np.ndarray,
    seeds: list[int] | np.ndarray,
    chunk_epochs: int | None = 250,
    progress: Callable[[int, int], None] | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every_s: float = 60.0,
) -> FitResult:
    """Trains one network per seed with the full protocol, all seeds in one compiled program.

    x, y: one training set shared by all seeds ([N, ...], [N]) or one per seed ([S, N, ...],
    [S, N]). `chunk_epochs=None` runs everything in a single call; otherwise the host wakes
    every `chunk_epochs` epochs to report `progress(epochs_done, max_epochs)` and to stop early
    when every seed is done.

    Reproducibility: the same seeds with the same settings on the same machine give bit-identical
    results. A seed's numbers also depend on how many seeds share its device's vmapped batch
    (other batch sizes run other float kernels): it matches the same seed trained alone only
    when that batch is one seed too (e.g. 2 seeds on 2 devices), and otherwise agrees to float
    rounding at first and drifts apart later. That batch is set by the number of seeds, the
    device count and, once seeds stop and leave it, by `chunk_epochs`; all three are in the
    checkpoint's run id and in `FitResult.layout`.

    checkpoint_dir: between chunks (at most every `checkpoint_every_s` seconds, 0: every chunk)
    the state of every seed is saved there, and a later call with the same data, configs and
    seeds resumes from it exactly; one from another run raises `CheckpointError`. The caller
    deletes it once the results are safe.
    """
    start = time.monotonic()
    seeds = np.asarray(seeds)
    if seeds.ndim != 1 or seeds.size == 0:
        raise ValueError(f"seeds must be a non-empty 1-D list, got {seeds!r}")
    if seeds.dtype.kind not in "iu" or seeds.min() < 0 or seeds.max() > MAX_SEED:
        raise ValueError(f"seeds must be integers in [0, {MAX_SEED}] (uint32 PRNG keys), got {seeds.tolist()}")
    seeds = seeds.astype(np.uint32)
    x, y = np.asarray(x), np.asarray(y)
    per_seed_data = x.ndim == len(model_config.input_shape) + 2
    data_axis = 0 if per_seed_data else None
    if per_seed_data and (x.shape[0] != seeds.size or y.shape[0] != seeds.size):
        raise ValueError(f"per-seed data needs a leading axis of {seeds.size}, got {x.shape[0]} and {y.shape[0]}")
    n_train = x.shape[1] if per_seed_data else x.shape[0]
    flat_x = check_inputs(np.reshape(x, (-1, *model_config.input_shape)) if per_seed_data else x, model_config.input_shape)
    flat_y = check_labels(np.reshape(y, (-1,)), model_config.num_classes, len(flat_x))
    x, y = flat_x.reshape(np.shape(x)), flat_y.reshape(np.shape(y))

    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
    loop = _compiled_init(model_config, train_config, n_train)(keys)
    run = _compiled_run(model_config, train_config, data_axis)
    active = np.arange(seeds.size)  # original positions of the seeds still in `loop`
    parts: list[tuple[np.ndarray, LoopState]] = []  # seeds compacted out, with their final state
    stop, earlier_seconds = 0, 0.0  # where a resumed run stood, and the time it had taken
    ckpt = Checkpoints(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None:
        run_id = _run_id(model_config, train_config, seeds, x, y, chunk_epochs or train_config.max_epochs)
        saved = ckpt.restore(_savable(loop), run_id)
        if saved is not None:
            full, meta = _loadable(saved[0]), saved[1]
            stop, active = int(meta["stop"]), np.asarray(meta["active"], dtype=np.int64)
            earlier_seconds = float(meta.get("seconds", 0.0))
            finished = np.setdiff1d(np.arange(seeds.size), active)
            parts = [(finished, _take(full, finished))] if finished.size else []
            loop = _take(full, active)
    x_all, y_all = jnp.asarray(x), jnp.asarray(y)
    x, y, loop = _place(x_all, y_all, loop, active, per_seed_data)
    step = chunk_epochs or train_config.max_epochs
    last_save, save_seconds = time.monotonic(), 0.0
    try:
        while stop < train_config.max_epochs:
            stop = min(stop + step, train_config.max_epochs)
            loop = run(loop, x, y, jnp.int32(stop))
            done = np.asarray(loop.done)
            if not done.all():
                # Under vmap a stopped seed still costs a full share of every epoch. Once half the
                # batch has stopped, move the stopped seeds out and go on with a smaller batch
                # (one more compile per halving).
                if done.sum() * 2 >= done.size:
                    parts.append((active[done], _take(loop, np.flatnonzero(done))))
                    keep = np.flatnonzero(~done)
                    active, loop = active[keep], _take(loop, keep)
                    x, y, loop = _place(x_all, y_all, loop, active, per_seed_data)
                # At most every checkpoint_every_s and, unless that is 0 (every chunk), with no more
                # than 5% of the time spent saving (a 6-seed width-512 state is 380 MB, 2.6 s).
                waited = time.monotonic() - last_save
                cheap = checkpoint_every_s == 0 or waited >= 20 * save_seconds
                due = waited >= checkpoint_every_s and cheap
                if ckpt is not None and due:
                    t0 = time.monotonic()
                    state = _savable(_assemble(parts + [(active, loop)]))
                    seconds = earlier_seconds + t0 - start
                    ckpt.save(stop, state, {"stop": stop, "active": active.tolist(), "seconds": seconds}, run_id)
                    last_save = time.monotonic()
                    save_seconds = last_save - t0
            if progress is not None:
                progress(int(np.max(np.asarray(loop.epoch))), train_config.max_epochs)
            if done.all():
                break
    finally:
        if ckpt is not None:
            ckpt.close()
    loop = _assemble(parts + [(active, loop)])
    layout = {**environment(), "seeds_in_batch": int(seeds.size), "seed_devices": seed_devices(seeds.size),
              "chunk_epochs": step}
    return FitResult(model_config, train_config, loop, earlier_seconds + time.monotonic() - start, layout)


def _assemble(parts: list[tuple[np.ndarray, LoopState]]) -> LoopState:
    """One state for all seeds, in their original order, from (seed positions, state) parts."""
    if len(parts) == 1:
        return parts[0][1]
    order = np.argsort(np.concatenate([idx for idx, _ in parts]))
    return _merge([jax.device_put(p, jax.local_devices()[0]) for _, p in parts], jnp.asarray(order))


def _savable(loop: LoopState) -> LoopState:
    """A host copy with raw key data (checkpoint formats store plain arrays, not typed keys)."""
    return jax.device_get(loop.replace(key=jax.random.key_data(loop.key)))


def _loadable(loop: LoopState) -> LoopState:
    return loop.replace(key=jax.random.wrap_key_data(jnp.asarray(loop.key)))


def _run_id(model_config: ModelConfig, train_config: TrainConfig, seeds: np.ndarray, x: np.ndarray,
            y: np.ndarray, chunk_epochs: int) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed: configs, seeds, the training data, and
    what sets the vmapped batches (seeds, devices, chunking) and the kernels (`numerics`)."""
    return {"model_config": repr(model_config), "train_config": repr(train_config),
            "seeds": [int(s) for s in seeds], "data": fingerprint(x, y), "chunk_epochs": int(chunk_epochs),
            "devices": jax.local_device_count(), **numerics()}


def _take(tree, idx: np.ndarray):
    """The seeds `idx` of a seed-batched tree (one compiled gather for the whole tree)."""
    return _gather(tree, jnp.asarray(idx))


@jax.jit
def _gather(tree, idx):
    return jax.tree_util.tree_map(lambda a: a[idx], tree)


@jax.jit
def _merge(parts, order):
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a)[order], *parts)


def _place(x, y, loop: LoopState, active: np.ndarray, per_seed_data: bool):
    """Puts the active seeds' state (and their data) on the devices, seed axis sharded."""
    if per_seed_data:
        x, y = x[active], y[active]
    sharding = seed_sharding(active.size)
    if sharding is None:
        return x, y, jax.device_put(loop)
    if per_seed_data:
        x, y = jax.device_put(x, sharding), jax.device_put(y, sharding)
    return x, y, jax.device_put(loop, sharding)


@functools.lru_cache(maxsize=32)
def _compiled_init(model_config: ModelConfig, train_config: TrainConfig, n_train: int):
    init = functools.partial(init_loop_state, model_config=model_config, train_config=train_config, n_train=n_train)
    return jax.jit(jax.vmap(init))


@functools.lru_cache(maxsize=32)
def _compiled_run(model_config: ModelConfig, train_config: TrainConfig, data_axis: int | None):
    body = functools.partial(run_epochs, model_config=model_config, train_config=train_config)
    return jax.jit(jax.vmap(body, in_axes=(0, data_axis, data_axis, None)), donate_argnums=0)
