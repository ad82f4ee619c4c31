"""`fit`: train K networks of one architecture as one program, to the end of the protocol.

The loop around the epochs, the same in every regime and feed:
- restore from a checkpoint (refusing another run's),
- advance a chunk of epochs (the feed's `advance`, `vdjax.training.feeds`),
- compact stopped networks out of the vmapped batch (under `vmap` a stopped network still
  costs a full share of every step) and reassemble them in order at the end,
- save at the cadence `RunOptions` sets, and whenever the call stops early,
- progress, the metrics stream, per-epoch histories and the one result type, `FitResult`.

Reproducibility: the same networks with the same settings on the same machine give bit-identical
results, resumed or not. A network's floats also depend on how many networks share its device's
vmapped batch (other batch sizes run other float kernels), which the number of networks, the
device count and the chunking set; all of them are in the checkpoint's run id and in
`FitResult.layout`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vdjax.data.core import Dataset, check_inputs, check_labels, check_targets, split_validation
from vdjax.nn.models import Model
from vdjax.runtime import environment, gather, network_mesh, numerics, seed_devices, spanning_devices, to_host
from vdjax.training.checkpoints import Checkpoints, SaveCadence, run_id
from vdjax.training.config import MAX_SEED, SPIRALS_PROTOCOL, RunOptions, TrainConfig
from vdjax.training.epoch import Batching, EpochData, NetState, init_net_state, stop_reason
from vdjax.training.feeds import Networks, Placement, device_advance, host_advance, host_batches, placer
from vdjax.training.objective import Objective, method_index
from vdjax.training.step import TrainState, init_state, make_optimizer

Member = tuple[str, int]  # (method, seed): one network of a program


@dataclasses.dataclass
class FitResult:
    """Every network of one `fit`, in the order they were asked for; each array of `state` has
    a leading network axis. `members[i]` is network i's (method, seed) and `data_of[i]` its
    data set."""

    model_config: Any
    train_config: TrainConfig
    state: NetState
    members: list[Member]
    data_of: list[int]
    seconds: float = 0.0  # wall time of training, compile included, over every call that resumed it
    layout: dict[str, Any] = dataclasses.field(default_factory=dict)  # what the floats depend on
    histories: list[list[dict[str, float]]] = dataclasses.field(default_factory=list)  # per network, per epoch
    resumed_from: int | None = None  # epochs already done when this call started (None: fresh run)
    call_seconds: float = 0.0  # wall time of the epochs run by this call

    @property
    def n_networks(self) -> int:
        return len(self.members)

    def index(self, method: str, seed: int, data_set: int = 0) -> int:
        """The position of the network (method, seed) of data set `data_set`."""
        for i, (m, s) in enumerate(self.members):
            if (m, s, self.data_of[i]) == (method, seed, data_set):
                return i
        raise KeyError(f"no network {method}-s{seed} of data set {data_set} in this result")

    def best_state(self, index: int) -> TrainState:
        """The kept (best-objective) parameters of network `index` (optimiser state: the last)."""
        net = jax.tree_util.tree_map(lambda a: a[index], _take(self.state, np.array([index])))
        return net.train.replace(params=net.best_params, batch_stats=net.best_batch_stats)

    def stopped(self, index: int) -> str:
        """'patience' | 'max_epochs' | 'nonfinite' | 'interrupted' for network `index`."""
        host = self.host
        return stop_reason(bool(host.done[index]), bool(host.nonfinite[index]), int(host.epoch[index]),
                           self.train_config.max_epochs)

    def select(self, indices: Sequence[int]) -> "FitResult":
        """The result of the networks `indices` alone (a baseline's member, one record's network)."""
        idx = np.asarray(indices, np.int64)
        return dataclasses.replace(self, state=_take(self.state, idx), members=[self.members[i] for i in idx],
                                   data_of=[self.data_of[i] for i in idx],
                                   histories=[self.histories[i] for i in idx] if self.histories else [])

    def summary(self, index: int) -> dict[str, Any]:
        """How network `index` trained: its kept epoch, epochs run, why it stopped, and the
        wall time of this call's program (shared by its networks)."""
        host = self.host
        return {"best_epoch": int(host.best_epoch[index]), "epochs": int(host.epoch[index]),
                "stopped": self.stopped(index), "program_seconds": round(self.call_seconds, 2),
                "networks_in_program": int(self.layout.get("networks", self.n_networks))}

    @property
    def host(self) -> NetState:
        """The counters (epochs, best epochs, best losses, flags) on the host, read once."""
        if getattr(self, "_host", None) is None:
            self._host = to_host(self.state.replace(train=None, best_params=None, best_batch_stats=None, key=None))
        return self._host


def fit(model: Model, config: TrainConfig = SPIRALS_PROTOCOL, data: Any = None,
        networks: Sequence[Any] = (0,), options: RunOptions = RunOptions()) -> FitResult:
    """Trains the `networks` of one architecture on `data` in one compiled, vmapped program, each
    with its own seed, data order, early stopping and kept-best parameters; resumes from
    `options.checkpoint_dir`.

    data: a `Dataset`; `(x, y)` arrays ([N, ...] shared by every network, or [K, N, ...] one
    training set per network; train-ELBO stopping only); or a list of data sets of one size, each
    network training (and stopping) on its own.
    networks: seeds (each a network of `config.method`) or (method, seed) pairs; with a list of
    data sets, one such list per set.
    With `config.stop_on='val'` a data set without a validation split gets one (seed 0, so every
    network of a study shares it): the networks then train on the rest of the training set.
    """
    called = time.perf_counter()
    sets, groups = _data_and_networks(model, config, data, networks)
    members = [m for g in groups for m in g]
    data_of = np.array([j for j, g in enumerate(groups) for _ in g], np.int64)
    k, n_train = len(members), len(sets[0]["x"])
    batching = Batching.for_size(n_train, config.batch_size)
    mesh = {"nets": None, "data": 1, **(options.mesh or {})}
    if batching.batch_size % mesh["data"]:
        raise ValueError(f"batches of {batching.batch_size} cannot be split evenly over data={mesh['data']} devices")
    host_fed = options.host_fed
    devices = spanning_devices(options.span_processes)
    network_mesh(k, mesh["nets"], mesh["data"], devices)  # an impossible mesh fails before compiling
    names = [m for m, _ in members]
    static = not config.held_out and set(names) == {config.method}
    seeds = np.array([s for _, s in members], np.uint32)
    objective = Objective(model, config, n_train)
    net = _compiled_init(objective, batching.n_batches)(jnp.asarray(seeds))
    several = len(sets) > 1
    nets = Networks(None if static else method_index(names), seeds, data_of if several else None)
    stacked = {key: (np.stack([s[key] for s in sets]) if several else sets[0][key])
               for key in ("x", "y", "held_x", "held_y") if key in sets[0]}
    data = EpochData(x=stacked["x"], y=stacked["y"], held_x=stacked.get("held_x"), held_y=stacked.get("held_y"))
    placed = Placement()
    if host_fed:
        held = None if not config.held_out else EpochData(held_x=data.held_x, held_y=data.held_y,
                                                          data_of=nets.data_of)
        orders = options.batches or host_batches(data.x, data.y, nets, batching, n_train)
        place_nets = placer(nets, None, mesh, devices, placed)
        advance = host_advance(objective, orders, held, placed)
    else:
        place_nets = placer(nets, data, mesh, devices, placed)
        advance = device_advance(objective, placed)
    name = sets[0]["name"] + (f" and {len(sets) - 1} more" if several else "")
    tags = [(f"set{data_of[i]}/" if several else "") + f"{m}-s{s}" for i, (m, s) in enumerate(members)]
    chunk = options.chunk(config)
    layout = {**environment(), "networks": k, "seeds_in_batch": k, "seed_devices": seed_devices(k),
              "chunk_epochs": chunk, "feed": "host" if host_fed else "device"}
    rid = None if options.checkpoint_dir is None else _run_id(
        objective, sets, members, data_of, dict(mesh=mesh, chunk=chunk, host_fed=host_fed, devices=devices,
                                                span=options.span_processes))
    run = _Run(config, options, chunk, rid, tags, f"{name} D={model.max_depth} {' '.join(tags)}", called)
    state, histories, seconds, resumed_from, call_seconds = _drive(net, advance, place_nets, run)
    return FitResult(model, config, state, [(m, int(s)) for m, s in members], data_of.tolist(), seconds, layout,
                     histories, resumed_from, call_seconds)


@dataclasses.dataclass(frozen=True)
class _Run:
    """What the loop needs besides the state and the feed."""

    config: TrainConfig
    options: RunOptions
    chunk_epochs: int
    run_id: Any
    tags: list[str]
    name: str
    called: float


def _drive(net: NetState, advance: Callable, place: Callable, run: _Run):
    """The loop: restore, chunks, compaction, saves, progress. Returns (state, histories,
    seconds over every call, epochs done before this call or None, seconds of this call)."""
    config, options = run.config, run.options
    max_epochs, k = config.max_epochs, int(net.epoch.shape[0])
    active = np.arange(k)
    parts: list[tuple[np.ndarray, NetState]] = []
    histories: list[list[dict[str, float]]] = [[] for _ in range(k)]
    epoch, resumed_from, earlier = 0, None, 0.0
    ckpt = Checkpoints(options.checkpoint_dir) if options.checkpoint_dir is not None else None
    if ckpt is not None:
        saved = ckpt.restore(_savable(net), run.run_id)
        if saved is not None:
            full, meta = _loadable(saved[0]), saved[1]
            epoch = resumed_from = int(meta["epochs"] if "epochs" in meta else meta["stop"])
            active = np.asarray(meta["active"], dtype=np.int64)
            histories = meta.get("history") or histories
            earlier = float(meta.get("seconds", 0.0))
            finished = np.setdiff1d(np.arange(k), active)
            parts = [(finished, _take(full, finished))] if finished.size else []
            net = _take(full, active)
            options.log(f"resuming {run.name} after epoch {epoch}")
    start, cadence = time.perf_counter(), SaveCadence(options.save_every_s(config))
    limit = max_epochs if options.stop_after_epochs is None else min(max_epochs, options.stop_after_epochs)
    progress, close = _progress(options.progress, max_epochs, run.name, config.stop_on)
    writer = options.metrics_writer
    if active.size:  # a checkpoint of finished networks (killed before their results were written) has none
        net = place(net, active)
    # The stop flags before a chunk are those the previous chunk read back: they cross to the host once per chunk.
    was_done, was_nonfinite = to_host((net.done, net.nonfinite)) if active.size else (None, None)
    try:
        while active.size and epoch < limit:
            t0 = time.perf_counter()
            stop = min(epoch + run.chunk_epochs, limit)
            net, rows = advance(net, active, epoch, stop)
            seconds = time.perf_counter() - t0
            for e, row_list in enumerate(rows or []):
                for j, row in enumerate(row_list):
                    if row is not None:
                        histories[active[j]].append({**row, "seconds": seconds / len(rows)})
                if writer is not None:
                    writer.write(epoch + e, {f"{run.tags[active[j]]}/{name}": v for j, row in enumerate(row_list)
                                             if row is not None for name, v in row.items()
                                             if name != "epoch" and isinstance(v, float)})
            done, nonfinite, epochs, best, best_epoch = to_host(
                (net.done, net.nonfinite, net.epoch, net.best_loss, net.best_epoch))
            if writer is not None and rows is None:
                objective = "train_loss" if not config.held_out else f"{config.stop_on}_loss"
                writer.write(stop, {f"{run.tags[i]}/{name}": float(v[j]) for j, i in enumerate(active)
                                    for name, v in (("epochs", epochs), (f"best_{objective}", best))})
            for j in np.flatnonzero(nonfinite & ~was_nonfinite & ~was_done):
                warnings.warn(f"non-finite loss at epoch {int(epochs[j]) - 1} ({run.tags[active[j]]}): stopping, "
                              f"keeping the parameters of epoch {int(best_epoch[j])}", RuntimeWarning, stacklevel=3)
            epoch = stop
            running_best = float(np.min(best)) if best.size else float("nan")
            was_done, was_nonfinite = done, nonfinite
            if done.all() or _should_compact(done):
                parts.append((active[done], _take(net, np.flatnonzero(done))))
                keep = np.flatnonzero(~done)
                active, net = active[keep], _take(net, keep)
                was_done, was_nonfinite = done[keep], nonfinite[keep]
                if active.size:
                    net = place(net, active)
            out_of_time = (options.stop_after_seconds is not None
                           and time.perf_counter() - run.called + seconds > options.stop_after_seconds)
            stopping = not active.size or out_of_time or epoch >= limit
            if ckpt is not None and (cadence.due() or stopping):
                t_save = time.monotonic()
                meta = {"epochs": epoch, "active": active.tolist(), "history": histories,
                        "seconds": earlier + time.perf_counter() - start}
                ckpt.save(epoch, _savable(_assemble(parts + ([(active, net)] if active.size else []))), meta,
                          run.run_id)
                cadence.saved(t_save)
            if progress is not None:
                progress(int(np.max(epochs)), {"running": int(active.size), "best": running_best})
            if out_of_time:
                break
    finally:
        close()
        if ckpt is not None:
            ckpt.close()
    final = gather(_assemble(parts + ([(active, net)] if active.size else [])))
    now = time.perf_counter()
    return final, histories, earlier + now - start, resumed_from, now - start


def _progress(setting, total: int, desc: str, stop_on: str):
    """(progress(done, info) or None, close()) for `RunOptions.progress`."""
    if callable(setting):
        return (lambda done, info: setting(done, total)), (lambda: None)
    if not setting:
        return None, (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=total, leave=False, unit="epoch", desc=desc)

    def report(done: int, info: dict) -> None:
        bar.update(done - bar.n)
        bar.set_postfix({f"best {stop_on}_loss": f"{info['best']:.4f}", "running": info["running"]})

    return report, bar.close


# ---------------------------------------------------------------------------- inputs


def _data_and_networks(model: Model, config: TrainConfig, data: Any, networks: Sequence[Any]):
    """The training sets as dicts of arrays (x, y, held-out x and y where stopping watches one,
    name) and the networks as one list of (method, seed) per set; everything checked."""
    if data is None:
        raise ValueError("fit needs data: a Dataset, (x, y) arrays, or a list of Datasets")
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], Dataset):
        if config.held_out:
            raise ValueError(f"stop_on={config.stop_on!r} needs a Dataset with that split; (x, y) arrays train "
                             "on the train ELBO only")
        sets, groups = _arrays(model, data, networks)
    else:
        several = not isinstance(data, Dataset)
        datasets = list(data) if several else [data]
        groups = [list(g) for g in networks] if several else [list(networks)]
        if not datasets or len(groups) != len(datasets):
            raise ValueError(f"{len(datasets)} data sets need as many lists of networks, got {len(groups)}")
        sets = [_dataset_arrays(model, config, d) for d in datasets]
    groups = [[_member(m, config) for m in g] for g in groups]
    if not all(groups) or any(len(set(g)) != len(g) for g in groups):
        raise ValueError(f"networks must be non-empty lists of distinct seeds or (method, seed) pairs, got {networks}")
    sizes = {tuple(len(s[key]) for key in ("x", "held_x") if key in s) for s in sets}
    if len(sizes) > 1:
        raise ValueError(f"the data sets of one program need equal sizes (train, and the held-out split stopping "
                         f"watches), got {sorted(sizes)}")
    return sets, groups


def _member(m: Any, config: TrainConfig) -> Member:
    method, seed = (config.method, m) if np.ndim(m) == 0 else tuple(m)
    method_index([method])
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seeds must be integers in [0, {MAX_SEED}] (uint32 PRNG keys), got {seed!r}")
    return str(method), int(seed)


def _arrays(model: Model, data: tuple, networks: Sequence[Any]):
    """(x, y) arrays: one set shared by every network, or one per network (a leading axis)."""
    x, y = np.asarray(data[0]), np.asarray(data[1])
    per_network = x.ndim == len(model.input_shape) + 2
    if not per_network:
        return [{"x": _inputs(model, x), "y": _targets(model, y, len(x)), "name": "data"}], [list(networks)]
    if x.shape[0] != len(networks) or y.shape[0] != len(networks):
        raise ValueError(f"one training set per network needs a leading axis of {len(networks)}, got {x.shape[0]} "
                         f"and {y.shape[0]}")
    return ([{"x": _inputs(model, xi), "y": _targets(model, yi, len(xi)), "name": "data"} for xi, yi in zip(x, y)],
            [[n] for n in networks])


def _inputs(model: Model, x: np.ndarray) -> np.ndarray:
    return check_inputs(x, model.input_shape, inputs=model.inputs)


def _targets(model: Model, y: np.ndarray, n: int) -> np.ndarray:
    return (check_targets(y, n) if model.likelihood == "gaussian"
            else check_labels(y, model.num_classes, n, target_shape=model.target_shape))


def _dataset_arrays(model: Model, config: TrainConfig, d: Dataset) -> dict[str, Any]:
    if model.input_shape != d.input_shape or model.num_classes != d.num_classes:
        raise ValueError(f"model expects inputs {model.input_shape} with {model.num_classes} classes, data set "
                         f"{d.name!r} has {d.input_shape} with {d.num_classes}")
    if model.target_shape != d.target_shape or model.inputs != d.inputs:
        raise ValueError(f"model expects {model.inputs} inputs and targets of shape {list(model.target_shape)} per "
                         f"example, data set {d.name!r} has {d.inputs} inputs and {list(d.target_shape)}")
    d = with_stopping_data(d, config)
    arrays = {"x": d.x_train, "y": d.y_train, "name": d.name}
    if config.held_out:
        arrays["held_x"], arrays["held_y"] = (d.x_val, d.y_val) if config.stop_on == "val" else (d.x_test, d.y_test)
        arrays["all"] = [d.x_train, d.y_train, d.x_test, d.y_test] + ([d.x_val, d.y_val] if d.x_val is not None else [])
    return arrays


def with_stopping_data(data: Dataset, config: TrainConfig) -> Dataset:
    """`data` with the validation split that `stop_on='val'` needs (drawn with seed 0, so every
    network of a study shares it), unless it has one already."""
    if config.stop_on == "val" and data.x_val is None:
        return split_validation(data, config.val_fraction, seed=0)
    return data


def _run_id(objective: Objective, sets: list[dict], members: list[Member], data_of: np.ndarray, how: dict) -> dict:
    """What must match for a checkpoint to resume this run exactly: configs, data, networks, and
    what sets the floats (device count, versions; the chunking of a train-ELBO run, whose
    compactions set its vmapped batches; the mesh and feed of a held-out run)."""
    model, config = objective.model, objective.config
    if not config.held_out:
        x = np.stack([s["x"] for s in sets]) if len(sets) > 1 else sets[0]["x"]
        y = np.stack([s["y"] for s in sets]) if len(sets) > 1 else sets[0]["y"]
        rid = run_id(model, config, x, y, seeds=[s for _, s in members], chunk_epochs=how["chunk"],
                     devices=jax.local_device_count(), **numerics())
        methods = sorted({m for m, _ in members})
        return rid if methods == [config.method] else {**rid, "methods": [m for m, _ in members]}
    arrays = [a for s in sets for a in s["all"]]
    name = sets[0]["name"] + (f" and {len(sets) - 1} more" if len(sets) > 1 else "")
    return run_id(model, config, *arrays, name=name, members=[list(m) for m in members],
                  devices=jax.local_device_count(), mesh=dict(how["mesh"]), **numerics(),
                  **({"feed": "host"} if how["host_fed"] else {}),
                  **({"processes": jax.process_count(), "mesh_devices": len(how["devices"])} if how["span"] else {}),
                  **({"data_of": data_of.tolist()} if len(sets) > 1 else {}))


# ---------------------------------------------------------------------------- state


@functools.lru_cache(maxsize=32)
def _compiled_init(objective: Objective, steps_per_epoch: int):
    """Seeds [K] -> NetState [K]. On the train ELBO a seed's key splits into the initialisation's
    and the data order's; on a held-out split one key serves both."""
    optimizer = make_optimizer(objective.config, steps_per_epoch)
    split = not objective.config.held_out

    def one(seed):
        key = jax.random.key(seed)
        init_key, order_key = jax.random.split(key) if split else (key, key)
        return init_net_state(init_state(init_key, objective.model, optimizer), order_key, objective.config.max_epochs)

    return jax.jit(jax.vmap(one))


def _take(tree, idx: np.ndarray):
    """The networks `idx` of a network-batched tree (one compiled gather for the whole tree)."""
    return _gather(tree, jnp.asarray(idx))


@jax.jit
def _gather(tree, idx):
    return jax.tree_util.tree_map(lambda a: a[idx], tree)


def _assemble(parts: list[tuple[np.ndarray, Any]]):
    """One tree for all networks, in their original order, from (positions, tree) parts."""
    if len(parts) == 1:
        return parts[0][1]
    order = np.argsort(np.concatenate([idx for idx, _ in parts]))
    return _merge([jax.device_put(gather(p), jax.local_devices()[0]) for _, p in parts], jnp.asarray(order))


@jax.jit
def _merge(parts, order):
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a)[order], *parts)


def _should_compact(done: np.ndarray) -> bool:
    """Stopped networks leave the batch once half of it has stopped (one more compile per halving)."""
    return 0 < done.sum() < done.size and done.sum() * 2 >= done.size


def _savable(net: NetState) -> NetState:
    """A host copy with raw key data (checkpoint formats store plain arrays, not typed keys)."""
    return to_host(net.replace(key=jax.random.key_data(net.key)))


def _loadable(net: NetState) -> NetState:
    return net.replace(key=jax.random.wrap_key_data(jnp.asarray(net.key)))
