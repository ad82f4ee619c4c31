"""The image protocol: a host-driven epoch loop with early stopping, checkpoints and resume.

Image data sets do not fit the all-on-device loop of `vdjax.loop` (60k images, hours of
training), so here the host feeds batches to the train step, evaluates the stopping objective
after every epoch, keeps the best parameters (early stopping with `patience`) and checkpoints
with Orbax. Several networks of one architecture (repeats, and the LDN and the DDN of one max
depth) train as one program: the train step and the epoch-end update of `vdjax.protocol` are
vmapped over a leading network axis, each network with its own seed, data order, optimiser,
early stopping and kept-best parameters. A network that stops stops changing, and leaves the
batch once half of the batch has stopped.

The stopping objective (`TrainConfig.stop_on`) is, by default, the ELBO on a seeded,
stratified validation split held out of the training set (10%): the test set is then used
only for the final report. The paper's protocol, stopping on the test ELBO, is
`PAPER_IMAGE_PROTOCOL` (`--paper`); it flatters the test numbers it reports. Networks of
different methods in one program may follow different learning-rate schedules
(`TrainConfig.lr_drop_methods`): the rate is chosen per network from its method flag.

Resuming is exact: the shuffle of epoch e of a network is drawn from (seed, e) alone, and the
checkpoint holds every network's optimiser state, best parameters and history, so a run killed
after epoch e and resumed ends where an uninterrupted run ends.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vdjax.checkpoints import CheckpointError, Checkpoints  # noqa: F401 (CheckpointError is re-exported)
from vdjax.data.core import Dataset, split_validation
from vdjax.metrics_writer import MetricsWriter
from vdjax.models import LDN, Model
from vdjax.protocol import (
    Batching,
    NetState,
    SaveCadence,
    assemble,
    best_train_state,
    end_epoch,
    init_net_state,
    loadable,
    run_id,
    savable,
    should_compact,
    stop_reason,
    take,
)
from vdjax.runtime import (
    gather,
    largest_divisor,
    mesh_shardings,
    network_mesh,
    numerics,
    place,
    spanning_devices,
    to_host,
)
from vdjax.train import (
    TrainConfig,
    TrainState,
    heldout_metrics,
    init_state,
    make_optimizer,
    train_step,
    weights_kl_per_point,
)

IMAGE_PROTOCOL = TrainConfig(
    batch_size=512, learning_rate=0.1, momentum=0.5, max_epochs=500, patience=30, lr_drop_epoch=30,
    lr_drop_factor=0.1, stop_on="val", val_fraction=0.1,
)
"""The paper's image optimisation, with early stopping on a 10% validation split. The drop
factor was lost from the paper's text; 0.1 is assumed."""

PAPER_IMAGE_PROTOCOL = IMAGE_PROTOCOL.replace(
    stop_on="test", stop_objective="marginal", patience_rule="exceeded", lr_drop_epoch=31, lr_drop_methods=("ddn",),
)
"""The paper's image protocol as its reference code runs it (arch_uncert `train_BNN.py`,
`scan_*_depth_images.py`): early stopping on the test ELBO of the q-marginal predictive
(`stop_criteria='test_ELBO'`), stopping once more than 30 epochs passed without a better one
(`i - best_epoch > 30`); the DDN's learning rate drops 10x after its 0-based epoch 30
(`schedule=[30]`, `update_lr(i)` after epoch i: 31 epochs at 0.1), the LDN's never
(`schedule=None`)."""

Member = tuple[str, int]  # (method, seed): one network of a program


@dataclasses.dataclass
class TrainResult:
    """The kept (best stopping-objective) state of one network and what happened on the way."""

    state: TrainState
    best_epoch: int
    epochs: int  # epochs completed
    stopped: str  # 'patience' | 'max_epochs' | 'nonfinite' | 'interrupted'
    history: list[dict[str, float]]  # one row per epoch
    resumed_from: int | None  # epochs already done when this call started (None: fresh run)
    train_seconds: float  # wall time of the epochs run by this call (shared by the program's networks)
    networks: int = 1  # networks trained in the same program


def heldout_objective(
    model_config: Model, train_config: TrainConfig, state: TrainState, x: np.ndarray, y: np.ndarray,
    n_train: int, batch_size: int = 1024, split: str = "val",
) -> dict[str, float]:
    """Eval-mode negative ELBO per point on held-out (x, y), the early-stopping criterion (its NLL
    as `train_config.stop_objective` says), with
    the marginal log-likelihood and error (for a DDN: its cross-entropy, log-likelihood and
    error), keyed `<split>_loss`, `<split>_log_lik`, `<split>_error`."""
    one = jax.tree_util.tree_map(lambda a: a[None], state)
    is_ldn = np.array([train_config.method == "ldn"])
    m = _heldout(model_config, train_config, n_train, batch_size)(one, is_ldn, x, y)
    return {f"{split}_{k}": float(v[0]) for k, v in m.items()}


def with_stopping_data(data: Dataset, train_config: TrainConfig) -> Dataset:
    """`data` with the validation split that `stop_on='val'` needs (drawn with seed 0, so every
    network of a study shares it), unless it has one already."""
    if train_config.stop_on == "val" and data.x_val is None:
        return split_validation(data, train_config.val_fraction, seed=0)
    return data


def fit_dataset(
    data: Dataset,
    model_config: Model,
    train_config: TrainConfig = IMAGE_PROTOCOL,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Trains one network (`train_config.method`) on `data`: `fit_networks` with one member."""
    return fit_networks(data, model_config, train_config, [(train_config.method, seed)], checkpoint_dir,
                        progress, stop_after_epochs, log)[0]


def fit_networks(
    data: Dataset | Sequence[Dataset],
    model_config: Model,
    train_config: TrainConfig,
    members: Sequence[Member] | Sequence[Sequence[Member]],
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    log: Callable[[str], None] = print,
    checkpoint_every_s: float = 0.0,
    mesh: dict[str, int | None] | None = None,
    span_processes: bool = False,
    stop_after_seconds: float | None = None,
    metrics_writer: MetricsWriter | None = None,
) -> list[TrainResult]:
    """Trains the networks `members` ((method, seed) pairs) of one architecture on `data` in one
    program with the image protocol; resumes from `checkpoint_dir`. `train_config.method` is
    ignored: each member names its own.

    Several data sets of one size (the splits of one benchmark set): `data` a sequence of them and
    `members` one list of members per data set; every network trains (and stops) on its own set,
    all of them in one program, and the results come back as one list per data set.

    With `stop_on='val'` a data set without a validation split gets one (`with_stopping_data`):
    the networks then train on the rest of the training set.
    stop_after_epochs: stop (as if killed) once this many epochs are done; the checkpoint is
    left for a later call to resume from.
    stop_after_seconds: a time budget for this call, compiling included: stop in the same way
    (stopped 'interrupted') before an epoch that, taking as long as the last one, would end
    past it. The first epoch always runs.
    checkpoint_every_s: at most this often (and with at most 5% of the time spent saving); 0
    saves after every epoch. The state is always saved when the call stops early.
    mesh: {'nets': N, 'data': M}: the networks sharded over N devices and each network's batch
    over M (data parallelism: BatchNorm statistics and gradients are those of the whole batch,
    XLA adding the cross-device sums). Default: nets = the most devices that divide the number
    of networks, data = 1. The numbers match the one-device run up to summation order.
    span_processes: one program over every process's devices (`jax.distributed` started; every
    process calls this with the same arguments). The mesh is built from all of them, 'nets'
    crossing processes first; each process computes the same data order and puts its own
    shards, the host reads (losses, stopping, the final states) gather the whole, and the
    checkpoint is Orbax's multi-process save (one shared `checkpoint_dir`). Every process gets
    the same results. Without it a process uses only its own devices.
    metrics_writer: after every epoch, each running network's row of its history (train loss,
    held-out metrics) as scalars named `<method>-s<seed>/<metric>` (with several data sets
    `set<i>/<method>-s<seed>/<metric>`; `vdjax.metrics_writer`).
    """
    called = time.perf_counter()
    several = not isinstance(data, Dataset)
    sets = [with_stopping_data(d, train_config) for d in (data if several else [data])]
    groups = [list(g) for g in members] if several else [list(members)]
    if not sets or len(groups) != len(sets):
        raise ValueError(f"{len(sets)} data sets need as many lists of members, got {len(groups)}")
    for d in sets:
        if model_config.input_shape != d.input_shape or model_config.num_classes != d.num_classes:
            raise ValueError(
                f"model expects inputs {model_config.input_shape} with {model_config.num_classes} classes, "
                f"data set {d.name!r} has {d.input_shape} with {d.num_classes}"
            )
    sizes = {(d.n_train, d.n_val, len(d.x_test) if train_config.stop_on == "test" else None) for d in sets}
    if len(sizes) > 1:
        raise ValueError(f"the data sets of one program need equal sizes (train, validation, test if stopping on "
                         f"it), got {sorted(sizes, key=str)}")
    data_of = np.array([j for j, g in enumerate(groups) for _ in g], dtype=np.int64)  # each network's data set
    members = [(str(m), int(s)) for g in groups for m, s in g]
    if (not all(groups) or len(set(zip(data_of.tolist(), members))) != len(members)
            or any(m not in ("ldn", "ddn") for m, _ in members)):
        raise ValueError(f"members must be distinct (method, seed) pairs with method 'ldn' or 'ddn', got {groups}")
    data = sets[0]
    name = data.name if not several else f"{data.name} and {len(sets) - 1} more"
    stop_on = train_config.stop_on
    held_sets = [{"val": (d.x_val, d.y_val), "test": (d.x_test, d.y_test)}.get(stop_on) for d in sets]
    held_out = None if held_sets[0] is None else held_sets[0] if not several else tuple(
        np.stack([h[i] for h in held_sets]) for i in range(2))
    n_train, k = data.n_train, len(members)
    batching = Batching.for_size(n_train, train_config.batch_size)
    steps_per_epoch = batching.n_batches
    mesh = {"nets": None, "data": 1, **(mesh or {})}
    if batching.batch_size % mesh["data"]:
        raise ValueError(f"batches of {batching.batch_size} cannot be split evenly over data={mesh['data']} devices")
    devices = spanning_devices(span_processes)
    network_mesh(len(members), mesh["nets"], mesh["data"], devices)  # an impossible mesh fails before compiling
    is_ldn_all = np.array([m == "ldn" for m, _ in members])
    seeds = np.array([s for _, s in members])
    net = _compiled_init(model_config, train_config, steps_per_epoch)(jnp.asarray(seeds, jnp.uint32))
    step = _compiled_step(model_config, train_config, steps_per_epoch, n_train)
    finish = _compiled_end(train_config)
    heldout = _heldout(model_config, train_config, n_train, 1024, per_network=several)

    ckpt = Checkpoints(checkpoint_dir) if checkpoint_dir is not None else None
    active = np.arange(k)  # positions of the networks still in `net`
    parts: list[tuple[np.ndarray, NetState]] = []  # networks compacted out, with their final state
    histories: list[list[dict[str, float]]] = [[] for _ in members]
    epoch, resumed_from, earlier_seconds = 0, None, 0.0
    if ckpt is not None:  # the data digest costs seconds on SVHN: only when checkpointing
        arrays = []
        for d in sets:
            arrays += [d.x_train, d.y_train, d.x_test, d.y_test]
            arrays += [d.x_val, d.y_val] if d.x_val is not None else []
        # Also the kernels (`numerics`: another backend or library version computes other floats).
        rid = run_id(model_config, train_config, *arrays, name=name, members=[list(m) for m in members],
                     devices=jax.local_device_count(), mesh=dict(mesh), **numerics(),
                     **({"processes": jax.process_count(), "mesh_devices": len(devices)} if span_processes else {}),
                     **({"data_of": data_of.tolist()} if several else {}))
        saved = ckpt.restore(savable(net), rid)
        if saved is not None:
            full, meta = loadable(saved[0]), saved[1]
            epoch = resumed_from = int(meta["epochs"])
            active, histories = np.asarray(meta["active"], dtype=np.int64), meta["history"]
            earlier_seconds = float(meta["seconds"])
            finished = np.setdiff1d(np.arange(k), active)
            parts = [(finished, take(full, finished))] if finished.size else []
            net = take(full, active)
            log(f"resuming {name} {_names(members)} D={model_config.max_depth} after epoch {epoch}")

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=train_config.max_epochs, initial=epoch, leave=False, unit="epoch",
                   desc=f"{name} D={model_config.max_depth} {_names(members)}")
    start, cadence = time.perf_counter(), SaveCadence(checkpoint_every_s)
    out_of_time = False
    x, y = (np.stack([d.x_train for d in sets]), np.stack([d.y_train for d in sets])) if several else (
        data.x_train, data.y_train)
    if active.size:  # a checkpoint of finished networks (killed before their results were written) has none
        net, on_nets, on_batch = _place(net, active.size, mesh, devices)
    try:
        while active.size and not out_of_time and not (stop_after_epochs is not None and epoch >= stop_after_epochs):
            t0 = time.perf_counter()
            orders = [batching.split(np.random.default_rng([int(seeds[i]), epoch]).permutation(n_train))
                      for i in active]
            is_ldn = place(is_ldn_all[active], on_nets)
            losses = []
            rows_of = data_of[active][:, None]  # several data sets: each network's own rows
            for b in range(steps_per_epoch):
                idx = np.stack([order[b] for order in orders])
                bx, by = (x[rows_of, idx], y[rows_of, idx]) if several else (x[idx], y[idx])
                train, loss = step(net.train, net.done, is_ldn, place(bx, on_batch), place(by, on_batch))
                net = net.replace(train=train)
                losses.append(loss)
            train_loss = np.mean(np.stack(to_host(losses)), axis=0)
            rows = [{"epoch": epoch, "train_loss": float(v)} for v in train_loss]
            criterion = jnp.asarray(train_loss, jnp.float32)
            if held_out is not None:
                own = tuple(h[data_of[active]] for h in held_out) if several else held_out
                metrics = to_host(heldout(net.train, is_ldn, *own))
                for j, row in enumerate(rows):
                    row.update({f"{stop_on}_{m}": float(v[j]) for m, v in metrics.items()})
                criterion = jnp.where(jnp.isfinite(criterion), jnp.asarray(metrics["loss"]), jnp.nan)
            was_done = to_host(net.done)
            net = finish(net, criterion)
            seconds = time.perf_counter() - t0
            for j, row in enumerate(rows):
                if not was_done[j]:
                    histories[active[j]].append({**row, "seconds": seconds})
            if metrics_writer is not None:
                tag = lambda i: (f"set{data_of[i]}/" if several else "") + _names([members[i]])  # noqa: E731
                metrics_writer.write(epoch, {f"{tag(active[j])}/{k}": v for j, row in enumerate(rows)
                                             if not was_done[j] for k, v in row.items() if k != "epoch"})
            epoch += 1
            done, nonfinite = to_host((net.done, net.nonfinite))
            for j in np.flatnonzero(nonfinite & ~was_done):
                warnings.warn(f"non-finite loss at epoch {epoch - 1} ({_names([members[active[j]]])}): stopping, "
                              f"keeping the parameters of epoch {int(to_host(net.best_epoch)[j])}", RuntimeWarning,
                              stacklevel=2)
            if done.all() or should_compact(done):
                parts.append((active[done], take(net, np.flatnonzero(done))))
                keep = np.flatnonzero(~done)
                active, net = active[keep], take(net, keep)
                if active.size:
                    net, on_nets, on_batch = _place(net, active.size, mesh, devices)
            out_of_time = stop_after_seconds is not None and time.perf_counter() - called + seconds > stop_after_seconds
            stopping = not active.size or out_of_time or (stop_after_epochs is not None and epoch >= stop_after_epochs)
            if ckpt is not None and (cadence.due() or stopping):
                t_save = time.monotonic()
                meta = {"epochs": epoch, "active": active.tolist(), "history": histories,
                        "seconds": earlier_seconds + time.perf_counter() - start}
                ckpt.save(epoch, savable(assemble(parts + ([(active, net)] if active.size else []))), meta, rid)
                cadence.saved(t_save)
            if bar is not None:
                bar.update(1)
                best = [min(r.get(f"{stop_on}_loss", r["train_loss"]) for r in h) for h in histories if h]
                bar.set_postfix({f"best {stop_on}_loss": f"{min(best):.4f}", "running": int(active.size)})
    finally:
        if bar is not None:
            bar.close()
        if ckpt is not None:
            ckpt.close()
    final = gather(assemble(parts + ([(active, net)] if active.size else [])))
    seconds = time.perf_counter() - start
    host = jax.device_get(final)
    results = [
        TrainResult(
            state=best_train_state(final, i),
            best_epoch=int(host.best_epoch[i]),
            epochs=int(host.epoch[i]),
            stopped=stop_reason(bool(host.done[i]), bool(host.nonfinite[i]), int(host.epoch[i]),
                                train_config.max_epochs),
            history=histories[i],
            resumed_from=resumed_from,
            train_seconds=seconds,
            networks=k,
        )
        for i in range(k)
    ]
    return [[r for r, j in zip(results, data_of) if j == g] for g in range(len(sets))] if several else results


def _place(net: NetState, n_networks: int, mesh: dict[str, int | None], devices: list):
    """The state on the mesh of `devices` for `n_networks` networks, and the shardings of states
    and batches.
    A user-set `nets` that no longer divides the networks left (after compaction) shrinks to the
    largest divisor below it."""
    nets = mesh["nets"]
    if nets is not None:
        nets = largest_divisor(n_networks, nets)
    on_nets, on_batch = mesh_shardings(network_mesh(n_networks, nets, mesh["data"], devices))
    return place(net, on_nets), on_nets, on_batch


def _names(members: Sequence[Member]) -> str:
    return " ".join(f"{m}-s{s}" for m, s in members)


@functools.lru_cache(maxsize=16)
def _compiled_init(model_config: Model, train_config: TrainConfig, steps_per_epoch: int):
    """Seeds [K] -> NetState [K]: each network initialised from `jax.random.key(seed)`."""
    optimizer = make_optimizer(train_config, steps_per_epoch)

    def one(seed):
        key = jax.random.key(seed)
        return init_net_state(init_state(key, model_config, optimizer), key, train_config.max_epochs)

    return jax.jit(jax.vmap(one))


@functools.lru_cache(maxsize=16)
def _compiled_step(model_config: Model, train_config: TrainConfig, steps_per_epoch: int, n_train: int):
    """(train [K], done [K], is_ldn [K], x [K, B, ...], y [K, B]) -> (train, loss [K]): one SGD
    step of every network on its own batch; a stopped network is left as it was."""
    optimizer = make_optimizer(train_config, steps_per_epoch)

    def one(state, done, is_ldn, x, y):
        new, metrics = train_step(state, x, y, model_config=model_config, train_config=train_config,
                                  optimizer=optimizer, n_train=n_train, is_ldn=is_ldn)
        return jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), state, new), metrics["loss"]

    return jax.jit(jax.vmap(one), donate_argnums=0)


@functools.lru_cache(maxsize=16)
def _compiled_end(train_config: TrainConfig):
    """The epoch-end update of every network; the host-fed state after the epoch is both the
    trained state and the candidate for keep-best."""
    def one(net, loss):
        return end_epoch(net, net.train, net.train, loss, patience=train_config.patience,
                         max_epochs=train_config.max_epochs, patience_rule=train_config.patience_rule)

    return jax.jit(jax.vmap(one))


@functools.lru_cache(maxsize=16)
def _heldout(model_config: Model, train_config: TrainConfig, n_train: int, batch_size: int,
             per_network: bool = False):
    """(train [K], is_ldn [K], x, y) -> {'loss', 'log_lik', 'error'} [K] on held-out data, in
    evaluation mode (an MFVI network: its posterior means, plus the weights' KL / n_train in the
    loss), the examples in chunks of `batch_size`. per_network: x [K, N, ...] and y [K, N], each
    network's own held-out set."""
    model = LDN(model_config)
    data_axis = 0 if per_network else None
    forward = jax.jit(jax.vmap(lambda v, x: model.apply(v, x, train=False), in_axes=(0, data_axis)))
    def one(logits, y, depth_logits, is_ldn, log_noise, model_params):
        m = heldout_metrics(logits, y, depth_logits, is_ldn, n_train, train_config,
                            likelihood=model_config.likelihood, log_noise=log_noise)
        if model_config.weights == "mfvi":
            m["loss"] = m["loss"] + weights_kl_per_point(model_config, model_params, n_train)
        return m

    metrics = jax.jit(jax.vmap(one, in_axes=(0, data_axis, 0, 0, 0, 0)))

    def run(train: TrainState, is_ldn, x, y):
        variables = {"params": train.params["model"], "batch_stats": train.batch_stats}
        n = x.shape[1] if per_network else len(x)
        chunk = (lambda i: x[:, i : i + batch_size]) if per_network else (lambda i: x[i : i + batch_size])
        logits = jnp.concatenate([forward(variables, chunk(i)) for i in range(0, n, batch_size)], axis=2)
        return metrics(logits, jnp.asarray(y), train.params["depth_logits"], jnp.asarray(is_ldn),
                       train.params.get("log_noise"), train.params["model"])

    return run
