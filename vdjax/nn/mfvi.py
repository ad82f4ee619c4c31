"""Mean-field variational inference (MFVI, Bayes by backprop) for the MLP's linear layers.

Every weight and bias has a factorised Gaussian posterior N(m, s^2), s = softplus(rho), and a
prior N(0, prior_std^2). A layer samples its pre-activations rather than its weights (the local
reparameterisation trick, Kingma, Salimans and Welling 2015): for inputs x the pre-activation
h = x W + b is Gaussian per unit with mean x m_W + m_b and variance x^2 s_W^2 + s_b^2, so one
draw of eps [B, out] gives every example its own weight sample at the cost of two matrix
products, and the gradient's variance is lower than with one shared weight draw per batch.

The KL divergence to the prior is closed-form (`weight_kl`); the training loss adds it divided
by the number of training points (`vdjax.training.objective.Objective.loss`), the per-point negative ELBO, as the
LDN's KL over depths. Parameters are named `kernel`/`bias` (the means, PyTorch's init as
`vdjax.nn.layers.Linear`) and `kernel_rho`/`bias_rho` (std = softplus(rho)).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vdjax.nn.layers import torch_bias_init, torch_kernel_init

RNG_STREAM = "weights"  # the Flax PRNG stream of the sampled pre-activations
# DUN's `BayesLinear_local_reparam` draws rho ~ U(-3, -2): initial stds 0.049-0.127.
RHO_INIT = (-3.0, -2.0)


def softplus_std(rho: jax.Array) -> jax.Array:
    """The posterior std from its unconstrained parameter."""
    return jax.nn.softplus(rho)


def rho_init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, *RHO_INIT)


def preactivation_moments(x: jax.Array, kernel: jax.Array, kernel_std: jax.Array, bias: jax.Array,
                          bias_std: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of x W + b under W ~ N(kernel, kernel_std^2), b ~ N(bias, bias_std^2),
    all independent: [B, in] -> [B, out], [B, out]."""
    return jnp.dot(x, kernel) + bias, jnp.dot(x**2, kernel_std**2) + bias_std**2


class MFVILinear(nn.Module):
    """A dense layer with a factorised Gaussian posterior over its weights and biases.

    The layer draws its pre-activations (needs the 'weights' PRNG stream) when `sample` is set or
    it is called with `deterministic=False`, as `vdjax.nn.network` calls it in training and for
    Monte-Carlo prediction; otherwise it is the posterior-mean layer (deterministic evaluation).
    """

    features: int
    sample: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        fan_in = x.shape[-1]
        kernel = self.param("kernel", torch_kernel_init, (fan_in, self.features))
        bias = self.param("bias", torch_bias_init(fan_in), (self.features,))
        kernel_rho = self.param("kernel_rho", rho_init, (fan_in, self.features))
        bias_rho = self.param("bias_rho", rho_init, (self.features,))
        mean, var = preactivation_moments(x, kernel, softplus_std(kernel_rho), bias, softplus_std(bias_rho))
        if deterministic and not self.sample:
            return mean
        eps = jax.random.normal(self.make_rng(RNG_STREAM), mean.shape, mean.dtype)
        return mean + jnp.sqrt(var) * eps  # var >= s_b^2 > 0: the sqrt has a finite gradient


def gaussian_kl(mean: jax.Array, std: jax.Array, prior_std: float) -> jax.Array:
    """sum KL(N(mean, std^2) || N(0, prior_std^2)) over every element, in closed form."""
    return jnp.sum(jnp.log(prior_std / std) + (std**2 + mean**2) / (2.0 * prior_std**2) - 0.5)


def weight_kl(params: Any, prior_std: float) -> jax.Array:
    """KL of every MFVI layer's posterior in a parameter tree (a dict holding 'kernel_rho' is a
    layer; stacked block parameters count every block) to the prior N(0, prior_std^2)."""
    total = jnp.zeros((), jnp.float32)
    if isinstance(params, dict) or hasattr(params, "items"):
        if "kernel_rho" in params:
            for name in ("kernel", "bias"):
                total = total + gaussian_kl(params[name], softplus_std(params[f"{name}_rho"]), prior_std)
            return total
        for value in params.values():
            total = total + weight_kl(value, prior_std)
    return total
