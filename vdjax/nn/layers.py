"""Layers with PyTorch's default initialisation and backend-aware convolutions.

The residual blocks run inside `lax.scan`. On XLA:CPU the backward pass of `lax.conv`
inside a scan is ~20x slower than unrolled, while matrix products are not affected. So on
CPU a 3x3 convolution is written as im2col + one `dot` (and a 1x1 convolution is always a
`dot`); on GPU/TPU the native convolution is used. Both forms hold the same `kernel`
parameter ([3, 3, C_in, C_out]), so parameters and checkpoints move freely between them.
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ConvImpl = Literal["auto", "im2col", "xla"]

# PyTorch's default for Linear and Conv: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
    """U(+-1/sqrt(fan_in)), PyTorch's default bias initialiser."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def resolve_conv_impl(impl: ConvImpl, backend: str | None = None) -> str:
    """'auto' picks matmul-based convolutions on CPU and native ones elsewhere (measured)."""
    if impl not in ("auto", "im2col", "xla"):
        raise ValueError(f"conv_impl must be 'auto', 'im2col' or 'xla', got {impl!r}")
    if impl != "auto":
        return impl
    backend = backend or jax.default_backend()
    return "im2col" if backend == "cpu" else "xla"


class Linear(nn.Module):
    """A dense layer over the last axis, initialised as `torch.nn.Linear`."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        kernel = self.param("kernel", torch_kernel_init, (fan_in, self.features))
        y = jnp.dot(x, kernel)
        if self.use_bias:
            y = y + self.param("bias", torch_bias_init(fan_in), (self.features,))
        return y


Padding = Literal["SAME", "VALID"]


def conv_im2col(x: jax.Array, kernel: jax.Array, padding: Padding = "SAME") -> jax.Array:
    """A stride-1 k x k convolution (k odd) as one matrix product over k*k shifted copies.

    'SAME' zero-pads k // 2 on each side (PyTorch's padding=k//2); 'VALID' does not pad, so
    the output is k - 1 smaller (PyTorch's default padding=0).
    """
    k = kernel.shape[0]
    if padding == "SAME":
        p = k // 2
        x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    _, h, w, c = x.shape
    h, w = h - k + 1, w - k + 1
    patches = jnp.concatenate([x[:, i : i + h, j : j + w, :] for i in range(k) for j in range(k)], axis=-1)
    return jnp.dot(patches, kernel.reshape(k * k * c, kernel.shape[-1]))


def conv_xla(x: jax.Array, kernel: jax.Array, padding: Padding = "SAME") -> jax.Array:
    """A stride-1 NHWC convolution with XLA's native op."""
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


class Conv(nn.Module):
    """k x k stride-1 convolution (k odd), PyTorch init; `impl` is 'im2col', 'xla' or 'auto' (chosen for
    the backend it is traced on).

    Defaults are PyTorch's `Conv2d`: a bias, and padding as given ('SAME' = k // 2, 'VALID' = 0).
    """

    features: int
    kernel_size: int = 3
    impl: str = "xla"
    use_bias: bool = True
    padding: Padding = "SAME"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, c = self.kernel_size, x.shape[-1]
        if self.padding not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME' or 'VALID', got {self.padding!r}")
        kernel = self.param("kernel", torch_kernel_init, (k, k, c, self.features))
        conv = conv_im2col if resolve_conv_impl(self.impl) == "im2col" else conv_xla
        y = conv(x, kernel, self.padding)
        if self.use_bias:
            y = y + self.param("bias", torch_bias_init(k * k * c), (self.features,))
        return y


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5).

    Batch statistics in training, running averages at evaluation; moments in one pass.
    """
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, use_fast_variance=True, name=name
    )
