"""DUN's comparison: an LDN against a DDN, a deep ensemble of DDNs and MC dropout, on one footing.

Training: every method is `vdjax.trainer.fit_networks` with one protocol (the same optimiser,
batch size, epochs and early-stopping rule: stop once the validation objective has not improved
for `patience` epochs and keep the best parameters). The LDN, the DDN and the ensemble's
members are one vmapped program: members ('ldn', s0), ('ddn', s1..sM) with the DDN being
ensemble member 0 (`METHOD_MEMBERS`). MC dropout is a DDN whose modules use dropout (a preset
with `dropout_rate > 0`, or any `Network` with `uses_dropout`), a second program.

Prediction: each method is a `Predictive`, K component predictions with mixture weights
(`vdjax.likelihoods` explains why one mixture serves them all):
- LDN: the network pruned to d_opt (95% rule), its depths 0..d_opt under the folded q(d):
  one forward pass;
- DDN: its last depth, one component: one forward pass;
- ensemble: M members' last depths, weights 1/M: M forward passes (vmapped over members);
- MC dropout: S sampled forward passes with dropout on, weights 1/S.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from vdjax.cost import median_seconds
from vdjax.data.core import check_inputs
from vdjax.likelihoods import marginal_metrics, mixture_moments, noise_std, to_original_scale
from vdjax.metrics import expected_calibration_error, marginal_log_probs
from vdjax.models import LDN, Model, ModelConfig
from vdjax.prune import eval_logits, last_head_only, prune, select_depth
from vdjax.train import TrainConfig, TrainState

METHODS = ("ldn", "ddn", "ensemble", "dropout")


@dataclasses.dataclass(frozen=True)
class Predictive:
    """One method's prediction for N inputs: component outputs [K, N, C] (logits, or Gaussian
    means with C = 1), mixture weights [K] summing to 1, and each component's Gaussian noise
    scale [K] (None for a categorical likelihood)."""

    outputs: np.ndarray
    weights: np.ndarray
    stds: np.ndarray | None = None

    def __post_init__(self):
        chex.assert_rank(self.outputs, 3)
        chex.assert_shape(self.weights, (self.outputs.shape[0],))
        if self.stds is not None:
            chex.assert_shape(self.stds, (self.outputs.shape[0],))

    @property
    def likelihood(self) -> str:
        return "categorical" if self.stds is None else "gaussian"


def _stds(config: Model, states: Sequence[TrainState]) -> np.ndarray | None:
    if config.likelihood != "gaussian":
        return None
    return np.array([float(noise_std(s.params["log_noise"])) for s in states], np.float32)


def ldn_predictive(config: Model, state: TrainState, x: np.ndarray, rule: str | None = "95") -> Predictive:
    """The LDN pruned by `rule` ('95', 'expected'; None: all depths), marginalised over its depths."""
    q = np.asarray(state.q)
    depth = config.max_depth if rule is None else select_depth(q, rule)
    pruned = prune(config, state.variables, q, depth)
    outputs = eval_logits(pruned.config, pruned.variables, x)
    stds = _stds(config, [state])
    return Predictive(outputs, pruned.q.astype(np.float32), None if stds is None else np.repeat(stds, depth + 1))


def ddn_predictive(config: Model, state: TrainState, x: np.ndarray) -> Predictive:
    """A deterministic-depth network as deployed: its last depth only."""
    cfg, variables = last_head_only(config, state.variables)
    return Predictive(eval_logits(cfg, variables, x), np.ones(1, np.float32), _stds(config, [state]))


def ensemble_predictive(config: Model, states: Sequence[TrainState], x: np.ndarray,
                        batch_size: int = 1024) -> Predictive:
    """A deep ensemble of DDNs: the members' last depths, equally weighted. The members' forward
    passes run as one vmapped program over their stacked parameters."""
    cfg = config.replace(heads="last")
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[last_head_only(config, s.variables)[1] for s in states])
    x = check_inputs(x, config.input_shape)
    fn = _members_forward(cfg)
    out = np.concatenate([np.asarray(fn(stacked, x[i : i + batch_size]))[:, 0] for i in range(0, len(x), batch_size)],
                         axis=1)
    m = len(states)
    return Predictive(out, np.full(m, 1.0 / m, np.float32), _stds(config, states))


@functools.lru_cache(maxsize=16)
def _members_forward(config: Model):
    model = LDN(config)
    return jax.jit(jax.vmap(lambda v, x: model.apply(v, x, train=False), in_axes=(0, None)))


def mc_dropout_predictive(config: Model, state: TrainState, x: np.ndarray, key: jax.Array,
                          n_samples: int = 10, batch_size: int = 1024) -> Predictive:
    """MC dropout: `n_samples` forward passes of the last depth with dropout on (running BatchNorm
    statistics), equally weighted; the samples run as one vmapped program."""
    if not config.uses_dropout:
        raise ValueError("MC dropout needs a network trained with dropout (a preset's dropout_rate > 0, "
                         "or a Network with uses_dropout=True)")
    cfg, variables = last_head_only(config, state.variables)
    x = check_inputs(x, config.input_shape)
    keys = jax.random.split(key, n_samples)
    fn = _dropout_forward(cfg)
    out = np.concatenate([np.asarray(fn(variables, x[i : i + batch_size], keys))[:, 0]
                          for i in range(0, len(x), batch_size)], axis=1)
    stds = _stds(config, [state])
    return Predictive(out, np.full(n_samples, 1.0 / n_samples, np.float32),
                      None if stds is None else np.repeat(stds, n_samples))


@functools.lru_cache(maxsize=16)
def _dropout_forward(config: Model):
    model = LDN(config)

    def one(v, x, key):
        return model.apply(v, x, train=False, sample_dropout=True, rngs={"dropout": key})

    return jax.jit(jax.vmap(one, in_axes=(None, None, 0)))


# ---------------------------------------------------------------------------- training


@dataclasses.dataclass
class TrainedMethods:
    """The networks of one comparison: the LDN, the DDNs (member 0 is the DDN, all of them the
    ensemble) and the MC-dropout network (None if not trained)."""

    model_config: Model
    dropout_config: Model | None
    ldn: Any  # vdjax.trainer.TrainResult
    ddns: list
    dropout: Any | None

    def summary(self) -> dict:
        """How each network trained: kept epoch, epochs run, why it stopped, program wall time."""
        rows = {"ldn": self.ldn, **{f"ddn_{i}": r for i, r in enumerate(self.ddns)}}
        if self.dropout is not None:
            rows["dropout"] = self.dropout
        return {k: {"best_epoch": r.best_epoch, "epochs": r.epochs, "stopped": r.stopped,
                    "program_seconds": round(r.train_seconds, 2), "networks_in_program": r.networks}
                for k, r in rows.items()}


def fit_methods(data, model_config: Model, train_config: TrainConfig, seed: int = 0, ensemble_size: int = 5,
                dropout_rate: float | None = 0.1, progress: bool = True, log: Callable[[str], None] = print,
                dropout_model: Model | None = None) -> TrainedMethods:
    """Trains the LDN and `ensemble_size` DDNs (seeds seed..seed+M-1) as one vmapped program,
    then the MC-dropout DDN, all with `train_config`'s protocol. The dropout network is
    `dropout_model`, or else a preset `model_config` with `dropout_rate` (None skips it)."""
    from vdjax.trainer import fit_networks

    if ensemble_size < 1:
        raise ValueError(f"ensemble_size must be >= 1, got {ensemble_size}")
    members = [("ldn", seed)] + [("ddn", seed + i) for i in range(ensemble_size)]
    results = fit_networks(data, model_config, train_config, members, progress=progress, log=log)
    dropout_config, dropout = dropout_model, None
    if dropout_config is None and dropout_rate:
        if not isinstance(model_config, ModelConfig):
            raise ValueError("a Network has no dropout_rate to set: pass the MC-dropout network as dropout_model "
                             "(or dropout_rate=None to skip it)")
        dropout_config = model_config.replace(dropout_rate=dropout_rate)
    if dropout_config is not None:
        dropout = fit_networks(data, dropout_config, train_config, [("ddn", seed)], progress=progress, log=log)[0]
    return TrainedMethods(model_config, dropout_config, results[0], results[1:], dropout)


def method_predictives(trained: TrainedMethods, x: np.ndarray, key: jax.Array, n_dropout_samples: int = 10,
                       timing_repeats: int = 3) -> tuple[dict[str, Predictive], dict[str, float]]:
    """Every method's predictive for `x`, and the wall seconds each takes (median of
    `timing_repeats` after a compiling warm-up), measured in the same process one after another."""
    cfg = trained.model_config
    makers: dict[str, Callable[[], Predictive]] = {
        "ldn": lambda: ldn_predictive(cfg, trained.ldn.state, x),
        "ldn_full": lambda: ldn_predictive(cfg, trained.ldn.state, x, rule=None),
        "ddn": lambda: ddn_predictive(cfg, trained.ddns[0].state, x),
        "ensemble": lambda: ensemble_predictive(cfg, [r.state for r in trained.ddns], x),
    }
    if trained.dropout is not None:
        makers["dropout"] = lambda: mc_dropout_predictive(trained.dropout_config, trained.dropout.state, x, key,
                                                          n_dropout_samples)
    preds = {k: make() for k, make in makers.items()}
    seconds = {k: time_call(make, timing_repeats) for k, make in makers.items()}
    return preds, seconds


# ---------------------------------------------------------------------------- metrics


def regression_metrics(pred: Predictive, y: np.ndarray, target_scale: tuple[float, float] = (0.0, 1.0)) -> dict:
    """Test log-likelihood (exact mixture) and RMSE in the data's units, and the mean predictive
    std; `y` standardised as the network was trained."""
    means = jnp.asarray(pred.outputs[..., 0])
    y = jnp.asarray(y, jnp.float32)
    m = marginal_metrics(pred.outputs, jnp.asarray(pred.weights), y, "gaussian", jnp.asarray(pred.stds))
    mean, var = mixture_moments(means, jnp.asarray(pred.weights), jnp.asarray(pred.stds))
    _, var_orig, ll_orig = to_original_scale(mean, var, m["log_lik"], target_scale)
    return {"log_lik": float(ll_orig), "rmse": float(m["error"]) * target_scale[1],
            "mean_std": float(jnp.mean(jnp.sqrt(var_orig)))}


def regression_curve(pred: Predictive, target_scale: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Predictive mean and std per input in the data's units (for plots)."""
    mean, var = mixture_moments(jnp.asarray(pred.outputs[..., 0]), jnp.asarray(pred.weights), jnp.asarray(pred.stds))
    mean, var, _ = to_original_scale(mean, var, 0.0, target_scale)
    return np.asarray(mean), np.sqrt(np.asarray(var))


def predictive_probs(pred: Predictive) -> np.ndarray:
    """Class probabilities [N, C] of a categorical predictive."""
    return np.exp(np.asarray(marginal_log_probs(jnp.asarray(pred.outputs), jnp.asarray(pred.weights))))


def classification_metrics(pred: Predictive, y: np.ndarray) -> dict:
    """Log-likelihood, error, ECE and Brier score of a categorical predictive."""
    from vdjax.shift import brier_score

    m = marginal_metrics(jnp.asarray(pred.outputs), jnp.asarray(pred.weights), jnp.asarray(y), "categorical")
    probs = predictive_probs(pred)
    ece, _ = expected_calibration_error(probs, np.asarray(y))
    return {"log_lik": float(m["log_lik"]), "error": float(m["error"]), "ece": ece,
            "brier": brier_score(probs, np.asarray(y))}


# ---------------------------------------------------------------------------- cost


def time_call(fn: Callable[[], Any], repeats: int = 5) -> float:
    """Median wall seconds of `fn()` after one warm-up call (which compiles): test-time cost
    without compilation. `fn` must block until its result is ready (return host arrays)."""
    return median_seconds(fn, repeats)
