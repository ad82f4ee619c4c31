"""Training state, the loss, and the train step shared by every trainer.

Weights and depth logits live in one parameter tree, `{'model': ..., 'depth_logits': ...}`
(plus the Gaussian noise parameter `'log_noise'` for a regression network), and a single
`optax.sgd(lr, momentum)` updates them all, as in the paper. A deterministic-depth
network (method 'ddn') uses the same model and step, with the loss on its last depth only.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vdjax.data.core import check_labels
from vdjax.depth.likelihoods import Likelihood, marginal_metrics, noise_std, per_depth_nll
from vdjax.nn.mfvi import weight_kl
from vdjax.depth.metrics import error_rate, log_likelihood, marginal_log_probs, per_depth_metrics
from vdjax.nn.models import LDN, Model, eval_logits
from vdjax.depth.posterior import ddn_from_nll, depth_posterior, elbo_from_nll, init_depth_logits

Method = Literal["ldn", "ddn"]
METHODS: tuple[Method, ...] = ("ldn", "ddn")
StopOn = Literal["train", "val", "test"]
StopObjective = Literal["expected", "marginal"]
PatienceRule = Literal["reached", "exceeded"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and protocol; defaults are the paper's spirals protocol.

    lr_drop_epoch: epoch after which the learning rate is multiplied by `lr_drop_factor`
    (the paper drops it after 30 epochs on images); None keeps it fixed (spirals).
    lr_drop_methods: the methods whose learning rate drops; the others keep theirs. The
    reference code drops it for DDNs only (`schedule=[30]`; LDNs `schedule=None`). An LDN and
    a DDN trained in one vmapped program each get their own method's rate.
    stop_on: the objective that early stopping (and keep-best) watches: the train ELBO (the
    spirals protocol), the ELBO on a validation split of `val_fraction` held out of the
    training set (the default for images), or the test ELBO (the paper's image protocol,
    which flatters the test numbers it then reports).
    stop_objective: which held-out NLL enters that ELBO: 'expected', sum_d q(d) NLL_d (the
    training objective's, a true lower bound), or 'marginal', the NLL of the q-marginal
    predictive -mean log sum_d q(d) p(y|x,d) (the reference's `test_ELBO`). Both add KL/N, and
    coincide for a DDN (q one-hot). Held-out stopping only: the train ELBO is the training loss.
    patience_rule: stop once the epochs since the best one have 'reached' `patience`, or once
    they have 'exceeded' it (the reference's `epoch - best_epoch > early_stop`, one epoch later).
    """

    method: Method = "ldn"
    learning_rate: float = 0.1
    momentum: float = 0.5
    batch_size: int = 512
    max_epochs: int = 8000
    patience: int = 500
    prior_decay: float = 0.85
    lr_drop_epoch: int | None = None
    lr_drop_factor: float = 0.1
    lr_drop_methods: tuple[Method, ...] = METHODS
    stop_on: StopOn = "train"
    stop_objective: StopObjective = "expected"
    patience_rule: PatienceRule = "reached"
    val_fraction: float = 0.1

    def __post_init__(self):
        if self.method not in ("ldn", "ddn"):
            raise ValueError(f"method must be 'ldn' or 'ddn', got {self.method!r}")
        for name in ("learning_rate", "batch_size", "max_epochs", "patience"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.stop_on not in ("train", "val", "test"):
            raise ValueError(f"stop_on must be 'train', 'val' or 'test', got {self.stop_on!r}")
        if not isinstance(self.lr_drop_methods, tuple) or not set(self.lr_drop_methods) <= set(METHODS):
            raise ValueError(f"lr_drop_methods must be a tuple of 'ldn' and 'ddn', got {self.lr_drop_methods!r}")
        if self.stop_objective not in ("expected", "marginal"):
            raise ValueError(f"stop_objective must be 'expected' or 'marginal', got {self.stop_objective!r}")
        if self.stop_objective == "marginal" and self.stop_on == "train":
            raise ValueError("stop_objective 'marginal' needs a held-out split to stop on (stop_on 'val' or "
                             "'test'): the train ELBO is the training loss, an expected NLL")
        if self.patience_rule not in ("reached", "exceeded"):
            raise ValueError(f"patience_rule must be 'reached' or 'exceeded', got {self.patience_rule!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 < self.prior_decay <= 1.0:
            raise ValueError(f"prior_decay must be in (0, 1], got {self.prior_decay}")

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: dict[str, Any]  # {'model': ..., 'depth_logits': [D+1]} (+ 'log_noise': [] if gaussian)
    batch_stats: dict[str, Any]
    opt_state: optax.OptState
    # Raw key data of the network's dropout (or MFVI weight-noise) stream (None without either, so
    # the state of every other network, and its checkpoints, are as before); step t uses fold_in(rng, t).
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
    return config.lr_drop_epoch is not None and method in config.lr_drop_methods


def learning_rate(config: TrainConfig, steps_per_epoch: int, method: Method) -> optax.ScalarOrSchedule:
    """The learning rate of a `method` network: a constant, or a schedule of the step count."""
    if not drops_lr(config, method):
        return config.learning_rate
    return optax.piecewise_constant_schedule(
        config.learning_rate, {config.lr_drop_epoch * steps_per_epoch: config.lr_drop_factor}
    )


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformationExtraArgs:
    """One SGD-with-momentum for weights and depth logits together.

    When the methods' learning rates differ, the rate is picked per network from the
    `is_ldn` flag its update is given (`train_step` passes it), so that an LDN and a DDN can
    share one vmapped program; without the flag, `config.method`'s rate."""
    ldn, ddn = (learning_rate(config, steps_per_epoch, m) for m in METHODS)
    if drops_lr(config, "ldn") == drops_lr(config, "ddn"):
        return optax.sgd(ldn, momentum=config.momentum)
    return optax.chain(optax.trace(decay=config.momentum), scale_by_method_lr(ldn, ddn, config.method == "ldn"))


def scale_by_method_lr(ldn: optax.ScalarOrSchedule, ddn: optax.ScalarOrSchedule,
                       default_is_ldn: bool) -> optax.GradientTransformationExtraArgs:
    """Scales updates by minus the learning rate of the network's method (keyword `is_ldn`,
    traced: one program, a rate per network); the state counts steps, as `optax.sgd`'s does."""
    rate = lambda lr, count: lr(count) if callable(lr) else jnp.asarray(lr, jnp.float32)  # noqa: E731

    def init(params):
        del params
        return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None, *, is_ldn: jax.Array | None = None, **extra_args):
        del params, extra_args
        is_ldn = default_is_ldn if is_ldn is None else is_ldn
        step_size = -jnp.where(is_ldn, rate(ldn, state.count), rate(ddn, state.count))
        updates = jax.tree_util.tree_map(lambda g: jnp.array(step_size, dtype=g.dtype) * g, updates)
        return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

    return optax.GradientTransformationExtraArgs(init, update)


def init_state(
    key: jax.Array, model_config: Model, optimizer: optax.GradientTransformation
) -> TrainState:
    """Fresh parameters (PyTorch-style init), uniform q(d), zeroed momentum; a Gaussian
    network's noise scale starts at 1 (log 0, as DUN's), a dropout network gets its own stream."""
    dummy = jnp.zeros((1, *model_config.input_shape), jnp.float32)
    variables = LDN(model_config).init(key, dummy, train=False)
    params = {"model": variables["params"], "depth_logits": init_depth_logits(model_config.max_depth)}
    if model_config.likelihood == "gaussian":
        params["log_noise"] = jnp.zeros((), jnp.float32)
    rng = jax.random.key_data(jax.random.fold_in(key, 1)) if model_config.rng_stream is not None else None
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=optimizer.init(params),
        rng=rng,
    )


def loss_fn(
    params: dict[str, Any],
    batch_stats: dict[str, Any],
    x: jax.Array,
    y: jax.Array,
    *,
    model_config: Model,
    train_config: TrainConfig,
    n_train: int,
    is_ldn: jax.Array | None = None,
    dropout_key: jax.Array | None = None,
) -> tuple[jax.Array, tuple[dict[str, Any], dict[str, jax.Array]]]:
    """The training loss in train mode (batch statistics), and the updated running stats. An MFVI
    network adds the KL of its weights to the prior over `n_train` (the per-point negative ELBO);
    `dropout_key` then seeds its sampled pre-activations."""
    rngs = {model_config.rng_stream or "dropout": dropout_key} if dropout_key is not None else None
    logits, updates = LDN(model_config).apply(
        {"params": params["model"], "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"], rngs=rngs
    )
    loss, aux = objective(logits, y, params["depth_logits"], n_train, train_config, is_ldn,
                          likelihood=model_config.likelihood, log_noise=params.get("log_noise"))
    if model_config.weights == "mfvi":
        loss = loss + weights_kl_per_point(model_config, params["model"], n_train)
    return loss, (updates.get("batch_stats", {}), aux)


def weights_kl_per_point(model_config: Model, model_params: dict[str, Any], n_train: int) -> jax.Array:
    """KL(q(w) || p(w)) / n_train of an MFVI network's weights."""
    return weight_kl(model_params, model_config.prior_std) / n_train


def objective(logits: jax.Array, y: jax.Array, depth_logits: jax.Array, n_train: int, train_config: TrainConfig,
              is_ldn: jax.Array | None = None, *, likelihood: Likelihood = "categorical",
              log_noise: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The negative ELBO (LDN) or the last depth's NLL (DDN), per point, under `likelihood`
    (a Gaussian one needs the noise parameter `log_noise`).

    `is_ldn` None: the method of `train_config`. A traced boolean instead lets an LDN and a DDN
    share one vmapped program: both losses are computed (they share the logits) and one is
    selected, which gives the other exactly zero gradient.
    """
    nll = per_depth_nll(logits, y, likelihood, log_noise)
    elbo = lambda: elbo_from_nll(nll, depth_logits, n_train, train_config.prior_decay)  # noqa: E731
    if is_ldn is None:
        return elbo() if train_config.method == "ldn" else ddn_from_nll(nll)
    return jax.tree_util.tree_map(lambda a, b: jnp.where(is_ldn, a, b), elbo(), ddn_from_nll(nll))


def train_step(
    state: TrainState,
    x: jax.Array,
    y: jax.Array,
    *,
    model_config: Model,
    train_config: TrainConfig,
    optimizer: optax.GradientTransformation,
    n_train: int,
    is_ldn: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on a batch; returns the loss of the parameters *before* the step.

    Pure: jit it with the keyword arguments bound (see `make_train_step`).
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    dropout_key = None if state.rng is None else jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    (loss, (batch_stats, aux)), grads = grad_fn(
        state.params, state.batch_stats, x, y,
        model_config=model_config, train_config=train_config, n_train=n_train, is_ldn=is_ldn,
        dropout_key=dropout_key,
    )
    per_network = {} if is_ldn is None else {"is_ldn": is_ldn}  # its method's learning rate (`make_optimizer`)
    updates, opt_state = optax.with_extra_args_support(optimizer).update(grads, state.opt_state, state.params,
                                                                         **per_network)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
    )
    return new_state, {"loss": loss, **aux}


def make_train_step(
    model_config: Model, train_config: TrainConfig, optimizer: optax.GradientTransformation, n_train: int
):
    """The jitted train step for one (model, protocol, data size); the state buffer is donated."""
    step = functools.partial(
        train_step, model_config=model_config, train_config=train_config, optimizer=optimizer, n_train=n_train
    )
    return jax.jit(step, donate_argnums=0)


def depth_weights(model_config: Model, state: TrainState, method: Method) -> jax.Array:
    """The weights that turn per-depth predictions into the network's prediction: q(d) for an
    LDN, a one-hot on the last depth for a DDN."""
    return state.q if method == "ldn" else jax.nn.one_hot(model_config.max_depth, model_config.max_depth + 1)


def heldout_metrics(logits: jax.Array, y: jax.Array, depth_logits: jax.Array, is_ldn: jax.Array, n_train: int,
                    train_config: TrainConfig, likelihood: Likelihood = "categorical",
                    log_noise: jax.Array | None = None) -> dict[str, jax.Array]:
    """Eval-mode objective, marginal log-likelihood and error (error rate; RMSE for a Gaussian
    likelihood, on the training scale) of one network on held-out data (outputs [D+1, N, C]):
    the early-stopping criterion. Pure, so it vmaps over networks.

    The objective is the negative ELBO with the NLL `train_config.stop_objective` names: the
    expected one, or the marginal predictive's, -log_lik + KL/N (a DDN's is its expected one:
    with q one-hot the two are the same number)."""
    loss, aux = objective(logits, y, depth_logits, n_train, train_config, is_ldn, likelihood=likelihood,
                          log_noise=log_noise)
    weights = jnp.where(is_ldn, jax.nn.softmax(depth_logits), jax.nn.one_hot(logits.shape[0] - 1, logits.shape[0]))
    stds = None if log_noise is None else noise_std(log_noise)
    metrics = marginal_metrics(logits, weights, y, likelihood, stds)
    if train_config.stop_objective == "marginal":
        loss = jnp.where(is_ldn, aux["kl"] / n_train - metrics["log_lik"], loss)
    return {"loss": loss, **metrics}


def evaluate(
    model_config: Model,
    state: TrainState,
    x: np.ndarray,
    y: np.ndarray,
    method: Method = "ldn",
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Test metrics in eval mode: every depth, and the marginal over all depths under q.

    For a DDN the 'marginal' is its last depth.
    """
    y = jnp.asarray(check_labels(y, model_config.num_classes, len(x)))
    logits = jnp.asarray(eval_logits(model_config, state.variables, x, batch_size))
    log_probs = marginal_log_probs(logits, depth_weights(model_config, state, method))
    per_depth = per_depth_metrics(logits, y)
    return {
        "log_lik": float(log_likelihood(log_probs, y)),
        "error": float(error_rate(log_probs, y)),
        "per_depth_log_lik": np.asarray(per_depth["log_lik"]),
        "per_depth_error": np.asarray(per_depth["error"]),
    }
