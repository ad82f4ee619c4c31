"""A learnt-depth network (LDN) assembled from any Flax modules: stem, residual block, head.

One forward pass computes `a_0 = stem(x)` and `a_d = a_{d-1} + block_d(a_{d-1})` for d = 1..D,
the block's parameters stacked along a leading depth axis and run under `nn.scan` (compile time
flat in depth), and applies the head to every a_d: outputs `[max_depth + 1, batch, num_classes]`.

A `Network` holds unbound module *instances* as templates (Flax modules are frozen, hashable
dataclasses with a stable repr), so it is a static jit argument, a cache key and a run id as it
is. Modules see the mode through the call keywords they declare, the Flax idioms:
`train` (BatchNorm: batch statistics and running-average updates) and `deterministic` (no noise:
dropout off, MFVI layers at their posterior means; False in training, for MC-dropout prediction
and for sampled MFVI prediction). A module that declares neither is called on its input alone.
The noise streams, 'dropout' and MFVI's 'weights', are split across the scanned blocks and the
depths' heads, so every block and depth draws its own noise.

`pool`: a parameter-free start of the head (e.g. global average pooling), applied to every a_d
inside the scan, so the scan emits `[D, batch, features]` rather than whole feature maps.
`stages`: a multi-stage backbone (a ResNet that downsamples between stages). Each `Stage` has
its own block, its own number of blocks and a `transition` into it (stride-2 downsampling, a
change of width) applied once on entry; its own `exit` maps each of its (pooled) activations to
the head's common input (an adapter to a common width, as DUN's multi-stage ResNet). Depth d
counts blocks over all stages, so q(d) is one categorical over the whole network, and pruning
to d cuts after the d-th block: later stages go entirely. Without `stages` the network is one
stage (`block`, `max_depth`), with the parameter paths it always had.

`target_shape`: predictions per example. () is one per example; (T,) is one per position of a
sequence (outputs [D+1, B, T, C], targets [B, T]); (H, W) one per pixel. `inputs='tokens'`: the
inputs are integer ids (kept int32 for an embedding stem).

`head_norm`: 'per_depth' keeps the head's `batch_stats` per depth (vmap, a leading depth axis);
'shared' applies one head to the depths in order 0..D (scan, statistics carried), as the
reference PyTorch code calls one output module on every depth: one running mean and variance,
updated D+1 times a training step, each depth normalised with its own batch in training.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Literal

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from vdjax.data.core import Inputs
from vdjax.nn.mfvi import RNG_STREAM as WEIGHTS_STREAM
from vdjax.nn.nnx import kind_of

Likelihood = Literal["categorical", "gaussian"]
Heads = Literal["all", "last"]
HeadNorm = Literal["per_depth", "shared"]
Weights = Literal["point", "mfvi"]
NOISE_RNGS = {"dropout": True, WEIGHTS_STREAM: True}  # split across blocks and depths


def check_common(config: Any) -> None:
    """Validation shared by `Network` and the presets' `ModelConfig`: the fields they both have."""
    max_depth, num_classes, input_shape = config.max_depth, config.num_classes, config.input_shape
    likelihood, heads, head_norm, unroll, remat = (config.likelihood, config.heads, config.head_norm, config.unroll,
                                                   config.remat)
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0:
        raise ValueError(f"max_depth must be an integer >= 0, got {max_depth!r}")
    if likelihood not in ("categorical", "gaussian"):
        raise ValueError(f"likelihood must be 'categorical' or 'gaussian', got {likelihood!r}")
    if likelihood == "categorical" and num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if likelihood == "gaussian" and num_classes != 1:
        raise ValueError(f"a gaussian likelihood has one output (num_classes=1), got num_classes={num_classes}")
    if not input_shape or min(input_shape) < 1:
        raise ValueError(f"input_shape must be a non-empty shape of positive sizes, got {input_shape}")
    if heads not in ("all", "last"):
        raise ValueError(f"heads must be 'all' or 'last', got {heads!r}")
    if head_norm not in ("per_depth", "shared"):
        raise ValueError(f"head_norm must be 'per_depth' or 'shared', got {head_norm!r}")
    if unroll < 1:
        raise ValueError(f"unroll must be >= 1, got {unroll}")
    if remat not in (True, False, "auto"):
        raise ValueError(f"remat must be True, False or 'auto', got {remat!r}")


def check_weights(weights: str, prior_std: float, uses_dropout: bool) -> None:
    """Validation of the weight posterior shared by `Network` and `ModelConfig`."""
    if weights not in ("point", "mfvi"):
        raise ValueError(f"weights must be 'point' or 'mfvi', got {weights!r}")
    if weights == "mfvi" and uses_dropout:
        raise ValueError("weights='mfvi' with dropout is not supported (a network has one noise stream)")
    if not prior_std > 0:
        raise ValueError(f"prior_std must be positive, got {prior_std}")


def noise_stream(uses_dropout: bool, weights: str) -> str | None:
    """The PRNG stream a training step feeds: 'dropout', MFVI's 'weights', or None."""
    return "dropout" if uses_dropout else WEIGHTS_STREAM if weights == "mfvi" else None


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a multi-stage backbone: `max_blocks` residual blocks `block` (each keeps the
    shape of its input), entered through `transition` (None: the previous stage's shape), and left
    at every block through `exit` (None: the pooled activations go to the head as they are)."""

    block: nn.Module
    max_blocks: int
    transition: nn.Module | None = None
    exit: nn.Module | None = None

    def __post_init__(self):
        for name in ("block", "transition", "exit"):
            if getattr(self, name) is not None or name == "block":
                check_module(f"a stage's {name}", getattr(self, name))
        if isinstance(self.max_blocks, bool) or not isinstance(self.max_blocks, int) or self.max_blocks < 0:
            raise ValueError(f"a stage's max_blocks must be an integer >= 0, got {self.max_blocks!r}")

    def describe(self) -> dict[str, Any]:
        return {f.name: v if isinstance(v, int) else repr(v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}


@dataclasses.dataclass(frozen=True)
class Network:
    """An LDN's architecture: module templates and the shape of its problem.

    stem: input [B, *input_shape] -> a_0. block: a -> f(a), the same shape as a (the residual
    is added by the network). head: pooled a_d -> [B, num_classes] (logits, or a Gaussian mean).
    uses_dropout: a module draws from the 'dropout' PRNG stream (training gets a key per step).
    weights: 'mfvi' when modules are `vdjax.nn.mfvi.MFVILinear` layers (they draw from the 'weights'
    stream unless deterministic; the loss adds their KL to the prior N(0, prior_std^2) / N_train).
    heads: 'all' (an LDN: every depth) or 'last' (the deepest only: a DDN or pruned network as
    deployed). unroll / remat: of the block scan ('auto' remat: on for CPU, where recomputing a
    block is cheaper than the scan's saved buffers).
    stages: a multi-stage backbone (build it with `Network.from_stages`); `block` is then the
    first stage's and `max_depth` the total number of blocks. target_shape: () one prediction per
    example, (T,) one per position. inputs: 'real' or 'tokens' (integer ids).
    """

    stem: nn.Module
    block: nn.Module
    head: nn.Module
    max_depth: int
    num_classes: int
    input_shape: tuple[int, ...]
    pool: nn.Module | None = None
    likelihood: Likelihood = "categorical"
    heads: Heads = "all"
    head_norm: HeadNorm = "per_depth"
    uses_dropout: bool = False
    unroll: int = 1
    remat: bool | str = "auto"
    weights: Weights = "point"
    prior_std: float = 1.0
    stages: tuple[Stage, ...] = ()
    target_shape: tuple[int, ...] = ()
    inputs: Inputs = "real"

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "target_shape", tuple(int(s) for s in self.target_shape))
        object.__setattr__(self, "stages", tuple(self.stages))
        for name in ("stem", "block", "head") + (("pool",) if self.pool is not None else ()):
            check_module(name, getattr(self, name))
        check_common(self)
        check_weights(self.weights, self.prior_std, self.uses_dropout)
        self._check_stages()
        if min(self.target_shape, default=1) < 1:
            raise ValueError(f"target_shape must be positive sizes, got {self.target_shape}")
        if self.target_shape and self.likelihood != "categorical":
            raise ValueError("per-position targets (target_shape) need the categorical likelihood")
        if self.inputs not in ("real", "tokens"):
            raise ValueError(f"inputs must be 'real' or 'tokens', got {self.inputs!r}")

    def _check_stages(self) -> None:
        if not self.stages:
            return
        if not all(isinstance(s, Stage) for s in self.stages):
            raise TypeError(f"stages must be vdjax.Stage instances, got {[kind_of(s) for s in self.stages]}")
        if any(s.max_blocks < 1 for s in self.stages) and len(self.stages) > 1:
            raise ValueError(f"every stage of a multi-stage network needs max_blocks >= 1, got "
                             f"{[s.max_blocks for s in self.stages]}")
        total = sum(s.max_blocks for s in self.stages)
        if self.max_depth != total or self.block != self.stages[0].block:
            raise ValueError(f"a staged network's max_depth is its stages' blocks ({total}) and its block the first "
                             f"stage's; build it with Network.from_stages (got max_depth={self.max_depth})")

    @classmethod
    def from_stages(cls, stem: nn.Module, stages: tuple[Stage, ...], head: nn.Module, **fields: Any) -> "Network":
        """A multi-stage network: `stem`, then `stages` in order, the `head` reading every block's
        exit; `fields` are the other `Network` fields (num_classes, input_shape, pool, ...)."""
        stages = tuple(stages)
        if not stages or not all(isinstance(s, Stage) for s in stages):
            raise TypeError("stages must be a non-empty sequence of vdjax.Stage")
        return cls(stem=stem, block=stages[0].block, head=head, max_depth=sum(s.max_blocks for s in stages),
                   stages=stages, **fields)

    def replace(self, **changes) -> "Network":
        return dataclasses.replace(self, **changes)

    def truncated(self, depth: int) -> "Network":
        """The network cut after its `depth`-th block: what pruning to `depth` keeps (a staged
        network loses every later stage, and the stage of block `depth` keeps its first blocks)."""
        if not 0 <= depth <= self.max_depth:
            raise ValueError(f"a network of {self.max_depth} blocks cannot be cut to {depth}")
        if not self.stages:
            return self.replace(max_depth=depth)
        s, kept = self.stage_of(depth)
        stages = self.stages[:s] + (dataclasses.replace(self.stages[s], max_blocks=kept),)
        return self.replace(stages=stages, max_depth=depth, block=stages[0].block)

    def stage_of(self, depth: int) -> tuple[int, int]:
        """(stage index, blocks of it up to and including block `depth`); depth 0 is stage 0's entry."""
        start = 0
        for s, stage in enumerate(self.stages or (Stage(self.block, self.max_depth),)):
            if depth <= start + stage.max_blocks:
                return s, depth - start
            start += stage.max_blocks
        raise ValueError(f"depth {depth} is beyond the network's {self.max_depth} blocks")

    def to_network(self) -> "Network":
        return self

    def describe(self) -> dict[str, Any]:
        """A JSON-able record of the architecture (modules by their repr)."""
        out = {f.name: repr(v) if isinstance(v, nn.Module) else v
               for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}
        out["stages"] = [s.describe() for s in self.stages]
        return out

    @property
    def num_heads(self) -> int:
        """Rows of the outputs: one per depth 0..max_depth, or 1 with heads='last'."""
        return self.max_depth + 1 if self.heads == "all" else 1

    @property
    def rng_stream(self) -> str | None:
        """The PRNG stream a training step needs: 'dropout', MFVI's 'weights', or None."""
        return noise_stream(self.uses_dropout, self.weights)


def check_module(name: str, value: Any) -> None:
    """A Linen module instance, NNX ones through `vdjax.nn.nnx.nnx_module`; anything else gets one line."""
    if isinstance(value, nn.Module):
        return
    if isinstance(value, nnx.Module) or (isinstance(value, type) and issubclass(value, nnx.Module)):
        instance = isinstance(value, nnx.Module)
        cls, what = (type(value), "an nnx.Module instance") if instance else (value, "an nnx.Module class")
        raise TypeError(f"{name} is {what}; pass vdjax.nn.nnx.nnx_module({cls.__name__}, *args, **kwargs) so that "
                        f"vdjax can create max_depth independent copies")
    raise TypeError(f"{name} must be a Flax module (a Linen instance, or vdjax.nn.nnx.nnx_module(...) for NNX), got "
                    f"{kind_of(value)}")


def mode_keywords(module: nn.Module, train: bool, deterministic: bool) -> dict[str, bool]:
    """The mode keywords that `module.__call__` declares, with their values."""
    declared = inspect.signature(type(module).__call__).parameters
    flags = {"train": train, "deterministic": deterministic}
    return {k: v for k, v in flags.items() if k in declared}


def call(module: nn.Module, x: jax.Array, train: bool, deterministic: bool) -> jax.Array:
    return module(x, **mode_keywords(module, train, deterministic))


def check_block_shape(block: nn.Module, a: jax.Array, train: bool, where: str = "") -> None:
    """A residual block must map a_{d-1} to the same shape and dtype; say so before the scan does."""
    def init(a):
        rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1), WEIGHTS_STREAM: jax.random.key(2)}
        return block.init_with_output(rngs, a, **mode_keywords(block, train, not train))[0]

    out = jax.eval_shape(init, jax.ShapeDtypeStruct(a.shape, a.dtype))
    name = type(block).__name__
    if getattr(out, "shape", None) != a.shape:
        entry = f"the shape its stage is entered with, {a.shape}; put a change of shape in the stage's transition" \
            if where else f"the shape (the stem's output, {a.shape})"
        raise ValueError(f"the residual block {name}{where} maps activations of shape {a.shape} to "
                         f"{getattr(out, 'shape', type(out).__name__)}; a_d = a_(d-1) + f(a_(d-1)) needs f to keep "
                         f"{entry}")
    if jnp.result_type(a.dtype, out.dtype) != a.dtype:
        raise ValueError(f"the residual block {name} maps {a.dtype} activations to {out.dtype}; a_d = a_(d-1) + "
                         f"f(a_(d-1)) must stay {a.dtype} (the stem's output)")


class _Step(nn.Module):
    """One scan iteration: a_d = a_{d-1} + f_d(a_{d-1}); emits the pooled a_d (if `emit`)."""

    network: Network
    train: bool
    deterministic: bool
    emit: bool = True
    stage: int = 0

    @nn.compact
    def __call__(self, a: jax.Array, _: None) -> tuple[jax.Array, jax.Array | None]:
        block = self.network.stages[self.stage].block if self.network.stages else self.network.block
        a = a + call(block.copy(), a, self.train, self.deterministic)
        return a, pooled(self.network, a) if self.emit else None


def pooled(network: Network, a: jax.Array) -> jax.Array:
    return a if network.pool is None else network.pool.copy()(a)


class BlockStack(nn.Module):
    """`depth` residual blocks with stacked parameters, run under `lax.scan`.

    Returns the final activation and the pooled activations a_1..a_depth, stacked (None when
    `emit` is off).
    """

    network: Network
    depth: int
    train: bool
    deterministic: bool
    remat: bool = False
    emit: bool = True
    stage: int = 0

    @nn.compact
    def __call__(self, a: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        step = nn.remat(_Step) if self.remat else _Step
        scanned = nn.scan(
            step,
            variable_axes={"params": 0, "batch_stats": 0},
            split_rngs={"params": True, **NOISE_RNGS},
            in_axes=0,
            length=self.depth,
            unroll=min(self.network.unroll, max(self.depth, 1)),
        )
        return scanned(self.network, self.train, self.deterministic, self.emit, self.stage, name="scan")(a, None)


def stacked_block_variables(stack: dict[str, Any], block: nn.Module) -> dict[str, Any]:
    """Per collection, the variables of a `BlockStack`'s blocks, stacked along depth. They sit where
    `_Step` creates the block: 'scan/<block class>_0', Flax's automatic name, which keeps the
    presets' parameter paths."""
    name = f"{type(block).__name__}_0"
    return {c: t["scan"][name] for c, t in stack.items() if "scan" in t and name in t["scan"]}


def apply_heads(head: nn.Module, feats: jax.Array, head_norm: HeadNorm, train: bool, deterministic: bool) -> jax.Array:
    """The head on every depth's features [K, B, ...] -> [K, B, C]; parameters shared, BatchNorm
    statistics per depth ('per_depth', a leading K axis) or one set updated in depth order ('shared')."""
    kw = mode_keywords(head, train, deterministic)
    if head_norm == "per_depth":
        heads = nn.vmap(lambda mdl, h: mdl(h, **kw), variable_axes={"params": None, "batch_stats": 0},
                        split_rngs={"params": False, **NOISE_RNGS}, in_axes=0, out_axes=0)
        return heads(head, feats)
    if head.is_initializing():
        head(feats[0], **kw)  # creates the variables the scan below broadcasts (and carries)
    # Statistics that are updated ride in the carry, depth after depth; read-only ones are broadcast.
    updated = head.is_mutable_collection("batch_stats")
    heads = nn.scan(lambda mdl, c, h: (c, mdl(h, **kw)),
                    variable_broadcast="params" if updated else ["params", "batch_stats"],
                    variable_carry="batch_stats" if updated else (),
                    split_rngs={"params": False, **NOISE_RNGS}, in_axes=0, out_axes=0)
    return heads(head, None, feats)[1]


class LDN(nn.Module):
    """A learnt-depth network: outputs at every depth 0..max_depth from one forward pass.

    `config`: a `Network`, or a preset such as `vdjax.nn.models.ModelConfig` (anything with
    `to_network()`). Variables: 'params' ('input', 'blocks' stacked [max_depth, ...], 'head')
    and 'batch_stats' where the modules keep them (blocks stacked [max_depth, ...]; the head's
    per depth [num_heads, ...] or shared). A deterministic-depth network (DDN) is the same
    module trained on its last depth only.
    """

    config: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, sample_dropout: bool = False,
                 sample_weights: bool = False) -> jax.Array:
        """Outputs [num_heads, B, *target_shape, num_classes]. Dropout is active in training and with
        `sample_dropout` (MC dropout); either needs a 'dropout' PRNG key in `rngs`. MFVI layers
        sample their pre-activations in training and with `sample_weights` (a 'weights' key),
        otherwise they compute with the posterior means. Both flags clear `deterministic`."""
        net = self.config.to_network()
        chex.assert_shape(x, (None, *net.input_shape))
        deterministic = not (train or sample_dropout or sample_weights)
        a = call(net.stem.copy(name="input"), x, train, deterministic)
        remat = jax.default_backend() == "cpu" if net.remat == "auto" else bool(net.remat)
        if net.stages:
            feats = StagedBackbone(net, train, deterministic, remat, name="backbone")(a)
        else:
            feats = self._one_stage(net, a, train, deterministic, remat)
        outputs = apply_heads(net.head.copy(name="head"), feats, net.head_norm, train, deterministic)
        want = (net.num_heads, x.shape[0], *net.target_shape, net.num_classes)
        if outputs.shape != want:
            raise ValueError(f"the head gives outputs of shape {outputs.shape[1:]} per depth; this network needs "
                             f"{want[1:]} ([batch, *target_shape, num_classes], target_shape={net.target_shape})")
        return outputs

    def _one_stage(self, net: Network, a: jax.Array, train: bool, deterministic: bool, remat: bool) -> jax.Array:
        if self.is_initializing() and net.max_depth > 0:
            check_block_shape(net.block, a, train)
        every_depth = net.heads == "all"
        feats = pooled(net, a)[None]
        if net.max_depth > 0:
            stack = BlockStack(net, net.max_depth, train, deterministic, remat, every_depth, name="blocks")
            a, deeper = stack(a)
            feats = jnp.concatenate([feats, deeper], axis=0) if every_depth else pooled(net, a)[None]
        return feats


class StagedBackbone(nn.Module):
    """The stages of a multi-stage network in order: each entered through its transition, its
    blocks under one scan, every block's pooled activation through the stage's exit. Returns the
    head's inputs at depths 0..D stacked [D+1, B, ...] (the deepest only with heads='last').

    Variables per stage `stage_<s>`: 'transition', 'blocks' (stacked [max_blocks, ...]) and 'exit'
    (parameters shared by the stage's depths, BatchNorm statistics per depth: [max_blocks, ...],
    [max_blocks + 1, ...] in stage 0, whose exit also reads depth 0)."""

    network: Network
    train: bool
    deterministic: bool
    remat: bool

    @nn.compact
    def __call__(self, a: jax.Array) -> jax.Array:
        net, every_depth, feats = self.network, self.network.heads == "all", []
        for s, stage in enumerate(net.stages):
            a, out = _StageModule(net, s, self.train, self.deterministic, self.remat, every_depth, name=f"stage_{s}")(a)
            feats.append(out)
        if not every_depth:
            return feats[-1]
        shapes = {f.shape[1:] for f in feats}
        if len(shapes) > 1:
            raise ValueError(f"the stages' exits give the head inputs of shapes {[f.shape[2:] for f in feats]} per "
                             f"example; every stage's exit must map to one common shape")
        return jnp.concatenate(feats, axis=0)


class _StageModule(nn.Module):
    network: Network
    index: int
    train: bool
    deterministic: bool
    remat: bool
    every_depth: bool

    @nn.compact
    def __call__(self, a: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        net, stage, first = self.network, self.network.stages[self.index], self.index == 0
        last = self.index == len(net.stages) - 1
        if stage.transition is not None:
            a = call(stage.transition.copy(name="transition"), a, self.train, self.deterministic)
        if self.is_initializing() and stage.max_blocks > 0:
            check_block_shape(stage.block, a, self.train, f" of stage {self.index}")
        feats = pooled(net, a)[None] if first and self.every_depth else None
        if stage.max_blocks > 0:
            stack = BlockStack(net, stage.max_blocks, self.train, self.deterministic, self.remat, self.every_depth,
                               self.index, name="blocks")
            a, deeper = stack(a)
            feats = deeper if feats is None else jnp.concatenate([feats, deeper], axis=0)
        if not self.every_depth:
            if not last:
                return a, None
            feats = pooled(net, a)[None]
        if stage.exit is not None:
            feats = apply_heads(stage.exit.copy(name="exit"), feats, "per_depth", self.train, self.deterministic)
        return a, feats
