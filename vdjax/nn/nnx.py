"""Flax NNX modules as the stem, residual block or head of a `vdjax.Network`.

An NNX module is a stateful object; an LDN needs `max_depth` independent copies of the block,
stacked along a leading depth axis. So vdjax takes the NNX *class* and its constructor arguments,
`nnx_module(PreNormBlock, 32, hidden=64)`, and returns `NNXModule`: a frozen, hashable Linen
module (a template, as `Network` needs) that the Linen machinery stacks under `nn.scan` and
vmaps over the heads like any other. Training, checkpoints, pruning, prediction and the
baselines see a Linen module with Linen variables and need no change.

- init: builds `cls(*args, **kwargs, rngs=nnx.Rngs(...))` from the Linen 'params' key (each
  scanned depth has its own key, so its own initialisation) and stores the `nnx.Param`s in the
  Linen 'params' collection and the `nnx.BatchStat`s in 'batch_stats', as plain arrays nested
  by their NNX path (list indices become strings: `layers/0/kernel`). The variables are those
  the module holds after construction, before its first call (as Linen's BatchNorm, init does
  not update running statistics).
- apply: builds the module's structure without computing (`nnx.eval_shape`), puts the Linen
  values in, sets the mode the NNX way (`set_attributes` of `deterministic` and
  `use_running_average`, what `module.train()` / `module.eval()` set) from the Linen `train` and
  `deterministic` keywords, reseeds the module's RNG streams from the Linen streams of the same
  names ('dropout': a fresh key per step, block and depth), calls it, and writes the updated
  `BatchStat`s back when 'batch_stats' is mutable (training).
- other NNX state: `nnx.RngState` (the `RngStream`s a module keeps, e.g. `nnx.Dropout`'s) is not
  stored, it is reseeded at every call; any other `nnx.Variable` type present after construction
  (`nnx.Cache`, custom types) is refused at init with a TypeError naming it; variables a call
  creates (`sow`'d `nnx.Intermediate`s) are dropped.

`flax.nnx.bridge.ToLinen` is not used: its `__call__` declares no `train`/`deterministic` (so
vdjax would pass no mode and the NNX module would stay in its constructed mode), its init builds
`nnx.Rngs` from the Linen streams present only (vdjax initialises with a 'params' key alone, and
`nnx.Dropout(rngs=...)` then fails with "No RngStream named 'dropout'"), and each apply runs the
module's initialisers again.
"""

from __future__ import annotations

import inspect
from typing import Any

import flax.linen as nn
import jax
from flax import nnx
from flax.core import unfreeze
from flax.traverse_util import flatten_dict, unflatten_dict

STORED = {"params": nnx.Param, "batch_stats": nnx.BatchStat}
# The streams the NNX constructor sees. Named, so that a module forking 'dropout' keeps a stream
# tagged 'dropout' that `apply` reseeds from the Linen 'dropout' stream; 'default' serves any other.
INIT_STREAMS = ("default", "params", "dropout")


def nnx_module(cls: type[nnx.Module], *args: Any, **kwargs: Any) -> "NNXModule":
    """`cls(*args, **kwargs, rngs=...)` as a Linen module template for `vdjax.Network`.

    `cls` is an `nnx.Module` subclass whose constructor takes `rngs` (an `nnx.Rngs`) and whose
    `__call__` takes the activations alone; arguments must be hashable (a `Network` is a jit
    static argument and part of a run id), e.g. tuples rather than lists.
    """
    return NNXModule(cls, tuple(args), tuple(sorted(kwargs.items())))


class NNXModule(nn.Module):
    """A Linen module running `cls(*args, **dict(kwargs), rngs=...)`; see the module docstring."""

    cls: Any
    args: tuple = ()
    kwargs: tuple = ()  # (name, value) pairs

    def __post_init__(self):
        if isinstance(self.kwargs, dict):
            object.__setattr__(self, "kwargs", tuple(sorted(self.kwargs.items())))
        if not (isinstance(self.cls, type) and issubclass(self.cls, nnx.Module)):
            raise TypeError(f"NNXModule needs an nnx.Module subclass, got {kind_of(self.cls)}")
        if not isinstance(self.args, tuple) or not isinstance(self.kwargs, tuple):
            raise TypeError(f"NNXModule args and kwargs must be tuples, got {type(self.args).__name__} and "
                            f"{type(self.kwargs).__name__}")
        try:
            hash((self.args, self.kwargs))
        except TypeError as e:
            raise TypeError(f"the arguments of {self.cls.__name__} must be hashable (a Network is a jit static "
                            f"argument): {e}") from None
        super().__post_init__()

    def build(self, rngs: nnx.Rngs) -> nnx.Module:
        return self.cls(*self.args, **dict(self.kwargs), rngs=rngs)

    @nn.compact
    def __call__(self, x: Any, train: bool = False, deterministic: bool = True) -> Any:
        if self.is_initializing() and not self.variables:  # (a transform may broadcast existing ones)
            keys = jax.random.split(self.make_rng("params"), len(INIT_STREAMS))
            module = self.build(nnx.Rngs(**dict(zip(INIT_STREAMS, keys))))
            self._check_state(module)
            self._store(module, tuple(STORED))
        else:
            module = nnx.eval_shape(lambda: self.build(nnx.Rngs(**{s: 0 for s in INIT_STREAMS})))
            self._load(module)
        self._reseed(module)
        module.set_attributes(deterministic=deterministic, use_running_average=not train, raise_if_not_found=False)
        out = module(x, **_mode_keywords(self.cls, train, deterministic))
        if not self.is_initializing():
            self._store(module, ("batch_stats",))
        return out

    def _check_state(self, module: nnx.Module) -> None:
        for path, node in nnx.iter_graph(module):
            if isinstance(node, nnx.Variable) and not isinstance(node, (*STORED.values(), nnx.RngState)):
                raise TypeError(f"{self.cls.__name__}.{_name(path)} is a {type(node).__name__} variable; vdjax keeps "
                                f"nnx.Param and nnx.BatchStat variables (and reseeds nnx.RngState) only")

    def _store(self, module: nnx.Module, collections: tuple[str, ...]) -> None:
        for collection in collections:
            if not self.is_mutable_collection(collection):
                continue
            flat = {tuple(str(k) for k in path): node.get_value() for path, node in nnx.iter_graph(module)
                    if isinstance(node, STORED[collection])}
            for name, value in unflatten_dict(flat).items():
                self.put_variable(collection, name, value)

    def _load(self, module: nnx.Module) -> None:
        stored = {c: flatten_dict(unfreeze(self.variables.get(c, {}))) for c in STORED}
        for path, node in nnx.iter_graph(module):
            for collection, kind in STORED.items():
                if isinstance(node, kind):
                    key = tuple(str(k) for k in path)
                    if key not in stored[collection]:
                        raise KeyError(f"{self.cls.__name__}.{_name(path)}: no '{collection}' variable "
                                       f"{'/'.join(key)} (variables of another module?)")
                    node.set_value(stored[collection][key])

    def _reseed(self, module: nnx.Module) -> None:
        """Every RNG stream of the module gets a key from the Linen stream of its name when the call
        has one ('dropout' in training or MC dropout), else a fixed key (then nothing draws: eval)."""
        tags = sorted({node.tag for _, node in nnx.iter_graph(module) if isinstance(node, nnx.RngStream)})
        if tags:
            nnx.reseed(module, **{t: self.make_rng(t) if self.has_rng(t) else jax.random.key(0) for t in tags})


def _mode_keywords(cls: type, train: bool, deterministic: bool) -> dict[str, bool]:
    """`train` / `deterministic` for an NNX `__call__` that declares them (vdjax's Linen convention)."""
    declared = inspect.signature(cls.__call__).parameters
    return {k: v for k, v in {"train": train, "deterministic": deterministic}.items() if k in declared}


def _name(path: tuple) -> str:
    return ".".join(str(k) for k in path)


def kind_of(value: Any) -> str:
    """'a numpy.ufunc' or 'the class builtins.int': what a wrong argument is, in one phrase."""
    kind = value if isinstance(value, type) else type(value)
    return f"{'the class' if isinstance(value, type) else 'a'} {kind.__module__}.{kind.__qualname__}"
