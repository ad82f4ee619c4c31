"""The image protocol: held-out early stopping for networks trained together, on the one driver.

Several networks of one architecture (repeats, and the LDN and the DDN of one max depth) train
as one program under `vdjax.training.driver.drive`: the train step and the epoch-end update of
`vdjax.training.protocol` are vmapped over a leading network axis, each network with its own seed, data
order, optimiser, early stopping and kept-best parameters. A network that stops stops changing,
and leaves the batch once half of the batch has stopped.

How an epoch advances (`feed`):
- 'device' (the default): the training data and the held-out split sit on the device; the
  shuffle, the batches, the steps and the held-out evaluation of `chunk_epochs` epochs are one
  compiled program, and the host reads only their metrics.
- 'host': batches fed from the host one step at a time, for data that does not fit on the
  device: `batches(epoch, active)` yields [K, B, ...] inputs and [K, B] labels of the networks
  `active` (a grain or tf.data pipeline, say); by default drawn from numpy with (seed, epoch).

The stopping objective (`TrainConfig.stop_on`) is, by default, the ELBO on a seeded,
stratified validation split held out of the training set (10%): the test set is then used
only for the final report. The paper's protocol, stopping on the test ELBO, is
`PAPER_IMAGE_PROTOCOL` (`--paper`); it flatters the test numbers it reports. Networks of
different methods in one program may follow different learning-rate schedules
(`TrainConfig.lr_drop_methods`): the rate is chosen per network from its method flag.

Resuming is exact in both feeds: the data order of an epoch comes from the checkpointed key
chain (device) or from (seed, epoch) (host), and the checkpoint holds every network's optimiser
state, best parameters and history, so a run killed after epoch e and resumed ends where an
uninterrupted run ends.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vdjax.training.checkpoints import CheckpointError  # noqa: F401 (re-exported)
from vdjax.data.core import Dataset, split_validation
from vdjax.training.metrics_writer import MetricsWriter
from vdjax.nn.models import LDN, Model
from vdjax.training.driver import FitResult, drive
from vdjax.training.protocol import Batching, NetState, end_epoch, init_net_state, run_id
from vdjax.runtime import (
    environment,
    largest_divisor,
    mesh_shardings,
    network_mesh,
    numerics,
    place,
    spanning_devices,
    to_host,
)
from vdjax.training.train import (
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
    """One network's view of a `vdjax.training.driver.FitResult`: its kept (best stopping-objective) state
    and what happened on the way."""

    state: TrainState
    best_epoch: int
    epochs: int  # epochs completed
    stopped: str  # 'patience' | 'max_epochs' | 'nonfinite' | 'interrupted'
    history: list[dict[str, float]]  # one row per epoch
    resumed_from: int | None  # epochs already done when this call started (None: fresh run)
    train_seconds: float  # wall time of the epochs run by this call (shared by the program's networks)
    networks: int = 1  # networks trained in the same program

    @staticmethod
    def of(fit: FitResult, index: int) -> "TrainResult":
        host = fit.host
        return TrainResult(fit.best_state(index), int(host.best_epoch[index]), int(host.epoch[index]),
                           fit.stopped(index), fit.histories[index], fit.resumed_from, fit.call_seconds,
                           fit.n_networks)


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
    feed: str = "device",
    batches: Callable[[int, np.ndarray], Iterable[tuple[np.ndarray, np.ndarray]]] | None = None,
    chunk_epochs: int = 1,
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
    `set<i>/<method>-s<seed>/<metric>`; `vdjax.training.metrics_writer`).
    feed, batches: how an epoch advances (module docstring); `batches` implies feed='host'.
    chunk_epochs: epochs per compiled call on the device (the host wakes between chunks for
    progress, checkpoints and the time budget).
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
    mesh = {"nets": None, "data": 1, **(mesh or {})}
    if batching.batch_size % mesh["data"]:
        raise ValueError(f"batches of {batching.batch_size} cannot be split evenly over data={mesh['data']} devices")
    if feed not in ("device", "host"):
        raise ValueError(f"feed must be 'device' or 'host', got {feed!r}")
    host_fed = feed == "host" or batches is not None
    devices = spanning_devices(span_processes)
    network_mesh(len(members), mesh["nets"], mesh["data"], devices)  # an impossible mesh fails before compiling
    is_ldn_all = np.array([m == "ldn" for m, _ in members])
    seeds = np.array([s for _, s in members])
    net = _compiled_init(model_config, train_config, batching.n_batches)(jnp.asarray(seeds, jnp.uint32))
    rid = None
    if checkpoint_dir is not None:  # the data digest costs seconds on SVHN: only when checkpointing
        arrays = []
        for d in sets:
            arrays += [d.x_train, d.y_train, d.x_test, d.y_test]
            arrays += [d.x_val, d.y_val] if d.x_val is not None else []
        # Also the kernels (`numerics`: another backend or library version computes other floats).
        rid = run_id(model_config, train_config, *arrays, name=name, members=[list(m) for m in members],
                     devices=jax.local_device_count(), mesh=dict(mesh), **numerics(),
                     **({"feed": "host"} if host_fed else {}),
                     **({"processes": jax.process_count(), "mesh_devices": len(devices)} if span_processes else {}),
                     **({"data_of": data_of.tolist()} if several else {}))
    x, y = (np.stack([d.x_train for d in sets]), np.stack([d.y_train for d in sets])) if several else (
        data.x_train, data.y_train)
    placed: dict = {}  # the mesh of the networks now running, its shardings, and what lives on it
    on_device = (x, y) + (held_out or ())

    def place_nets(net: NetState, active: np.ndarray) -> NetState:
        placed["mesh"] = _mesh_for(active.size, mesh, devices)
        placed["nets"], placed["batch"] = mesh_shardings(placed["mesh"])
        placed["is_ldn"] = place(is_ldn_all[active], placed["nets"])
        placed["data_of"] = place(data_of[active], placed["nets"])
        if not host_fed:  # once per mesh: the epochs gather their batches there
            everywhere = None if placed["mesh"] is None else NamedSharding(placed["mesh"], PartitionSpec())
            placed["data"] = place(on_device, everywhere)
        return place(net, placed["nets"])

    tags = [(f"set{data_of[i]}/" if several else "") + _names([m]) for i, m in enumerate(members)]
    if host_fed:
        orders = batches or (lambda epoch, active: _host_batches(x, y, data_of if several else None, seeds, batching,
                                                                 n_train, epoch, active))
        advance = _host_advance(model_config, train_config, n_train, several, held_out, data_of, orders, placed)
    else:
        advance = _device_advance(model_config, train_config, n_train, several, held_out is not None, placed)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=train_config.max_epochs, leave=False, unit="epoch",
                   desc=f"{name} D={model_config.max_depth} {_names(members)}")

    def report(done: int, total: int, info: dict) -> None:
        bar.update(done - bar.n)
        bar.set_postfix({f"best {stop_on}_loss": f"{info['best']:.4f}", "running": info["running"]})

    try:
        fit = drive(net, advance, place_nets, model_config=model_config, train_config=train_config,
                    layout={**environment(), "networks": k, "feed": "host" if host_fed else "device"},
                    chunk_epochs=chunk_epochs, checkpoint_dir=checkpoint_dir, run_id=rid,
                    checkpoint_every_s=checkpoint_every_s, progress=report if bar is not None else None,
                    stop_after_epochs=stop_after_epochs, stop_after_seconds=stop_after_seconds,
                    metrics_writer=metrics_writer, tags=tags, objective=f"{stop_on}_loss",
                    on_resume=lambda e: log(f"resuming {name} {_names(members)} D={model_config.max_depth} "
                                            f"after epoch {e}"),
                    called=called)
    finally:
        if bar is not None:
            bar.close()
    results = [TrainResult.of(fit, i) for i in range(k)]
    return [[r for r, j in zip(results, data_of) if j == g] for g in range(len(sets))] if several else results


def _host_batches(x, y, data_of, seeds, batching: Batching, n_train: int, epoch: int, active: np.ndarray):
    """The host-fed batches of one epoch, [K, B, ...] each: network i's data in the order drawn from
    (seed_i, epoch) alone (so a resumed run continues exactly); `data_of`: each network's data set."""
    orders = [batching.split(np.random.default_rng([int(seeds[i]), epoch]).permutation(n_train)) for i in active]
    rows_of = None if data_of is None else data_of[active][:, None]
    for b in range(batching.n_batches):
        idx = np.stack([order[b] for order in orders])
        yield (x[rows_of, idx], y[rows_of, idx]) if rows_of is not None else (x[idx], y[idx])


def _host_advance(model_config, train_config, n_train, several, held_out, data_of, batches, placed):
    """Epochs fed from the host, batch by batch, from `batches(epoch, active)` (data that does not
    fit on the device)."""
    step = _compiled_step(model_config, train_config, Batching.for_size(n_train, train_config.batch_size).n_batches,
                          n_train)
    finish = _compiled_end(train_config)
    heldout = _heldout(model_config, train_config, n_train, 1024, per_network=several)
    stop_on = train_config.stop_on

    def advance(net: NetState, active: np.ndarray, epoch: int, stop: int):
        rows_all = []
        for _ in range(epoch, stop):
            losses = []
            for bx, by in batches(epoch, active):
                train, loss = step(net.train, net.done, placed["is_ldn"], place(bx, placed["batch"]),
                                   place(by, placed["batch"]))
                net = net.replace(train=train)
                losses.append(loss)
            train_loss = np.mean(np.stack(to_host(losses)), axis=0)
            qs = to_host(_network_qs(net.train.params["depth_logits"], placed["is_ldn"]))
            rows = [{"epoch": epoch, "train_loss": float(v), "q": q.tolist()} for v, q in zip(train_loss, qs)]
            criterion = jnp.asarray(train_loss, jnp.float32)
            if held_out is not None:
                own = tuple(h[data_of[active]] for h in held_out) if several else held_out
                metrics = to_host(heldout(net.train, placed["is_ldn"], *own))
                for j, row in enumerate(rows):
                    row.update({f"{stop_on}_{m}": float(v[j]) for m, v in metrics.items()})
                criterion = jnp.where(jnp.isfinite(criterion), jnp.asarray(metrics["loss"]), jnp.nan)
            was_done = to_host(net.done)
            net = finish(net, criterion)
            rows_all.append([None if was_done[j] else row for j, row in enumerate(rows)])
            epoch += 1
        return net, rows_all

    return advance


def _device_advance(model_config, train_config, n_train, several, has_held_out, placed):
    """Epochs inside one compiled program: the shuffle, the batches and the held-out evaluation
    on the device, the host reading only the chunk's metrics."""
    stop_on = train_config.stop_on

    def advance(net: NetState, active: np.ndarray, epoch: int, stop: int):
        epochs = _compiled_epochs(model_config, train_config, n_train, several, has_held_out, placed["mesh"])
        net, rows = epochs(net, placed["is_ldn"], placed["data_of"], *placed["data"], n_epochs=stop - epoch)
        rows = to_host(rows)
        names = {"train_loss": "train_loss", **{m: f"{stop_on}_{m}" for m in ("loss", "log_lik", "error")}}

        def row(e: int, j: int) -> dict:
            scalars = {names[m]: float(v[e, j]) for m, v in rows.items() if m in names}
            return {"epoch": epoch + e, **scalars, "q": rows["q"][e, j].tolist()}

        return net, [[row(e, j) if rows["ran"][e, j] else None for j in range(active.size)]
                     for e in range(stop - epoch)]

    return advance


def _mesh_for(n_networks: int, mesh: dict[str, int | None], devices: list) -> Mesh | None:
    """The mesh of `devices` for `n_networks` networks. A user-set `nets` that no longer divides
    the networks left (after compaction) shrinks to the largest divisor below it."""
    nets = mesh["nets"]
    if nets is not None:
        nets = largest_divisor(n_networks, nets)
    return network_mesh(n_networks, nets, mesh["data"], devices)


def _place(net: NetState, n_networks: int, mesh: dict[str, int | None], devices: list):
    """The state on the mesh for `n_networks` networks, and the shardings of states and batches."""
    on_nets, on_batch = mesh_shardings(_mesh_for(n_networks, mesh, devices))
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
def _compiled_epochs(model_config: Model, train_config: TrainConfig, n_train: int, several: bool, has_held_out: bool,
                     mesh: Mesh | None = None):
    """(net [K], is_ldn [K], data_of [K], x, y[, held-out x, y], n_epochs) -> (net, rows [n_epochs, K]):
    `n_epochs` epochs of every network with its data on the device. Each epoch draws its shuffle
    from the network's key (in the state, so a resumed run continues exactly), runs the steps
    under `lax.scan`, evaluates the held-out objective in chunks and applies `end_epoch`; a
    network that has stopped does not change, and its rows say `ran` False. With several data
    sets x is [S, N, ...] and each network reads the rows of its own (`data_of`). On a mesh with a
    data axis every network's batch is split over it (the data replicated on every device)."""
    batching = Batching.for_size(n_train, train_config.batch_size)
    split_batch = mesh is not None and mesh.shape["data"] > 1
    on_data = NamedSharding(mesh, PartitionSpec("data")) if split_batch else None
    optimizer = make_optimizer(train_config, batching.n_batches)
    model = LDN(model_config)

    def forward(variables, x):  # eval mode, in chunks of at most HELDOUT_BATCH examples
        n = x.shape[0]
        size = min(HELDOUT_BATCH, n)
        pad = -n % size
        chunks = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(-1, size, *x.shape[1:])
        logits = jax.lax.map(lambda c: model.apply(variables, c, train=False), chunks)  # [n_chunks, D+1, size, C]
        return jnp.moveaxis(logits, 0, 1).reshape(logits.shape[1], -1, logits.shape[-1])[:, :n]

    def epoch(net: NetState, is_ldn, data_of, x, y, hx=None, hy=None):
        key, perm_key = jax.random.split(net.key)
        order = batching.split(jax.random.permutation(perm_key, n_train))

        def step(state, idx):
            bx, by = (x[data_of, idx], y[data_of, idx]) if several else (x[idx], y[idx])
            if split_batch:
                bx, by = jax.lax.with_sharding_constraint((bx, by), on_data)
            new, metrics = train_step(state, bx, by, model_config=model_config, train_config=train_config,
                                      optimizer=optimizer, n_train=n_train, is_ldn=is_ldn)
            return new, metrics["loss"]

        trained, losses = jax.lax.scan(step, net.train, order)
        row = {"train_loss": jnp.mean(losses), "q": _network_q(trained.params["depth_logits"], is_ldn)}
        criterion = row["train_loss"]
        if has_held_out:
            hx, hy = (hx[data_of], hy[data_of]) if several else (hx, hy)
            variables = {"params": trained.params["model"], "batch_stats": trained.batch_stats}
            m = _heldout_one(model_config, train_config, n_train)(
                forward(variables, hx), hy, trained.params["depth_logits"], is_ldn, trained.params.get("log_noise"),
                trained.params["model"])
            row.update(m)
            criterion = jnp.where(jnp.isfinite(criterion), m["loss"], jnp.nan)
        new = end_epoch(net.replace(key=key), trained, trained, criterion, patience=train_config.patience,
                        max_epochs=train_config.max_epochs, patience_rule=train_config.patience_rule)
        return new, {**row, "ran": ~net.done}

    def chunk(net, is_ldn, data_of, *arrays, n_epochs: int):
        return jax.lax.scan(lambda n, _: epoch(n, is_ldn, data_of, *arrays), net, None, length=n_epochs)

    def run(net, is_ldn, data_of, *arrays, n_epochs: int):
        one = functools.partial(chunk, n_epochs=n_epochs)
        net, rows = jax.vmap(one, in_axes=(0, 0, 0) + (None,) * len(arrays),
                             spmd_axis_name="nets" if split_batch else None)(net, is_ldn, data_of, *arrays)
        return net, jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), rows)  # [n_epochs, K]

    return jax.jit(run, static_argnames="n_epochs", donate_argnums=0)


HELDOUT_BATCH = 1024  # examples per forward pass of the held-out evaluation


def _network_q(depth_logits: jax.Array, is_ldn: jax.Array) -> jax.Array:
    """The network's weights over depths after an epoch (its history's `q`): q(d) for an LDN, a
    one-hot on the last depth for a DDN."""
    return jnp.where(is_ldn, jax.nn.softmax(depth_logits), jax.nn.one_hot(depth_logits.shape[-1] - 1,
                                                                          depth_logits.shape[-1]))


_network_qs = jax.jit(jax.vmap(_network_q))


def _heldout_one(model_config: Model, train_config: TrainConfig, n_train: int):
    """One network's held-out metrics from its eval-mode outputs (`heldout_metrics`; an MFVI
    network also pays the weights' KL / n_train in the loss)."""
    def one(logits, y, depth_logits, is_ldn, log_noise, model_params):
        m = heldout_metrics(logits, y, depth_logits, is_ldn, n_train, train_config,
                            likelihood=model_config.likelihood, log_noise=log_noise)
        if model_config.weights == "mfvi":
            m["loss"] = m["loss"] + weights_kl_per_point(model_config, model_params, n_train)
        return m

    return one


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
    metrics = jax.jit(jax.vmap(_heldout_one(model_config, train_config, n_train), in_axes=(0, data_axis, 0, 0, 0, 0)))

    def run(train: TrainState, is_ldn, x, y):
        variables = {"params": train.params["model"], "batch_stats": train.batch_stats}
        n = x.shape[1] if per_network else len(x)
        chunk = (lambda i: x[:, i : i + batch_size]) if per_network else (lambda i: x[i : i + batch_size])
        logits = jnp.concatenate([forward(variables, chunk(i)) for i in range(0, n, batch_size)], axis=2)
        return metrics(logits, jnp.asarray(y), train.params["depth_logits"], jnp.asarray(is_ldn),
                       train.params.get("log_noise"), train.params["model"])

    return run
