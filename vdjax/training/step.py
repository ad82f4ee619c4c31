"""The train state, the optimiser and the jitted train step.

Weights and depth logits live in one parameter tree, `{'model': ..., 'depth_logits': ...}`
(plus the Gaussian noise parameter `'log_noise'` for a regression network), and a single
`optax.sgd(lr, momentum)` updates them all, as in the paper.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from vdjax.depth.posterior import depth_posterior, init_depth_logits
from vdjax.nn.models import LDN, Model
from vdjax.training.config import METHOD_NAMES, Method, TrainConfig
from vdjax.training.objective import MethodArg, Objective


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: dict[str, Any]  # {'model': ..., 'depth_logits': [D+1]} (+ 'log_noise': [] if gaussian)
    batch_stats: dict[str, Any]
    opt_state: optax.OptState
    # Raw key data of the network's dropout (or MFVI weight-noise) stream (None without either);
    # step t uses fold_in(rng, t).
    rng: jax.Array | None = None

    @property
    def q(self) -> jax.Array:
        return depth_posterior(self.params["depth_logits"])

    @property
    def variables(self) -> dict[str, Any]:
        """The model's Flax variables, as `LDN.apply` takes them."""
        return {"params": self.params["model"], "batch_stats": self.batch_stats}


def drops_lr(config: TrainConfig, method: Method) -> bool:
    """Whether the learning rate of a `method` network drops at `lr_drop_epoch`."""
    return config.drops_lr(method)


def learning_rate(config: TrainConfig, steps_per_epoch: int, method: Method) -> optax.ScalarOrSchedule:
    """The learning rate of a `method` network: a constant, or a schedule of the step count
    (`piecewise_constant_schedule` scales from count == boundary on: step `lr_drop_epoch *
    steps_per_epoch`, the first of epoch `lr_drop_epoch`, is the first at the lower rate, as
    `TrainConfig.epoch_learning_rate` says per epoch)."""
    if not drops_lr(config, method):
        return config.learning_rate
    return optax.piecewise_constant_schedule(
        config.learning_rate, {config.lr_drop_epoch * steps_per_epoch: config.lr_drop_factor}
    )


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformationExtraArgs:
    """One SGD-with-momentum for weights and depth logits together.

    When the methods' learning rates differ, the rate is picked per network from the `method`
    index its update is given (`train_step` passes it), so that networks of several methods
    share one vmapped program; without it, `config.method`'s rate."""
    if len({drops_lr(config, m) for m in METHOD_NAMES}) == 1:
        return optax.sgd(learning_rate(config, steps_per_epoch, config.method), momentum=config.momentum)
    rates = [learning_rate(config, steps_per_epoch, m) for m in METHOD_NAMES]
    return optax.chain(optax.trace(decay=config.momentum),
                       _scale_by_method_lr(rates, METHOD_NAMES.index(config.method)))


def _scale_by_method_lr(rates: list[optax.ScalarOrSchedule], default: int) -> optax.GradientTransformationExtraArgs:
    """Scales updates by minus the learning rate of the network's method (keyword `method`, an
    index into METHOD_NAMES, traced: one program, a rate per network); counts steps as `optax.sgd`."""
    rate = lambda lr, count: lr(count) if callable(lr) else jnp.asarray(lr, jnp.float32)  # noqa: E731

    def init(params):
        del params
        return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None, *, method: jax.Array | None = None, **extra_args):
        del params, extra_args
        method = default if method is None else method
        step_size = rate(rates[-1], state.count)
        for i in reversed(range(len(rates) - 1)):
            step_size = jnp.where(method == i, rate(rates[i], state.count), step_size)
        updates = jax.tree_util.tree_map(lambda g: jnp.array(-step_size, dtype=g.dtype) * g, updates)
        return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

    return optax.GradientTransformationExtraArgs(init, update)


def init_state(key: jax.Array, model: Model, optimizer: optax.GradientTransformation) -> TrainState:
    """Fresh parameters (PyTorch-style init), uniform q(d), zeroed momentum; a Gaussian
    network's noise scale starts at 1 (log 0, as DUN's), a dropout network gets its own stream."""
    dummy = jnp.zeros((1, *model.input_shape), jnp.int32 if model.inputs == "tokens" else jnp.float32)
    variables = LDN(model).init(key, dummy, train=False)
    params = {"model": variables["params"], "depth_logits": init_depth_logits(model.max_depth)}
    if model.likelihood == "gaussian":
        params["log_noise"] = jnp.zeros((), jnp.float32)
    rng = jax.random.key_data(jax.random.fold_in(key, 1)) if model.rng_stream is not None else None
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats", {}),
                      opt_state=optimizer.init(params), rng=rng)


def loss_fn(params: dict[str, Any], state: TrainState, x: jax.Array, y: jax.Array, objective: Objective,
            method: MethodArg | None = None) -> tuple[jax.Array, tuple[dict[str, Any], dict[str, jax.Array]]]:
    """The training loss in train mode (batch statistics) and the updated running statistics;
    a dropout or MFVI network samples with its stream's key for this step."""
    model = objective.model
    rngs = None
    if state.rng is not None:
        rngs = {model.rng_stream or "dropout": jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)}
    outputs, updates = LDN(model).apply({"params": params["model"], "batch_stats": state.batch_stats}, x,
                                        train=True, mutable=["batch_stats"], rngs=rngs)
    loss, aux = objective.loss(params, outputs, y, method)
    return loss, (updates.get("batch_stats", {}), aux)


def train_step(state: TrainState, x: jax.Array, y: jax.Array, method: MethodArg | None = None, *,
               objective: Objective, optimizer: optax.GradientTransformation) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on a batch; returns the loss of the parameters *before* the step.

    Pure: jit it with the keyword arguments bound (see `make_train_step`). `method`: None for
    the config's, or a traced index (networks of several methods in one program)."""
    (loss, (batch_stats, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state, x, y, objective, method)
    per_network = {} if method is None or isinstance(method, str) else {"method": method}
    updates, opt_state = optax.with_extra_args_support(optimizer).update(grads, state.opt_state, state.params,
                                                                         **per_network)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              batch_stats=batch_stats, opt_state=opt_state)
    return new_state, {"loss": loss, **aux}


def make_train_step(model: Model, config: TrainConfig, optimizer: optax.GradientTransformation, n_train: int):
    """The jitted train step `(state, x, y) -> (state, metrics)` of `config.method` on a
    training set of `n_train` examples; the state buffer is donated."""
    step = functools.partial(train_step, objective=Objective(model, config, n_train), optimizer=optimizer)
    return jax.jit(step, donate_argnums=0)
