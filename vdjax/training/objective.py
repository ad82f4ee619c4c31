"""The method: what a network minimises, how its depths are weighted, and what stopping watches.

This file is the method alone. An LDN weighs its depths by q(d) = softmax(depth_logits) and
minimises the exact negative ELBO; a DDN puts all its weight on its last depth and minimises
that depth's NLL. A third method is one more entry in `_WEIGHTS` and `_LOSS` (and its name in
`vdjax.training.config.METHOD_NAMES`).

Networks of several methods train in one vmapped program: each carries its method as a traced
index into `METHOD_NAMES`, every method's value is computed from the shared outputs and the
network's own is selected (the others get exactly zero gradient). A program whose networks
share `TrainConfig.method` names it statically instead, and computes that method alone.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vdjax.data.core import check_labels
from vdjax.depth.likelihoods import marginal_metrics, noise_std, per_depth_nll
from vdjax.depth.metrics import error_rate, log_likelihood, marginal_log_probs, per_depth_metrics
from vdjax.depth.posterior import ddn_from_nll, depth_posterior, elbo_from_nll
from vdjax.nn.mfvi import weight_kl
from vdjax.nn.models import Model, eval_logits
from vdjax.training.config import METHOD_NAMES, TrainConfig

MethodArg = str | jax.Array  # a method's name (static), or its index into METHOD_NAMES (traced, per network)


def _ldn_weights(depth_logits: jax.Array) -> jax.Array:
    return depth_posterior(depth_logits)


def _ddn_weights(depth_logits: jax.Array) -> jax.Array:
    return jax.nn.one_hot(depth_logits.shape[-1] - 1, depth_logits.shape[-1])


_WEIGHTS: dict[str, Callable[[jax.Array], jax.Array]] = {"ldn": _ldn_weights, "ddn": _ddn_weights}
_LOSS: dict[str, Callable[..., tuple[jax.Array, dict[str, jax.Array]]]] = {
    # (per-depth NLL [D+1], depth logits, n_train, prior decay) -> (loss per point, parts)
    "ldn": elbo_from_nll,
    "ddn": lambda nll, depth_logits, n_train, prior_decay: ddn_from_nll(nll),
}


def method_index(names) -> np.ndarray:
    """Method names -> their int32 indices into `METHOD_NAMES` (the traced per-network form)."""
    unknown = sorted(set(names) - set(METHOD_NAMES))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}: vdjax knows {list(METHOD_NAMES)}")
    return np.array([METHOD_NAMES.index(n) for n in names], np.int32)


def _select(method: MethodArg, values: Mapping[str, Callable[[], Any]]) -> Any:
    """The value of `method`: computed alone for a name; for a traced index, every method's
    value is computed and the network's own selected, leaf by leaf."""
    if isinstance(method, str):
        return values[method]()
    computed = [values[name]() for name in METHOD_NAMES]
    out = computed[-1]
    for i in reversed(range(len(METHOD_NAMES) - 1)):
        out = jax.tree_util.tree_map(lambda a, b, i=i: jnp.where(method == i, a, b), computed[i], out)
    return out


def depth_weights(depth_logits: jax.Array, method: MethodArg = "ldn") -> jax.Array:
    """The weights that turn per-depth predictions into the network's prediction: q(d) for an
    LDN, a one-hot on the last depth for a DDN."""
    return _select(method, {m: (lambda m=m: _WEIGHTS[m](depth_logits)) for m in METHOD_NAMES})


@dataclasses.dataclass(frozen=True)
class Objective:
    """The training objective of one architecture on a training set of `n_train` examples.

    Frozen and hashable, so compiled programs are cached per objective. Parameters are the
    train state's tree: {'model', 'depth_logits'} (+ 'log_noise' for a Gaussian likelihood)."""

    model: Model
    config: TrainConfig
    n_train: int

    def resolve(self, method: MethodArg | None) -> MethodArg:
        return self.config.method if method is None else method

    def loss(self, params: dict[str, Any], outputs: jax.Array, y: jax.Array,
             method: MethodArg | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The loss per training point that training minimises, and its parts: the negative
        ELBO (LDN) or the last depth's NLL (DDN) under the model's likelihood, plus an MFVI
        network's weight KL / n_train. `outputs` are the train-mode outputs [D+1, B, ...]."""
        nll = per_depth_nll(outputs, y, self.model.likelihood, params.get("log_noise"))
        loss, aux = _select(self.resolve(method), {
            m: (lambda m=m: _LOSS[m](nll, params["depth_logits"], self.n_train, self.config.prior_decay))
            for m in METHOD_NAMES})
        if self.model.weights == "mfvi":
            loss = loss + self.weights_kl(params)
        return loss, aux

    def weights_kl(self, params: dict[str, Any]) -> jax.Array:
        """KL(q(w) || p(w)) / n_train of an MFVI network's weights."""
        return weight_kl(params["model"], self.model.prior_std) / self.n_train

    def heldout(self, params: dict[str, Any], outputs: jax.Array, y: jax.Array,
                method: MethodArg | None = None) -> dict[str, jax.Array]:
        """Eval-mode objective, marginal log-likelihood and error (RMSE for a Gaussian
        likelihood, on the training scale) on held-out data: the early-stopping criterion.

        The objective is the negative ELBO with the NLL `config.stop_objective` names: the
        expected one, or the marginal predictive's, -log_lik + KL/N (a DDN's is its expected
        one: with q one-hot the two are the same number)."""
        method = self.resolve(method)
        nll = per_depth_nll(outputs, y, self.model.likelihood, params.get("log_noise"))
        loss, aux = _select(method, {
            m: (lambda m=m: _LOSS[m](nll, params["depth_logits"], self.n_train, self.config.prior_decay))
            for m in METHOD_NAMES})
        log_noise = params.get("log_noise")
        stds = None if log_noise is None else noise_std(log_noise)
        metrics = marginal_metrics(outputs, depth_weights(params["depth_logits"], method), y,
                                   self.model.likelihood, stds)
        if self.config.stop_objective == "marginal":
            # log_lik is per position; an example's NLL sums its positions, as in the ELBO (KL / N examples).
            positions = math.prod(y.shape[1:])
            loss = _select(method, {"ldn": lambda: aux["kl"] / self.n_train - positions * metrics["log_lik"],
                                    "ddn": lambda: loss})
        if self.model.weights == "mfvi":
            loss = loss + self.weights_kl(params)
        return {"loss": loss, **metrics}


def negative_elbo(params: dict[str, Any], outputs: jax.Array, y: jax.Array, objective: Objective) -> jax.Array:
    """The negative ELBO per training point of an LDN, exactly what `vdjax.fit` minimises:
    sum_d q(d) NLL_d + KL(q || p) / N (+ an MFVI network's weight KL / N)."""
    return objective.loss(params, outputs, y, "ldn")[0]


def evaluate(model: Model, state: Any, x: np.ndarray, y: np.ndarray, method: str = "ldn",
             batch_size: int = 1024) -> dict[str, Any]:
    """Test metrics of a trained classifier in eval mode: every depth, and the network's
    prediction (the marginal under q for an LDN, the last depth for a DDN)."""
    y = jnp.asarray(check_labels(y, model.num_classes, len(x), target_shape=model.target_shape))
    logits = jnp.asarray(eval_logits(model, state.variables, x, batch_size))
    log_probs = marginal_log_probs(logits, depth_weights(state.params["depth_logits"], method))
    per_depth = per_depth_metrics(logits, y)
    return {"log_lik": float(log_likelihood(log_probs, y)), "error": float(error_rate(log_probs, y)),
            "per_depth_log_lik": np.asarray(per_depth["log_lik"]), "per_depth_error": np.asarray(per_depth["error"])}
