"""One epoch of one network, and the state the protocol carries between epochs.

`epoch` is the whole of an epoch in both regimes: shuffle, batches, SGD steps, then
`finish_epoch`: the network's weights over depths, the held-out metrics when early stopping
watches a held-out split, and `end_epoch`, the stopping update (patience, keep-best,
non-finite losses). Pure functions of one network: the feeds (`vdjax.training.feeds`) vmap
them over networks and loop them over epochs.

Conventions: `epoch` counts completed epochs; `best_epoch` is the 0-based index of the best
epoch (-1 before any), the last strict improvement; a network stops once the epochs since
then, `epoch - 1 - best_epoch`, reach `patience` (`patience_rule='reached'`) or exceed it
('exceeded', the reference code's `i - best_epoch > early_stop` after 0-based epoch i), at
`max_epochs`, or at a non-finite loss, after which nothing of it changes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from vdjax.nn.models import LDN
from vdjax.training.config import TrainConfig, patience_spent
from vdjax.training.objective import MethodArg, Objective, depth_weights
from vdjax.training.step import TrainState, make_optimizer, train_step

HELDOUT_BATCH = 1024  # examples per forward pass of the held-out evaluation


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


class EpochData(flax.struct.PyTreeNode):
    """The arrays an epoch reads: training inputs and labels, and the held-out split stopping
    watches (None on the train ELBO). With several data sets the arrays have a leading set axis
    and `data_of` is the network's set."""

    x: jax.Array | None = None
    y: jax.Array | None = None
    held_x: jax.Array | None = None
    held_y: jax.Array | None = None
    data_of: jax.Array | None = None

    def rows(self, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
        return (self.x[self.data_of, idx], self.y[self.data_of, idx]) if self.data_of is not None else (
            self.x[idx], self.y[idx])

    def held(self) -> tuple[jax.Array, jax.Array]:
        return (self.held_x[self.data_of], self.held_y[self.data_of]) if self.data_of is not None else (
            self.held_x, self.held_y)


def init_net_state(train: TrainState, key: jax.Array, max_epochs: int) -> NetState:
    """A fresh network: no best yet, nothing done, the history all NaN."""
    return NetState(train=train, best_params=train.params, best_batch_stats=train.batch_stats,
                    best_loss=jnp.array(jnp.inf, jnp.float32), best_epoch=jnp.array(-1, jnp.int32),
                    epoch=jnp.array(0, jnp.int32), done=jnp.array(False), nonfinite=jnp.array(False), key=key,
                    history=jnp.full((max_epochs,), jnp.nan, jnp.float32))


@dataclasses.dataclass(frozen=True)
class Batching:
    """How an epoch is cut into batches: ceil(N / batch_size) equal batches of N // n_batches
    examples after a fresh shuffle (one static shape), so fewer than n_batches examples sit out
    each epoch, a different few every time. At the paper's spirals sizes (200 points, batch
    512) this is full-batch gradient descent."""

    n_batches: int
    batch_size: int

    @staticmethod
    def for_size(n_train: int, batch_size: int) -> "Batching":
        n_batches = math.ceil(n_train / batch_size)
        return Batching(n_batches, n_train // n_batches)

    def split(self, permutation):
        """[n_batches, batch_size] example indices from a permutation of the training set
        (a numpy or a JAX array: host-fed and on-device alike)."""
        return permutation[: self.n_batches * self.batch_size].reshape(self.n_batches, self.batch_size)


def epoch(net: NetState, method: MethodArg | None, data: EpochData, *, objective: Objective,
          on_data: NamedSharding | None = None) -> tuple[NetState, dict[str, jax.Array]]:
    """One epoch of one network with its data on the device; returns the network after it and
    its row of metrics (`train_loss`, `q`, held-out metrics, `ran`).

    On the train ELBO with one full batch, the step's loss belongs to the parameters before it,
    so those are the keep-best candidate; otherwise the candidate is the state after the epoch,
    as in the reference code. `on_data`: split every batch over a mesh's data axis."""
    config, n_train = objective.config, objective.n_train
    batching = Batching.for_size(n_train, config.batch_size)
    step = _step(objective, batching.n_batches)
    key, perm_key = jax.random.split(net.key)
    if not config.held_out and batching.n_batches == 1 and batching.batch_size == n_train:
        trained, metrics = step(net.train, *data.rows(slice(None)), method)
        loss, candidate = metrics["loss"], net.train
    else:
        def one_step(state, idx):
            bx, by = data.rows(idx)
            if on_data is not None:
                bx, by = jax.lax.with_sharding_constraint((bx, by), on_data)
            state, metrics = step(state, bx, by, method)
            return state, metrics["loss"]

        trained, losses = jax.lax.scan(one_step, net.train, batching.split(jax.random.permutation(perm_key, n_train)))
        loss, candidate = jnp.mean(losses), trained
    return finish_epoch(net.replace(key=key), (trained, candidate, loss), method, data, objective=objective)


def finish_epoch(net: NetState, stepped: tuple[TrainState, TrainState, jax.Array], method: MethodArg | None,
                 data: EpochData, *, objective: Objective) -> tuple[NetState, dict]:
    """The end of an epoch whose steps gave `stepped` = (the trained state, the keep-best
    candidate, the train loss): the row of metrics, and `end_epoch` on the criterion stopping
    watches (the train loss, or the held-out objective of the trained state while the train
    loss is finite)."""
    config = objective.config
    trained, candidate, train_loss = stepped
    row = {"train_loss": train_loss, "q": depth_weights(trained.params["depth_logits"], objective.resolve(method))}
    criterion = train_loss
    if config.held_out:
        hx, hy = data.held()
        m = objective.heldout(trained.params, heldout_outputs(objective, trained, hx), hy, method)
        row.update(m)
        criterion = jnp.where(jnp.isfinite(train_loss), m["loss"], jnp.nan)
    new = end_epoch(net, trained, candidate, criterion, config)
    return new, {**row, "ran": ~net.done}


def heldout_outputs(objective: Objective, state: TrainState, x: jax.Array) -> jax.Array:
    """Eval-mode outputs [D+1, N, ...] inside a compiled program, in chunks of at most
    `HELDOUT_BATCH` examples (the last padded)."""
    model = LDN(objective.model)
    variables = {"params": state.params["model"], "batch_stats": state.batch_stats}
    n = x.shape[0]
    size = min(HELDOUT_BATCH, n)
    chunks = jnp.pad(x, [(0, -n % size)] + [(0, 0)] * (x.ndim - 1)).reshape(-1, size, *x.shape[1:])
    out = jax.lax.map(lambda c: model.apply(variables, c, train=False), chunks)  # [n_chunks, D+1, size, ...]
    out = jnp.moveaxis(out, 0, 1)
    return out.reshape(out.shape[0], -1, *out.shape[3:])[:, :n]


def end_epoch(net: NetState, trained: TrainState, candidate: TrainState, loss: jax.Array,
              config: TrainConfig) -> NetState:
    """One network after an epoch: net.train is the state before it, `trained` the state after
    it, `candidate` the state whose objective is `loss` (kept as the best when `loss` improves).
    A non-finite loss freezes the network where it was before the epoch; a network already done
    does not change at all. The stopping rule: `config.patience`, `patience_rule`, `max_epochs`."""
    finite = jnp.isfinite(loss)
    improved = finite & (loss < net.best_loss)
    pick = lambda a, b: jax.tree_util.tree_map(lambda u, v: jnp.where(improved, u, v), a, b)  # noqa: E731
    best_epoch = jnp.where(improved, net.epoch, net.best_epoch)
    epoch_count = net.epoch + 1
    updated = net.replace(
        train=jax.tree_util.tree_map(lambda u, v: jnp.where(finite, u, v), trained, net.train),
        best_params=pick(candidate.params, net.best_params),
        best_batch_stats=pick(candidate.batch_stats, net.best_batch_stats),
        best_loss=jnp.where(improved, loss, net.best_loss),
        best_epoch=best_epoch,
        epoch=epoch_count,
        done=(~finite) | (epoch_count >= config.max_epochs) | patience_spent(epoch_count - 1 - best_epoch,
                                                                             config.patience, config.patience_rule),
        nonfinite=~finite,
        history=net.history.at[net.epoch].set(loss),
    )
    return jax.tree_util.tree_map(lambda old, new: jnp.where(net.done, old, new), net, updated)


def stop_reason(done: bool, nonfinite: bool, epochs: int, max_epochs: int) -> str:
    """'nonfinite', 'max_epochs', 'patience', or 'interrupted' (not done: stopped from outside)."""
    if not done:
        return "interrupted"
    if nonfinite:
        return "nonfinite"
    return "max_epochs" if epochs >= max_epochs else "patience"


def _step(objective: Objective, steps_per_epoch: int):
    optimizer = make_optimizer(objective.config, steps_per_epoch)

    def step(state, x, y, method):
        return train_step(state, x, y, method, objective=objective, optimizer=optimizer)

    return step


def network_rows(rows: dict[str, np.ndarray], first_epoch: int, held_name: str) -> list[list[dict | None]]:
    """Host rows [epochs][networks] from a chunk's stacked metrics [epochs, networks]: the
    history the driver keeps (None where a network was not running)."""
    names = {"train_loss": "train_loss", **{m: f"{held_name}_{m}" for m in ("loss", "log_lik", "error")}}
    n_epochs, k = rows["ran"].shape

    def row(e: int, j: int) -> dict:
        scalars = {names[m]: float(v[e, j]) for m, v in rows.items() if m in names}
        return {"epoch": first_epoch + e, **scalars, "q": np.asarray(rows["q"][e, j]).tolist()}

    return [[row(e, j) if rows["ran"][e, j] else None for j in range(k)] for e in range(n_epochs)]
