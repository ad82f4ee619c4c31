"""The paper's networks as presets: the spirals MLP and the image CNN, built as `Network`s.

`ModelConfig` names a preset by its hyper-parameters (`arch`, width, ...) and turns into a
`vdjax.nn.network.Network` with `to_network()`; every trainer takes either. The presets' parameter
paths are the ones of the original stand-alone models: 'input', 'blocks/scan/<Block>_0/...',
'head/...'.

For the CNN the output block starts with a global average pool; the pool is parameter-free
and is applied inside the scan (`Network.pool`), so the scan emits `[D, batch, channels]`
features rather than `[D, batch, H, W, channels]` maps (which at D=100 and batch 512 would be
gigabytes). The output block's BatchNorm keeps running statistics per depth by default
(`head_norm='per_depth'`; its parameters are shared): each depth's features have their own
distribution, and evaluation should use it. `head_norm='shared'` is the reference code's one
set of statistics for all depths.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar, Literal, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vdjax.nn import mfvi
from vdjax.data.core import check_inputs
from vdjax.nn.layers import Conv, ConvImpl, Linear, batch_norm, resolve_conv_impl
from vdjax.nn.network import LDN, HeadNorm, Stage, Likelihood, Network, Weights, call, check_common, check_weights, noise_stream

__all__ = ["LDN", "Model", "ModelConfig", "Network", "Stage", "cnn", "mlp"]

Arch = Literal["mlp", "cnn"]
DEFAULT_WIDTH = {"mlp": 20, "cnn": 64}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A preset LDN. `width` is the MLP width or the CNN's outer channel count.

    conv_impl: 'auto' (matmul im2col on CPU, native conv elsewhere), 'im2col' or 'xla'.
    unroll: `lax.scan` unroll factor for the block stack (1 = rolled: flat compile time).
    remat: recompute each block in the backward pass instead of saving its intermediates.
      'auto' turns it on for CPU, where the saved per-block buffers (zero-filled and copied
      by the scan) cost more than the recomputation (D=20, batch 128: 2.1 s -> 1.3 s a step).
    heads: 'all' gives logits at every depth [max_depth + 1, B, C] (an LDN); 'last' computes
      only the deepest one [1, B, C], the forward pass of a deployed DDN or pruned network
      that needs no marginal (its head statistics: the last row of an 'all' network's).
    likelihood: 'categorical' (outputs are `num_classes` logits) or 'gaussian' (regression:
      `num_classes` must be 1, the output is the mean of a Gaussian whose learned noise scale
      lives beside the weights, see `vdjax.depth.likelihoods`).
    dropout_rate: dropout on every residual branch (0: none). With it the network is an MC
      dropout baseline: dropout is on in training and, when asked, at prediction.
    head_norm: the head's BatchNorm statistics, 'per_depth' or 'shared' (see `vdjax.nn.network`).
    weights: 'point' (the default) or 'mfvi': every linear layer of the MLP has a factorised
      Gaussian posterior (`vdjax.nn.mfvi`), sampled in training and, when asked, at prediction,
      with the KL to the prior N(0, prior_std^2) in the loss. Run ids name both fields only when
      they differ from their defaults (`vdjax.training.checkpoints.config_key`), so every other network's
      checkpoints keep their ids.
    """

    arch: Arch
    max_depth: int
    num_classes: int
    input_shape: tuple[int, ...]
    width: int | None = None
    bottleneck: int = 32
    conv_impl: ConvImpl = "auto"
    unroll: int = 1
    remat: bool | str = "auto"
    heads: Literal["all", "last"] = "all"
    likelihood: Likelihood = "categorical"
    dropout_rate: float = 0.0
    head_norm: HeadNorm = "per_depth"
    weights: Weights = "point"
    prior_std: float = 1.0

    def __post_init__(self):
        if self.arch not in DEFAULT_WIDTH:
            raise ValueError(f"arch must be 'mlp' or 'cnn', got {self.arch!r}")
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        check_common(self)
        if self.width is None:
            object.__setattr__(self, "width", DEFAULT_WIDTH[self.arch])
        if not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"width must be an integer >= 1, got {self.width!r}")
        if self.bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {self.bottleneck}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if self.weights == "mfvi" and (self.arch != "mlp" or self.dropout_rate > 0):
            raise ValueError("weights='mfvi' is for the MLP without dropout")
        check_weights(self.weights, self.prior_std, self.uses_dropout)
        want = 1 if self.arch == "mlp" else 3
        if len(self.input_shape) != want:
            kind = "[features]" if self.arch == "mlp" else "[height, width, channels]"
            raise ValueError(f"{self.arch} input_shape must be {kind}, got {self.input_shape}")
        if self.arch == "cnn" and min(self.input_shape[:2]) < 6:
            raise ValueError(f"cnn inputs must be at least 6x6 (5x5 unpadded conv, 2x2 pool), got {self.input_shape}")
        resolve_conv_impl(self.conv_impl)  # validates the name

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def truncated(self, depth: int) -> "ModelConfig":
        """The preset cut after its `depth`-th block (what pruning keeps)."""
        return self.replace(max_depth=depth)

    @property
    def stages(self) -> tuple:
        return ()

    @property
    def target_shape(self) -> tuple[int, ...]:
        return ()

    @property
    def inputs(self) -> str:
        return "real"

    @property
    def rng_stream(self) -> str | None:
        """The PRNG stream a training step needs: 'dropout', MFVI's 'weights', or None."""
        return noise_stream(self.uses_dropout, self.weights)

    @property
    def num_heads(self) -> int:
        """Rows of the logits: one per depth 0..max_depth, or 1 with heads='last'."""
        return self.max_depth + 1 if self.heads == "all" else 1

    @property
    def uses_dropout(self) -> bool:
        return self.dropout_rate > 0

    def describe(self) -> dict:
        """A JSON-able record of the preset (its fields; `ModelConfig(**record)` rebuilds it)."""
        return dataclasses.asdict(self)

    def to_network(self) -> Network:
        """The preset as a `Network` (the only place that reads `arch`)."""
        build = mlp if self.arch == "mlp" else cnn
        return build(self.max_depth, self.num_classes, self.input_shape, **self._options())

    def _options(self) -> dict:
        common = dict(width=self.width, dropout_rate=self.dropout_rate, likelihood=self.likelihood, heads=self.heads,
                      head_norm=self.head_norm, unroll=self.unroll, remat=self.remat)
        if self.arch == "mlp":
            return {**common, "weights": self.weights, "prior_std": self.prior_std}
        return {**common, "bottleneck": self.bottleneck, "conv_impl": self.conv_impl}


Model = Union[Network, ModelConfig]
"""What every trainer, baseline and pruning function takes: a `Network` or a preset."""


def mlp(max_depth: int, num_classes: int, input_shape: tuple[int, ...], *, width: int = 20, dropout_rate: float = 0.0,
        weights: Weights = "point", **options) -> Network:
    """The spirals MLP: Linear(in -> w) stem, blocks BN(ReLU(Linear(w -> w))), head Linear(w -> classes).
    weights='mfvi': every one of those linear layers an `vdjax.nn.mfvi.MFVILinear` (the same paths with
    MFVI in the layer names: 'input', 'blocks/scan/MFVIMLPBlock_0/MFVILinear_0', 'head/MFVILinear_0')."""
    point = weights == "point"
    return Network(stem=(Linear if point else mfvi.MFVILinear)(width),
                   block=(MLPBlock if point else MFVIMLPBlock)(width, dropout_rate),
                   head=(MLPHead if point else MFVIMLPHead)(num_classes),
                   max_depth=max_depth, num_classes=num_classes, input_shape=input_shape,
                   uses_dropout=dropout_rate > 0, weights=weights, **options)


def cnn(max_depth: int, num_classes: int, input_shape: tuple[int, ...], *, width: int = 64, bottleneck: int = 32,
        conv_impl: ConvImpl = "auto", dropout_rate: float = 0.0, **options) -> Network:
    """The image CNN: unpadded 5x5 conv + 2x2 average pool stem, pre-activation bottleneck
    blocks, head global pool -> residual MLP block -> Linear(w -> classes)."""
    return Network(stem=PooledConv(width, 5, impl=conv_impl, padding="VALID"),
                   block=BottleneckBlock(width, bottleneck, conv_impl, dropout_rate), head=CNNHead(width, num_classes),
                   max_depth=max_depth, num_classes=num_classes, input_shape=input_shape, pool=GlobalPool(),
                   uses_dropout=dropout_rate > 0, **options)


# ---------------------------------------------------------------------------- modules


class MLPBlock(nn.Module):
    """Spirals residual branch: BN(ReLU(Linear(a))), with dropout on it if asked."""

    width: int
    dropout_rate: float = 0.0
    # The layer type of the branch: `vdjax.nn.layers.Linear`, or MFVILinear in `MFVIMLPBlock` (a class
    # attribute, not a field, so the presets' module reprs, and the run ids naming them, stay as they were).
    dense: ClassVar[type[nn.Module]] = Linear

    @nn.compact
    def __call__(self, a: jax.Array, train: bool = False, deterministic: bool = True) -> jax.Array:
        h = batch_norm(train)(nn.relu(call(self.dense(self.width), a, train, deterministic)))
        return _dropout(h, self.dropout_rate, deterministic)


class MFVIMLPBlock(MLPBlock):
    """`MLPBlock` with a factorised Gaussian posterior over its linear layer (`vdjax.nn.mfvi`):
    pre-activations sampled unless `deterministic`."""

    dense = mfvi.MFVILinear


def _dropout(h: jax.Array, rate: float, deterministic: bool) -> jax.Array:
    """Dropout of a residual branch; no module at all at rate 0, so parameter trees are unchanged."""
    return nn.Dropout(rate, deterministic=deterministic)(h) if rate > 0 else h


class BottleneckBlock(nn.Module):
    """Pre-activation bottleneck branch: Conv1x1(BN-ReLU(Conv3x3(BN-ReLU(Conv1x1(BN-ReLU(a)))))).

    Every convolution has a bias, as PyTorch's `Conv2d` default in the reference code.
    """

    width: int
    bottleneck: int
    conv_impl: ConvImpl = "auto"
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, a: jax.Array, train: bool = False, deterministic: bool = True) -> jax.Array:
        h = nn.relu(batch_norm(train)(a))
        h = Linear(self.bottleneck)(h)  # 1x1 conv == dot over channels
        h = nn.relu(batch_norm(train)(h))
        h = Conv(self.bottleneck, 3, impl=self.conv_impl, padding="SAME")(h)
        h = nn.relu(batch_norm(train)(h))
        h = Linear(self.width)(h)
        return _dropout(h, self.dropout_rate, deterministic)


class PooledConv(Conv):
    """The reference's CNN input block: an unpadded 5x5 convolution, then 2x2 average pooling
    (28x28 -> 24x24 -> 12x12; SVHN 32x32 -> 28x28 -> 14x14)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.avg_pool(super().__call__(x), (2, 2), strides=(2, 2))


class GlobalPool(nn.Module):
    """The parameter-free start of the CNN output block: mean over height and width."""

    @nn.compact
    def __call__(self, a: jax.Array) -> jax.Array:
        return jnp.mean(a, axis=(1, 2))


class MLPHead(nn.Module):
    """Spirals output block: Linear(width -> classes)."""

    num_classes: int
    dense: ClassVar[type[nn.Module]] = Linear  # MFVILinear in `MFVIMLPHead`

    @nn.compact
    def __call__(self, h: jax.Array, deterministic: bool = True) -> jax.Array:
        return call(self.dense(self.num_classes), h, False, deterministic)


class MFVIMLPHead(MLPHead):
    """`MLPHead` with an MFVI linear layer."""

    dense = mfvi.MFVILinear


class CNNHead(nn.Module):
    """CNN output block after the pool: one residual MLP block, then Linear(width -> classes)."""

    width: int
    num_classes: int

    @nn.compact
    def __call__(self, h: jax.Array, train: bool = False) -> jax.Array:
        h = h + MLPBlock(self.width)(h, train)
        return Linear(self.num_classes)(h)


def eval_logits(config: Model, variables: dict[str, Any], x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits in evaluation mode, [num_heads, N, *target_shape, classes] (every depth unless
    heads='last'), in batches."""
    x = check_inputs(x, config.input_shape, inputs=config.inputs)
    fn = forward_fn(config)
    chunks = [np.asarray(fn(variables, x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return np.concatenate(chunks, axis=1)


@functools.lru_cache(maxsize=64)
def forward_fn(config: Model):
    """The jitted eval-mode forward pass `(variables, x) -> logits [num_heads, B, C]`, cached per config."""
    model = LDN(config)
    return jax.jit(lambda v, x: model.apply(v, x, train=False))
