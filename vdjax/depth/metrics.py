"""Predictive metrics: per-depth and marginal log-likelihood, error, calibration."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np


def marginal_log_probs(logits: jax.Array, q: jax.Array) -> jax.Array:
    """log p(y|x) = log sum_d q(d) softmax(logits_d): [K, B, C], [K] -> [B, C]."""
    chex.assert_rank(logits, 3)
    chex.assert_shape(q, (logits.shape[0],))
    log_q = jnp.log(q)[:, None, None]
    return jax.nn.logsumexp(log_q + jax.nn.log_softmax(logits, axis=-1), axis=0)


def log_likelihood(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean log-probability of the true labels: [..., B, C], [B] -> [...]."""
    idx = jnp.broadcast_to(labels[:, None], log_probs.shape[:-1] + (1,))
    return jnp.mean(jnp.take_along_axis(log_probs, idx, axis=-1)[..., 0], axis=-1)


def error_rate(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of wrong arg-max predictions: [..., B, C], [B] -> [...]."""
    return jnp.mean(jnp.argmax(log_probs, axis=-1) != labels, axis=-1)


def per_depth_metrics(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """Test log-likelihood and error of every single depth: each [K]."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return {"log_lik": log_likelihood(log_probs, labels), "error": error_rate(log_probs, labels)}


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = 10
) -> tuple[float, dict[str, np.ndarray]]:
    """ECE with equal-width confidence bins, and the per-bin table for reliability plots."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    conf = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(np.float64)
    acc = np.bincount(which, weights=correct, minlength=n_bins) / np.maximum(count, 1)
    mean_conf = np.bincount(which, weights=conf, minlength=n_bins) / np.maximum(count, 1)
    ece = float(np.sum(count / max(len(labels), 1) * np.abs(acc - mean_conf)))
    return ece, {"edges": edges, "count": count, "accuracy": acc, "confidence": mean_conf}


def predictive_metrics(log_probs: np.ndarray, labels: np.ndarray, n_bins: int = 10,
                       reliability: bool = False) -> dict:
    """Test log-likelihood, error and ECE of predictions `log_probs` [B, C] (host arrays);
    with `reliability`, also the per-bin table of the reliability diagram."""
    log_probs, labels = jnp.asarray(log_probs), jnp.asarray(labels)
    ece, table = expected_calibration_error(np.exp(np.asarray(log_probs)), np.asarray(labels), n_bins)
    out = {
        "log_lik": float(log_likelihood(log_probs, labels)),
        "error": float(error_rate(log_probs, labels)),
        "ece": ece,
    }
    if reliability:
        out["reliability"] = {k: np.asarray(v).tolist() for k, v in table.items()}
    return out
