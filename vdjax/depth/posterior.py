"""The depth prior, the variational posterior q(d) and the exact negative ELBO.

Depth d in {0..D} is a categorical latent variable with prior p(d) proportional to
decay^(d+1) and posterior q(d) = softmax(depth_logits). Because every depth's likelihood
comes out of one forward pass, the ELBO is computed exactly, with no sampling:

    loss = sum_d q(d) * mean_batch CE(y, logits_d) + KL(q || p) / N_train
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def log_prior(max_depth: int, decay: float = 0.85) -> jax.Array:
    """log p(d) for d = 0..max_depth, with p(d) proportional to decay^(d+1)."""
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"prior decay must be in (0, 1], got {decay}")
    d = jnp.arange(max_depth + 1, dtype=jnp.float32)
    return jax.nn.log_softmax((d + 1.0) * jnp.log(decay))


def init_depth_logits(max_depth: int) -> jax.Array:
    """Uniform q(d), as the reference code initialises it."""
    return jnp.zeros((max_depth + 1,), jnp.float32)


def depth_posterior(depth_logits: jax.Array) -> jax.Array:
    """q(d) = softmax(depth_logits)."""
    return jax.nn.softmax(depth_logits)


def kl_categorical(log_q: jax.Array, log_p: jax.Array) -> jax.Array:
    """KL(q || p) for two categoricals given as log-probabilities (0 log 0 = 0)."""
    chex.assert_equal_shape([log_q, log_p])
    q = jnp.exp(log_q)
    return jnp.sum(jnp.where(q > 0, q * (log_q - log_p), 0.0))


def per_depth_nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean over the batch of each example's cross-entropy, at every depth: [D+1, B, C], [B]
    -> [D+1]. With one label per position ([D+1, B, *P, C], [B, *P]) an example's likelihood is
    the product over its positions, so its NLL is the sum of its positions' cross-entropies."""
    chex.assert_shape(labels, (logits.shape[1], *logits.shape[2:-1]))
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, labels[None, ..., None], axis=-1)[..., 0]
    if labels.ndim > 1:
        picked = jnp.sum(picked.reshape(picked.shape[:2] + (-1,)), axis=-1)
    return -jnp.mean(picked, axis=1)


def elbo_from_nll(nll: jax.Array, depth_logits: jax.Array, n_train: int,
                  prior_decay: float = 0.85) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The negative ELBO from the per-depth NLLs [D+1] of any likelihood (`vdjax.depth.likelihoods`)."""
    chex.assert_equal_shape([nll, depth_logits])
    log_q = jax.nn.log_softmax(depth_logits)
    expected_nll = jnp.sum(jnp.exp(log_q) * nll)
    kl = kl_categorical(log_q, log_prior(nll.shape[0] - 1, prior_decay))
    loss = expected_nll + kl / n_train
    return loss, {"expected_nll": expected_nll, "kl": kl, "nll_per_depth": nll}


def ddn_from_nll(nll: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A deterministic-depth network's loss from per-depth NLLs: the last depth's."""
    return nll[-1], {"expected_nll": nll[-1], "kl": jnp.zeros(()), "nll_per_depth": nll}
