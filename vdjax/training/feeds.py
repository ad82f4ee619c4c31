"""How epochs reach the networks: the data on the device, or batches fed from the host.

A feed gives the runner (`vdjax.training.runner`) two functions:
- `place(net, active)` puts the state of the networks `active` (positions in the run) on the
  devices, with what their epochs read;
- `advance(net, active, epoch, stop)` runs epochs `epoch .. stop-1` and returns the networks
  and, per epoch, a row of metrics per network (None where it was not running), or None when
  the regime keeps no host history.

The device feed runs a chunk of epochs as one compiled call of `vdjax.training.epoch.epoch`,
vmapped over networks: on the train ELBO a `lax.while_loop` that ends as soon as every network
has stopped, on a held-out split a `lax.scan` that returns each epoch's metrics. The host feed
takes one compiled step per batch from `batches(epoch, active)` (data that does not fit on the
device), then `finish_epoch`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vdjax.runtime import largest_divisor, mesh_shardings, network_mesh, place, to_host
from vdjax.training.config import Batches
from vdjax.training.epoch import Batching, EpochData, NetState, epoch, finish_epoch, network_rows
from vdjax.training.objective import Objective
from vdjax.training.step import make_optimizer, train_step


@dataclasses.dataclass
class Networks:
    """What the feeds know of the run's K networks: each one's method (an index, or None when
    all share the config's, computed statically), seed and data set (None: one shared set)."""

    methods: np.ndarray | None
    seeds: np.ndarray
    data_of: np.ndarray | None


@dataclasses.dataclass
class Placement:
    """The mesh of the networks now running and what lives on it."""

    mesh: Mesh | None = None
    nets: NamedSharding | None = None
    batch: NamedSharding | None = None
    methods: Any = None
    data_of: Any = None
    data: EpochData | None = None


def mesh_for(n_networks: int, mesh: dict[str, int | None], devices: list) -> Mesh | None:
    """The mesh of `devices` for `n_networks` networks. A user-set `nets` that no longer divides
    the networks left (after compaction) shrinks to the largest divisor below it."""
    nets = mesh["nets"]
    if nets is not None:
        nets = largest_divisor(n_networks, nets)
    return network_mesh(n_networks, nets, mesh["data"], devices)


def placer(networks: Networks, data: EpochData | None, mesh: dict[str, int | None], devices: list,
           placed: Placement) -> Callable[[NetState, np.ndarray], NetState]:
    """`place(net, active)`: the networks on their mesh, their methods and data sets beside them,
    and (the device feed) the data replicated on every device of the mesh."""
    def place_nets(net: NetState, active: np.ndarray) -> NetState:
        placed.mesh = mesh_for(active.size, mesh, devices)
        placed.nets, placed.batch = mesh_shardings(placed.mesh)
        placed.methods = None if networks.methods is None else place(networks.methods[active], placed.nets)
        placed.data_of = None if networks.data_of is None else place(networks.data_of[active], placed.nets)
        if data is not None:
            everywhere = None if placed.mesh is None else NamedSharding(placed.mesh, PartitionSpec())
            placed.data = place(data, everywhere)
        return place(net, placed.nets)

    return place_nets


def device_advance(objective: Objective, placed: Placement):
    """Epochs inside one compiled program, the host reading only a chunk's results."""
    held_name = objective.config.stop_on

    def advance(net: NetState, active: np.ndarray, first: int, stop: int):
        data = placed.data.replace(data_of=placed.data_of)
        if not objective.config.held_out:
            return _compiled_until(objective, placed.methods is not None, placed.data_of is not None)(
                net, placed.methods, data, jnp.int32(stop)), None
        run = _compiled_epochs(objective, placed.methods is not None, placed.data_of is not None, placed.mesh)
        net, rows = run(net, placed.methods, data, n_epochs=stop - first)
        return net, network_rows(to_host(rows), first, held_name)

    return advance


def host_advance(objective: Objective, batches: Batches, held: EpochData | None, placed: Placement):
    """Epochs fed from the host, batch by batch, from `batches(epoch, active)`."""
    steps_per_epoch = Batching.for_size(objective.n_train, objective.config.batch_size).n_batches

    def advance(net: NetState, active: np.ndarray, first: int, stop: int):
        step = _compiled_step(objective, steps_per_epoch, placed.methods is not None)
        finish = _compiled_finish(objective, placed.methods is not None, held is not None and held.data_of is not None)
        rows_all = []
        for e in range(first, stop):
            losses = []
            for bx, by in batches(e, active):
                train, loss = step(net.train, net.done, placed.methods, place(bx, placed.batch),
                                   place(by, placed.batch))
                net = net.replace(train=train)
                losses.append(loss)
            own = EpochData() if held is None else held.replace(
                data_of=None if held.data_of is None else held.data_of[active])
            net, rows = finish(net, placed.methods, own, jnp.mean(jnp.stack(losses), axis=0))
            rows_all += network_rows(jax.tree_util.tree_map(lambda a: a[None], to_host(rows)), e,
                                     objective.config.stop_on)
        return net, rows_all

    return advance


def host_batches(x, y, networks: Networks, batching: Batching, n_train: int) -> Batches:
    """The default host batches, [K, B, ...] each: network i's data in the order drawn from
    (seed_i, epoch) alone (so a resumed run continues exactly)."""
    def batches(e: int, active: np.ndarray):
        orders = [batching.split(np.random.default_rng([int(networks.seeds[i]), e]).permutation(n_train))
                  for i in active]
        rows_of = None if networks.data_of is None else networks.data_of[active][:, None]
        for b in range(batching.n_batches):
            idx = np.stack([order[b] for order in orders])
            yield (x[rows_of, idx], y[rows_of, idx]) if rows_of is not None else (x[idx], y[idx])

    return batches


def _data_axes(per_network_data: bool) -> EpochData:
    return EpochData(x=None, y=None, held_x=None, held_y=None, data_of=0 if per_network_data else None)


@functools.lru_cache(maxsize=32)
def _compiled_until(objective: Objective, per_network_method: bool, per_network_data: bool):
    """(net [K], methods [K] | None, data, stop_epoch) -> net: epochs until `stop_epoch` or until
    every network has stopped."""
    def until(net, method, data, stop_epoch):
        body = lambda s: epoch(s, method, data, objective=objective)[0]  # noqa: E731
        return jax.lax.while_loop(lambda s: (~s.done) & (s.epoch < stop_epoch), body, net)

    in_axes = (0, 0 if per_network_method else None, _data_axes(per_network_data), None)
    return jax.jit(jax.vmap(until, in_axes=in_axes), donate_argnums=0)


@functools.lru_cache(maxsize=16)
def _compiled_epochs(objective: Objective, per_network_method: bool, per_network_data: bool, mesh: Mesh | None):
    """(net [K], methods [K], data, n_epochs) -> (net, rows [n_epochs, K]): `n_epochs` epochs of
    every network. On a mesh with a data axis every network's batch is split over it."""
    split_batch = mesh is not None and mesh.shape["data"] > 1
    on_data = NamedSharding(mesh, PartitionSpec("data")) if split_batch else None

    def chunk(net, method, data, n_epochs: int):
        return jax.lax.scan(lambda n, _: epoch(n, method, data, objective=objective, on_data=on_data), net, None,
                            length=n_epochs)

    def run(net, method, data, n_epochs: int):
        in_axes = (0, 0 if per_network_method else None, _data_axes(per_network_data))
        net, rows = jax.vmap(functools.partial(chunk, n_epochs=n_epochs), in_axes=in_axes,
                             spmd_axis_name="nets" if split_batch else None)(net, method, data)
        return net, jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), rows)  # [n_epochs, K]

    return jax.jit(run, static_argnames="n_epochs", donate_argnums=0)


@functools.lru_cache(maxsize=16)
def _compiled_step(objective: Objective, steps_per_epoch: int, per_network_method: bool):
    """(train [K], done [K], methods [K], x [K, B, ...], y [K, B]) -> (train, loss [K]): one SGD
    step of every network on its own batch; a stopped network is left as it was."""
    optimizer = make_optimizer(objective.config, steps_per_epoch)

    def one(state, done, method, x, y):
        new, metrics = train_step(state, x, y, method, objective=objective, optimizer=optimizer)
        return jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), state, new), metrics["loss"]

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0 if per_network_method else None, 0, 0)), donate_argnums=0)


@functools.lru_cache(maxsize=16)
def _compiled_finish(objective: Objective, per_network_method: bool, per_network_data: bool):
    """The end of a host-fed epoch of every network: the state after the epoch is both the
    trained state and the keep-best candidate."""
    def one(net, method, held, loss):
        return finish_epoch(net, (net.train, net.train, loss), method, held, objective=objective)

    in_axes = (0, 0 if per_network_method else None, _data_axes(per_network_data), 0)
    return jax.jit(jax.vmap(one, in_axes=in_axes))
