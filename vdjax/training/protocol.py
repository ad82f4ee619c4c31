"""The training protocol shared by every trainer: one state per network, one epoch-end update.

Every regime trains many networks at once, with a leading network axis on every array of
`NetState`, under one driver (`vdjax.training.driver`): the spirals loop (`vdjax.training.loop`: epochs under
`lax.while_loop`, stopping on the train ELBO) and the image trainer (`vdjax.training.trainer`: held-out
stopping, data on the device or fed from the host). They differ only in how an epoch advances;
the pieces they share are here:
- `end_epoch`: patience, keep-best and non-finite handling, one pure function;
- `stop_reason`: why a network stopped, from its state;
- `Batching`: how an epoch is cut into batches;
- `take` / `assemble`: compaction of stopped networks out of the batch (under `vmap` a
  stopped network still costs a full share of every step) and reassembly in original order;
- `SaveCadence`: how often a checkpoint is written (at most every `every_s` seconds and at
  most 5% of the time spent saving);
- `run_id`: what must match for a checkpoint to be resumed.

Conventions: `epoch` counts completed epochs; `best_epoch` is the 0-based index of the best
epoch (-1 before any), the last strict improvement; a network stops once the epochs since
then, `epoch - 1 - best_epoch`, reach `patience` (`patience_rule='reached'`) or exceed it
('exceeded', the reference code's `i - best_epoch > early_stop` after 0-based epoch i), at
`max_epochs`, or at a non-finite loss, after which nothing of it changes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from vdjax.training.checkpoints import fingerprint
from vdjax.runtime import gather, to_host
from vdjax.training.train import PatienceRule, TrainState


class NetState(flax.struct.PyTreeNode):
    """Everything the protocol carries for one network (a leading axis for many)."""

    train: TrainState
    best_params: dict[str, Any]
    best_batch_stats: dict[str, Any]
    best_loss: jax.Array
    best_epoch: jax.Array  # 0-based index of the best epoch, -1 before any
    epoch: jax.Array  # epochs completed
    done: jax.Array  # stopped: patience exhausted, max_epochs reached or non-finite loss
    nonfinite: jax.Array  # stopped because the loss became NaN/inf (best parameters kept)
    key: jax.Array  # for the data order
    history: jax.Array  # [max_epochs] the watched objective per epoch


def init_net_state(train: TrainState, key: jax.Array, max_epochs: int) -> NetState:
    """A fresh network: no best yet, nothing done, the history all NaN."""
    return NetState(
        train=train,
        best_params=train.params,
        best_batch_stats=train.batch_stats,
        best_loss=jnp.array(jnp.inf, jnp.float32),
        best_epoch=jnp.array(-1, jnp.int32),
        epoch=jnp.array(0, jnp.int32),
        done=jnp.array(False),
        nonfinite=jnp.array(False),
        key=key,
        history=jnp.full((max_epochs,), jnp.nan, jnp.float32),
    )


def end_epoch(net: NetState, trained: TrainState, candidate: TrainState, loss: jax.Array, *, patience: int,
              max_epochs: int, patience_rule: PatienceRule = "reached") -> NetState:
    """One network after an epoch (vmap it for many).

    net.train: the state before the epoch; trained: after it; candidate: the state whose
    objective is `loss` (kept as the best when `loss` improves). A non-finite loss freezes the
    network where it was before the epoch; a network already done does not change at all.
    """
    finite = jnp.isfinite(loss)
    improved = finite & (loss < net.best_loss)
    pick = lambda a, b: jax.tree_util.tree_map(lambda u, v: jnp.where(improved, u, v), a, b)  # noqa: E731
    best_epoch = jnp.where(improved, net.epoch, net.best_epoch)
    epoch = net.epoch + 1
    updated = net.replace(
        train=jax.tree_util.tree_map(lambda u, v: jnp.where(finite, u, v), trained, net.train),
        best_params=pick(candidate.params, net.best_params),
        best_batch_stats=pick(candidate.batch_stats, net.best_batch_stats),
        best_loss=jnp.where(improved, loss, net.best_loss),
        best_epoch=best_epoch,
        epoch=epoch,
        done=(~finite) | (epoch >= max_epochs) | patience_spent(epoch - 1 - best_epoch, patience, patience_rule),
        nonfinite=~finite,
        history=net.history.at[net.epoch].set(loss),
    )
    return jax.tree_util.tree_map(lambda old, new: jnp.where(net.done, old, new), net, updated)


def patience_spent(since_best: jax.Array, patience: int, rule: PatienceRule) -> jax.Array:
    """Whether `since_best` epochs without a strict improvement end the run under `rule`."""
    if rule not in ("reached", "exceeded"):
        raise ValueError(f"patience_rule must be 'reached' or 'exceeded', got {rule!r}")
    return since_best >= patience if rule == "reached" else since_best > patience


def stop_reason(done: bool, nonfinite: bool, epoch: int, max_epochs: int) -> str:
    """'nonfinite', 'max_epochs', 'patience', or 'interrupted' (not done: stopped from outside)."""
    if not done:
        return "interrupted"
    if nonfinite:
        return "nonfinite"
    return "max_epochs" if epoch >= max_epochs else "patience"


def best_train_state(net: NetState, index: int | None = None) -> TrainState:
    """The kept (best) parameters as a TrainState (optimiser state: the last), of network
    `index` of a batched state, or of an unbatched one."""
    if index is not None:
        net = take(net, np.array([index]))
        net = jax.tree_util.tree_map(lambda a: a[0], net)
    return net.train.replace(params=net.best_params, batch_stats=net.best_batch_stats)


# ---------------------------------------------------------------------------- batching


@dataclasses.dataclass(frozen=True)
class Batching:
    """How an epoch is cut into batches, in both regimes: ceil(N / batch_size) equal batches of
    N // n_batches examples after a fresh shuffle (one static shape), so fewer than n_batches
    examples sit out each epoch, a different few every time. At the paper's spirals sizes
    (200 points, batch 512) this is full-batch gradient descent."""

    n_batches: int
    batch_size: int

    @staticmethod
    def for_size(n_train: int, batch_size: int) -> "Batching":
        n_batches = math.ceil(n_train / batch_size)
        return Batching(n_batches, n_train // n_batches)

    def split(self, permutation):
        """[n_batches, batch_size] example indices from a permutation of the training set
        (a numpy or a JAX array: host-fed and on-device regimes alike)."""
        return permutation[: self.n_batches * self.batch_size].reshape(self.n_batches, self.batch_size)


# ---------------------------------------------------------------------------- compaction


def take(tree, idx: np.ndarray):
    """The networks `idx` of a network-batched tree (one compiled gather for the whole tree)."""
    return _gather(tree, jnp.asarray(idx))


@jax.jit
def _gather(tree, idx):
    return jax.tree_util.tree_map(lambda a: a[idx], tree)


def assemble(parts: list[tuple[np.ndarray, Any]]):
    """One tree for all networks, in their original order, from (positions, tree) parts."""
    if len(parts) == 1:
        return parts[0][1]
    order = np.argsort(np.concatenate([idx for idx, _ in parts]))
    return _merge([jax.device_put(gather(p), jax.local_devices()[0]) for _, p in parts], jnp.asarray(order))


@jax.jit
def _merge(parts, order):
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a)[order], *parts)


def should_compact(done: np.ndarray) -> bool:
    """Stopped networks leave the batch once half of it has stopped (one more compile per halving)."""
    return 0 < done.sum() < done.size and done.sum() * 2 >= done.size


# ---------------------------------------------------------------------------- checkpoints


def savable(net: NetState) -> NetState:
    """A host copy with raw key data (checkpoint formats store plain arrays, not typed keys)."""
    return to_host(net.replace(key=jax.random.key_data(net.key)))


def loadable(net: NetState) -> NetState:
    return net.replace(key=jax.random.wrap_key_data(jnp.asarray(net.key)))


class SaveCadence:
    """When to checkpoint: at most every `every_s` seconds (0: whenever asked), and with at most
    5% of the time spent saving (a 6-seed width-512 spirals state is 380 MB, 2.6 s to save)."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        self.last = time.monotonic()
        self.cost = 0.0

    def due(self) -> bool:
        if self.every_s == 0:
            return True
        waited = time.monotonic() - self.last
        return waited >= self.every_s and waited >= 20 * self.cost

    def saved(self, started: float) -> None:
        """Call after a save that began at `started` (time.monotonic())."""
        self.last = time.monotonic()
        self.cost = self.last - started


MAX_SEED = 2**32 - 1  # seeds become uint32 PRNG keys: a larger one would silently wrap around


def config_key(config: Any) -> str:
    """A config's repr naming only the fields that differ from their defaults, so that a field a
    later version adds, left at its default, keeps earlier checkpoints resumable."""
    if not dataclasses.is_dataclass(config):
        return repr(config)
    changed = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if default is dataclasses.MISSING or type(value) is not type(default) or value != default:
            changed.append(f"{f.name}={value!r}")
    return f"{type(config).__name__}({', '.join(changed)})"


def run_id(model_config: Any, train_config: Any, *arrays: np.ndarray, name: str | None = None,
           **networks_and_layout: Any) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed: configs, the data themselves (two subsets of
    the same size drawn with other seeds are different runs), and what the caller names: the
    networks (seeds, methods) and what sets their floats (devices, chunking, versions)."""
    rid = {"model_config": config_key(model_config), "train_config": config_key(train_config),
           "data": [name, fingerprint(*arrays)] if name is not None else fingerprint(*arrays)}
    return {**rid, **networks_and_layout}
