"""The whole training protocol as one compiled program, vmapped over seeds.

Small data sets (spirals) live on the device, so epochs, shuffling, early stopping and
best-parameter tracking all run inside `lax.while_loop`; repeats with different seeds run
together under `vmap` from a single compile. The host only calls the compiled loop in
chunks of epochs, to draw a progress bar and stop once every seed has stopped.

Batching (`vdjax.training.protocol.Batching`, as the image trainer): ceil(N / batch_size) equal
batches after a fresh shuffle; at the paper's spirals sizes that is full-batch gradient descent.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vdjax.data.core import check_inputs, check_labels
from vdjax.training.driver import FitResult, drive  # noqa: F401 (FitResult is re-exported)
from vdjax.training.metrics_writer import MetricsWriter
from vdjax.nn.models import Model
from vdjax.training import protocol
from vdjax.training.protocol import Batching, NetState  # noqa: F401 (Batching is re-exported)
from vdjax.runtime import environment, mesh_shardings, network_mesh, numerics, seed_devices
from vdjax.runtime import place as place_on
from vdjax.training.train import TrainConfig, init_state, make_optimizer, train_step


LoopState = NetState  # the state of one seed's run (a leading seed axis for many)


def init_loop_state(key: jax.Array, model_config: Model, train_config: TrainConfig, n_train: int) -> LoopState:
    init_key, shuffle_key = jax.random.split(key)
    batching = Batching.for_size(n_train, train_config.batch_size)
    state = init_state(init_key, model_config, make_optimizer(train_config, batching.n_batches))
    return protocol.init_net_state(state, shuffle_key, train_config.max_epochs)


def _epoch(
    loop: LoopState, x: jax.Array, y: jax.Array, *, model_config: Model, train_config: TrainConfig
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
        idx = batching.split(jax.random.permutation(perm_key, n_train))

        def body(state, batch_idx):
            state, metrics = step(state, x[batch_idx], y[batch_idx])
            return state, metrics["loss"]

        new, losses = jax.lax.scan(body, loop.train, idx)
        loss, candidate = jnp.mean(losses), new  # as the reference: parameters after the epoch
    loop = loop.replace(key=key)
    return protocol.end_epoch(loop, new, candidate, loss, patience=train_config.patience,
                              max_epochs=train_config.max_epochs, patience_rule=train_config.patience_rule)


def run_epochs(
    loop: LoopState, x: jax.Array, y: jax.Array, stop_epoch: jax.Array, *, model_config: Model,
    train_config: TrainConfig,
) -> LoopState:
    """Runs epochs until `stop_epoch` or until this seed's run has stopped."""
    epoch = functools.partial(_epoch, x=x, y=y, model_config=model_config, train_config=train_config)
    return jax.lax.while_loop(lambda s: (~s.done) & (s.epoch < stop_epoch), epoch, loop)


def fit(
    model_config: Model,
    train_config: TrainConfig,
    x: np.ndarray,
    y: np.ndarray,
    seeds: list[int] | np.ndarray,
    chunk_epochs: int | None = 250,
    progress: Callable[[int, int], None] | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every_s: float = 60.0,
    metrics_writer: MetricsWriter | None = None,
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

    metrics_writer: after every chunk, each seed's epoch count and best train loss so far, as
    scalars `seed<s>/epochs` and `seed<s>/best_train_loss` at the chunk's last epoch.
    """
    start = time.perf_counter()
    if train_config.stop_on != "train":
        raise ValueError(f"the in-memory loop stops on the train ELBO (the spirals protocol), got "
                         f"stop_on={train_config.stop_on!r}; use vdjax.training.trainer.fit_dataset for held-out stopping")
    seeds = np.asarray(seeds)
    if seeds.ndim != 1 or seeds.size == 0:
        raise ValueError(f"seeds must be a non-empty 1-D list, got {seeds!r}")
    if seeds.dtype.kind not in "iu" or seeds.min() < 0 or seeds.max() > protocol.MAX_SEED:
        raise ValueError(f"seeds must be integers in [0, {protocol.MAX_SEED}] (uint32 PRNG keys), got {seeds.tolist()}")
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
    step = chunk_epochs or train_config.max_epochs
    # Also what sets the vmapped batches (seeds, devices, chunking) and the kernels (`numerics`).
    rid = None if checkpoint_dir is None else protocol.run_id(
        model_config, train_config, x, y, seeds=[int(s) for s in seeds], chunk_epochs=int(step),
        devices=jax.local_device_count(), **numerics())
    x_all, y_all = jnp.asarray(x), jnp.asarray(y)
    data = {}  # the active seeds' data, placed with their state

    def place(loop: LoopState, active: np.ndarray) -> LoopState:
        on_nets, _ = mesh_shardings(network_mesh(active.size))
        xs, ys = (x_all[active], y_all[active]) if per_seed_data else (x_all, y_all)
        data["x"], data["y"] = (place_on(xs, on_nets), place_on(ys, on_nets)) if per_seed_data else (xs, ys)
        return place_on(loop, on_nets)

    def advance(loop: LoopState, active: np.ndarray, epoch: int, stop: int):
        return run(loop, data["x"], data["y"], jnp.int32(stop)), None

    layout = {**environment(), "seeds_in_batch": int(seeds.size), "seed_devices": seed_devices(seeds.size),
              "chunk_epochs": step}
    return drive(loop, advance, place, model_config=model_config, train_config=train_config, layout=layout,
                 chunk_epochs=step, checkpoint_dir=checkpoint_dir, run_id=rid, checkpoint_every_s=checkpoint_every_s,
                 progress=None if progress is None else (lambda done, total, _: progress(done, total)),
                 metrics_writer=metrics_writer, tags=[f"seed{int(s)}" for s in seeds], objective="train_loss",
                 called=start)


@functools.lru_cache(maxsize=32)
def _compiled_init(model_config: Model, train_config: TrainConfig, n_train: int):
    init = functools.partial(init_loop_state, model_config=model_config, train_config=train_config, n_train=n_train)
    return jax.jit(jax.vmap(init))


@functools.lru_cache(maxsize=32)
def _compiled_run(model_config: Model, train_config: TrainConfig, data_axis: int | None):
    body = functools.partial(run_epochs, model_config=model_config, train_config=train_config)
    return jax.jit(jax.vmap(body, in_axes=(0, data_axis, data_axis, None)), donate_argnums=0)
