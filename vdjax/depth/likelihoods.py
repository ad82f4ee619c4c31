"""Likelihoods of a network's outputs and the predictive of a mixture of networks.

An LDN's outputs at its D+1 depths, an ensemble's members and MC-dropout samples are all the
same thing to prediction: K component predictions [K, B, C] with mixture weights [K] (q(d),
uniform 1/K). So one set of functions serves every method:

- 'categorical': outputs are logits; p(y|x) = sum_k w_k softmax(logits_k) (`vdjax.depth.metrics`).
- 'gaussian' (regression, C = 1): outputs are means mu_k, with a homoscedastic noise scale
  sigma_k learned with the weights (a scalar `log_noise` parameter, DUN's `homo_Gauss_mloglike`;
  per component, as ensemble members each learn their own). The predictive is the mixture
  p(y|x) = sum_k w_k N(y; mu_k, sigma_k^2), with mean sum_k w_k mu_k and variance
  sum_k w_k (mu_k^2 + sigma_k^2) - mean^2. Its log-likelihood is computed exactly with
  logsumexp (DUN reported the moment-matched Gaussian instead; `gaussian_log_lik` gives it).

Targets are standardised for training; `to_original_scale` maps a predictive back, so
log-likelihoods and RMSEs are reported in the units of the data.
"""

from __future__ import annotations

from typing import Literal

import chex
import jax
import jax.numpy as jnp
import numpy as np

from vdjax.depth.metrics import error_rate, log_likelihood, marginal_log_probs
from vdjax.depth.posterior import per_depth_nll as categorical_nll

Likelihood = Literal["categorical", "gaussian"]
MIN_NOISE = 1e-4  # DUN clamps the noise scale here too: a collapsing sigma must not give NaNs
_LOG_2PI = float(np.log(2.0 * np.pi))


def noise_std(log_noise: jax.Array) -> jax.Array:
    """The Gaussian noise scale from its unconstrained parameter (clamped away from 0)."""
    return jnp.maximum(jnp.exp(log_noise), MIN_NOISE)


def gaussian_log_density(y: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """log N(y; mean, std^2), elementwise with broadcasting."""
    return -0.5 * (_LOG_2PI + 2.0 * jnp.log(std) + ((y - mean) / std) ** 2)


def gaussian_nll(outputs: jax.Array, y: jax.Array, log_noise: jax.Array) -> jax.Array:
    """Mean Gaussian NLL over the batch at every depth: [K, B, 1], [B], scalar -> [K]."""
    chex.assert_rank(outputs, 3)
    chex.assert_shape(outputs, (None, y.shape[0], 1))
    return -jnp.mean(gaussian_log_density(y[None, :], outputs[..., 0], noise_std(log_noise)), axis=1)


def per_depth_nll(outputs: jax.Array, y: jax.Array, likelihood: Likelihood = "categorical",
                  log_noise: jax.Array | None = None) -> jax.Array:
    """Mean NLL over the batch of each row of `outputs` [K, B, C] -> [K]."""
    if likelihood == "categorical":
        return categorical_nll(outputs, y)
    if likelihood == "gaussian":
        if log_noise is None:
            raise ValueError("a gaussian likelihood needs the noise parameter log_noise")
        return gaussian_nll(outputs, y, log_noise)
    raise ValueError(f"likelihood must be 'categorical' or 'gaussian', got {likelihood!r}")


# ---------------------------------------------------------------------------- gaussian mixtures


def _component_stds(stds: jax.Array, k: int) -> jax.Array:
    stds = jnp.broadcast_to(jnp.asarray(stds, jnp.float32), (k,))
    return stds


def mixture_moments(means: jax.Array, weights: jax.Array, stds: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of sum_k w_k N(mu_k, sigma_k^2) per point: [K, B], [K], [K] or scalar -> [B], [B].

    The variance is the noise (sum_k w_k sigma_k^2) plus the spread of the components' means
    (the model uncertainty a mixture of depths, members or dropout samples expresses)."""
    chex.assert_rank(means, 2)
    chex.assert_shape(weights, (means.shape[0],))
    stds = _component_stds(stds, means.shape[0])
    mean = jnp.sum(weights[:, None] * means, axis=0)
    second = jnp.sum(weights[:, None] * (means**2 + stds[:, None] ** 2), axis=0)
    return mean, jnp.maximum(second - mean**2, 0.0)


def mixture_log_density(y: jax.Array, means: jax.Array, weights: jax.Array, stds: jax.Array) -> jax.Array:
    """log sum_k w_k N(y; mu_k, sigma_k^2) per point, exactly (logsumexp): [B], [K, B], [K], [K] -> [B]."""
    chex.assert_rank(means, 2)
    chex.assert_shape(y, (means.shape[1],))
    chex.assert_shape(weights, (means.shape[0],))
    stds = _component_stds(stds, means.shape[0])
    log_w = jnp.log(weights)[:, None]
    return jax.nn.logsumexp(log_w + gaussian_log_density(y[None, :], means, stds[:, None]), axis=0)


def to_original_scale(mean: jax.Array, var: jax.Array, log_lik: jax.Array, scale: tuple[float, float]):
    """A predictive on standardised targets (y - loc) / s back in the data's units: the mean
    is shifted and scaled, the variance scaled by s^2, a log-density shifted by -log s."""
    loc, s = scale
    return mean * s + loc, var * s**2, log_lik - np.log(s)


def marginal_metrics(outputs: jax.Array, weights: jax.Array, y: jax.Array, likelihood: Likelihood = "categorical",
                     stds: jax.Array | None = None) -> dict[str, jax.Array]:
    """Mean log-likelihood of the mixture's predictive and its error: the error rate
    (categorical), or the RMSE of the predictive mean (gaussian), on the scale of `y`."""
    if likelihood == "categorical":
        log_probs = marginal_log_probs(outputs, weights)
        return {"log_lik": log_likelihood(log_probs, y), "error": error_rate(log_probs, y)}
    means = outputs[..., 0]
    mean, _ = mixture_moments(means, weights, stds)
    return {"log_lik": jnp.mean(mixture_log_density(y, means, weights, stds)),
            "error": jnp.sqrt(jnp.mean((mean - y) ** 2))}
