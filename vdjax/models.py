"""Learnt-depth residual networks (LDN) in Flax.

One forward pass computes `a_0 = f_in(x)` and `a_d = a_{d-1} + f_d(a_{d-1})` for d = 1..D with
the residual-block parameters stacked along a leading depth axis and the blocks run under
`lax.scan` (`nn.scan`), so compile time does not grow with depth. The shared output block is
`vmap`ped over the D+1 activations and gives logits `[max_depth + 1, batch, classes]`.

For the CNN the output block starts with a global average pool; the pool is parameter-free
and is applied inside the scan, so the scan emits `[D, batch, channels]` features rather than
`[D, batch, H, W, channels]` maps (which at D=100 and batch 512 would be gigabytes). The
output block's BatchNorm keeps running statistics per depth (its parameters are shared):
each depth's features have their own distribution, and evaluation should use it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Literal

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from vdjax import mfvi
from vdjax.layers import (
    Conv,
    ConvImpl,
    Linear,
    batch_norm,
    resolve_conv_impl,
)

Arch = Literal["mlp", "cnn"]
Likelihood = Literal["categorical", "gaussian"]
DEFAULT_WIDTH = {"mlp": 20, "cnn": 64}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of an LDN. `width` is the MLP width or the CNN's outer channel count.

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
      lives beside the weights, see `vdjax.likelihoods`).
    dropout_rate: dropout on every residual branch (0: none). With it the network is an MC
      dropout baseline: dropout is on in training and, when asked, at prediction.
    weights: 'point' (the default) or 'mfvi': every linear layer of the MLP has a factorised
      Gaussian posterior (`vdjax.mfvi`), sampled in training and, when asked, at prediction,
      with the KL to the prior N(0, prior_std^2) in the loss. Both fields show in the repr only
      for an MFVI network, so the run ids of every other network's checkpoints are unchanged.
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
    weights: Literal["point", "mfvi"] = "point"
    prior_std: float = 1.0

    def __repr__(self) -> str:
        shown = [f.name for f in dataclasses.fields(self)
                 if self.weights == "mfvi" or f.name not in ("weights", "prior_std")]
        return f"ModelConfig({', '.join(f'{n}={getattr(self, n)!r}' for n in shown)})"

    def __post_init__(self):
        if self.arch not in DEFAULT_WIDTH:
            raise ValueError(f"arch must be 'mlp' or 'cnn', got {self.arch!r}")
        if isinstance(self.max_depth, bool) or not isinstance(self.max_depth, int) or self.max_depth < 0:
            raise ValueError(f"max_depth must be an integer >= 0, got {self.max_depth!r}")
        if self.width is None:
            object.__setattr__(self, "width", DEFAULT_WIDTH[self.arch])
        if not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"width must be an integer >= 1, got {self.width!r}")
        if self.bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {self.bottleneck}")
        if self.likelihood not in ("categorical", "gaussian"):
            raise ValueError(f"likelihood must be 'categorical' or 'gaussian', got {self.likelihood!r}")
        if self.likelihood == "categorical" and self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.likelihood == "gaussian" and self.num_classes != 1:
            raise ValueError(f"a gaussian likelihood has one output (num_classes=1), got num_classes={self.num_classes}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if self.weights not in ("point", "mfvi"):
            raise ValueError(f"weights must be 'point' or 'mfvi', got {self.weights!r}")
        if self.weights == "mfvi" and (self.arch != "mlp" or self.dropout_rate > 0):
            raise ValueError("weights='mfvi' is for the MLP without dropout")
        if not self.prior_std > 0:
            raise ValueError(f"prior_std must be positive, got {self.prior_std}")
        if self.unroll < 1:
            raise ValueError(f"unroll must be >= 1, got {self.unroll}")
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        want = 1 if self.arch == "mlp" else 3
        if len(self.input_shape) != want or min(self.input_shape) < 1:
            kind = "[features]" if self.arch == "mlp" else "[height, width, channels]"
            raise ValueError(f"{self.arch} input_shape must be {kind}, got {self.input_shape}")
        if self.arch == "cnn" and min(self.input_shape[:2]) < 6:
            raise ValueError(f"cnn inputs must be at least 6x6 (5x5 unpadded conv, 2x2 pool), got {self.input_shape}")
        if self.heads not in ("all", "last"):
            raise ValueError(f"heads must be 'all' or 'last', got {self.heads!r}")
        resolve_conv_impl(self.conv_impl)  # validates the name
        if self.remat not in (True, False, "auto"):
            raise ValueError(f"remat must be True, False or 'auto', got {self.remat!r}")

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    @property
    def rng_stream(self) -> str | None:
        """The PRNG stream a training step needs: 'dropout', MFVI's 'weights', or None."""
        return "dropout" if self.dropout_rate > 0 else mfvi.RNG_STREAM if self.weights == "mfvi" else None

    @property
    def num_heads(self) -> int:
        """Rows of the logits: one per depth 0..max_depth, or 1 with heads='last'."""
        return self.max_depth + 1 if self.heads == "all" else 1


# ---------------------------------------------------------------------------- blocks


class MLPBlock(nn.Module):
    """Spirals residual block: a + BN(ReLU(Linear(a))), with dropout on the branch if asked."""

    width: int
    train: bool
    dropout_rate: float = 0.0
    sample: bool = False  # dropout active (training, or MC-dropout prediction)
    dense: Callable[[int], nn.Module] = Linear  # an MFVI layer for an MFVI network

    @nn.compact
    def __call__(self, a: jax.Array) -> jax.Array:
        h = batch_norm(self.train)(nn.relu(self.dense(self.width)(a)))
        return a + _dropout(h, self.dropout_rate, self.sample)


def _dropout(h: jax.Array, rate: float, sample: bool) -> jax.Array:
    """Dropout of a residual branch; no module at all at rate 0, so parameter trees are unchanged."""
    return nn.Dropout(rate, deterministic=not sample)(h) if rate > 0 else h


class BottleneckBlock(nn.Module):
    """Pre-activation bottleneck: a + Conv1x1(BN-ReLU(Conv3x3(BN-ReLU(Conv1x1(BN-ReLU(a)))))).

    Every convolution has a bias, as PyTorch's `Conv2d` default in the reference code.
    """

    width: int
    bottleneck: int
    train: bool
    conv_impl: str
    dropout_rate: float = 0.0
    sample: bool = False

    @nn.compact
    def __call__(self, a: jax.Array) -> jax.Array:
        h = nn.relu(batch_norm(self.train)(a))
        h = Linear(self.bottleneck)(h)  # 1x1 conv == dot over channels
        h = nn.relu(batch_norm(self.train)(h))
        h = Conv(self.bottleneck, 3, impl=self.conv_impl, padding="SAME")(h)
        h = nn.relu(batch_norm(self.train)(h))
        h = Linear(self.width)(h)
        return a + _dropout(h, self.dropout_rate, self.sample)


def global_pool(a: jax.Array) -> jax.Array:
    """The parameter-free start of the CNN output block: mean over height and width."""
    return jnp.mean(a, axis=(1, 2))


class _ScanStep(nn.Module):
    """One scan iteration: apply block d, emit the (reduced) activation a_d (if `emit`)."""

    block: Callable[[], nn.Module]
    reduce: Callable[[jax.Array], jax.Array]
    emit: bool = True

    @nn.compact
    def __call__(self, a: jax.Array, _: None) -> tuple[jax.Array, jax.Array | None]:
        a = self.block()(a)
        return a, self.reduce(a) if self.emit else None


class BlockStack(nn.Module):
    """`depth` residual blocks with stacked parameters, run under `lax.scan`.

    Returns the final activation and the reduced activations a_1..a_depth, stacked (None
    when `emit` is off).
    """

    block: Callable[[], nn.Module]
    depth: int
    reduce: Callable[[jax.Array], jax.Array]
    unroll: int = 1
    remat: bool = False
    emit: bool = True

    @nn.compact
    def __call__(self, a: jax.Array) -> tuple[jax.Array, jax.Array]:
        step = nn.remat(_ScanStep) if self.remat else _ScanStep
        scanned = nn.scan(
            step,
            variable_axes={"params": 0, "batch_stats": 0},
            split_rngs={"params": True, "dropout": True, mfvi.RNG_STREAM: True},
            in_axes=0,
            length=self.depth,
            unroll=min(self.unroll, max(self.depth, 1)),
        )
        return scanned(self.block, self.reduce, self.emit, name="scan")(a, None)


# ---------------------------------------------------------------------------- heads


class MLPHead(nn.Module):
    """Spirals output block: Linear(width -> classes)."""

    num_classes: int
    train: bool
    dense: Callable[[int], nn.Module] = Linear

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        return self.dense(self.num_classes)(h)


class CNNHead(nn.Module):
    """CNN output block after the pool: one residual MLP block, then Linear(width -> classes)."""

    width: int
    num_classes: int
    train: bool

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        h = MLPBlock(self.width, self.train)(h)
        return Linear(self.num_classes)(h)


# ---------------------------------------------------------------------------- network


class LDN(nn.Module):
    """A learnt-depth network: logits at every depth 0..max_depth from one forward pass.

    Variables: 'params' (input block, 'blocks' stacked [max_depth, ...], 'head') and
    'batch_stats' (blocks stacked [max_depth, ...], head per depth [max_depth + 1, ...]).
    A deterministic-depth network (DDN) is the same module trained on its last depth only.
    The conv implementation is resolved when the model is traced, i.e. for the backend it runs on.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, sample_dropout: bool = False,
                 sample_weights: bool = False) -> jax.Array:
        """Outputs [num_heads, B, num_classes]. Dropout (if `dropout_rate`) is active in training
        and with `sample_dropout` (MC dropout); either needs a 'dropout' PRNG key in `rngs`.
        An MFVI network samples its pre-activations in training and with `sample_weights`
        (a 'weights' PRNG key); otherwise it computes with the posterior means."""
        cfg = self.config
        chex.assert_shape(x, (None, *cfg.input_shape))
        drop = dict(dropout_rate=cfg.dropout_rate, sample=train or sample_dropout)
        if cfg.arch == "mlp":
            dense: Callable[..., nn.Module] = Linear
            if cfg.weights == "mfvi":
                dense = functools.partial(mfvi.MFVILinear, sample=train or sample_weights)
            a = dense(cfg.width, name="input")(x)
            reduce = _identity
            block = functools.partial(MLPBlock, cfg.width, train, **drop, dense=dense)
            head = functools.partial(MLPHead, cfg.num_classes, train, dense=dense)
        else:
            impl = resolve_conv_impl(cfg.conv_impl)
            # The reference's input block: an unpadded 5x5 convolution, then 2x2 average pooling
            # (28x28 -> 24x24 -> 12x12; SVHN 32x32 -> 28x28 -> 14x14).
            a = Conv(cfg.width, 5, impl=impl, padding="VALID", name="input")(x)
            a = nn.avg_pool(a, (2, 2), strides=(2, 2))
            reduce = global_pool
            block = functools.partial(BottleneckBlock, cfg.width, cfg.bottleneck, train, impl, **drop)
            head = functools.partial(CNNHead, cfg.width, cfg.num_classes, train)
        every_depth = cfg.heads == "all"
        feats = reduce(a)[None]
        if cfg.max_depth > 0:
            remat = jax.default_backend() == "cpu" if cfg.remat == "auto" else cfg.remat
            a, deeper = BlockStack(block, cfg.max_depth, reduce, cfg.unroll, remat, every_depth, name="blocks")(a)
            feats = jnp.concatenate([feats, deeper], axis=0) if every_depth else reduce(a)[None]
        heads = nn.vmap(
            head,
            variable_axes={"params": None, "batch_stats": 0},
            split_rngs={"params": False, mfvi.RNG_STREAM: True},
            in_axes=0,
            out_axes=0,
        )
        logits = heads(name="head")(feats)
        chex.assert_shape(logits, (cfg.num_heads, x.shape[0], cfg.num_classes))
        return logits


def _identity(t: jax.Array) -> jax.Array:
    return t
