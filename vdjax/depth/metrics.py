"""Predictive metrics: per-depth and marginal log-likelihood, error, calibration.

Labels are one per example [B], or one per position [B, *P] (a sequence's next token at each
of T positions: [B, T]); the metrics then are per position: the mean log-likelihood of a token,
the token error rate, and calibration over every position's prediction.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np


def marginal_log_probs(logits: jax.Array, q: jax.Array) -> jax.Array:
    """log p(y|x) = log sum_d q(d) softmax(logits_d): [K, B, *P, C], [K] -> [B, *P, C]."""
    chex.assert_rank(q, 1)
    if logits.ndim < 3:
        raise ValueError(f"logits must be [K, batch, ..., classes], got shape {logits.shape}")
    chex.assert_shape(q, (logits.shape[0],))
    log_q = jnp.log(q).reshape((-1,) + (1,) * (logits.ndim - 1))
    return jax.nn.logsumexp(log_q + jax.nn.log_softmax(logits, axis=-1), axis=0)


def _label_axes(labels: jax.Array) -> tuple[int, ...]:
    return tuple(range(-jnp.ndim(labels), 0))


def log_likelihood(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean log-probability of the true labels over examples (and positions): [..., B, *P, C],
    [B, *P] -> [...]."""
    idx = jnp.broadcast_to(labels[..., None], log_probs.shape[:-1] + (1,))
    return jnp.mean(jnp.take_along_axis(log_probs, idx, axis=-1)[..., 0], axis=_label_axes(labels))


def error_rate(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of wrong arg-max predictions: [..., B, *P, C], [B, *P] -> [...]."""
    return jnp.mean(jnp.argmax(log_probs, axis=-1) != labels, axis=_label_axes(labels))


def per_depth_metrics(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """Test log-likelihood and error of every single depth: each [K]."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return {"log_lik": log_likelihood(log_probs, labels), "error": error_rate(log_probs, labels)}


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = 10
) -> tuple[float, dict[str, np.ndarray]]:
    """ECE with equal-width confidence bins, and the per-bin table for reliability plots
    (every position's prediction a sample: probs [B, *P, C], labels [B, *P])."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    probs, labels = probs.reshape(-1, probs.shape[-1]), labels.reshape(-1)
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
    """Test log-likelihood, error and ECE of predictions `log_probs` [B, (*P,) C] (host arrays);
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
