"""The in-memory data set container and input validation shared by every data source."""

from __future__ import annotations

import dataclasses
from typing import Literal, Sequence

import numpy as np


Inputs = Literal["real", "tokens"]


def check_inputs(x: np.ndarray, input_shape: Sequence[int], name: str = "x", inputs: Inputs = "real") -> np.ndarray:
    """Returns `x` as float32 (real inputs) or int32 (`inputs='tokens'`, ids >= 0 for an
    embedding) after checking its per-example shape, dtype and finiteness.

    Done on the host, before anything is traced: inside `jit` a bad shape becomes an
    obscure broadcasting error and a NaN silently poisons every parameter.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
    expected = tuple(int(s) for s in input_shape)
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"{name} must have shape [batch, {', '.join(map(str, expected))}], got {list(x.shape)}"
        )
    if inputs == "tokens":
        if x.dtype.kind == "f" and not (np.all(np.isfinite(x)) and np.all(x == np.round(x))):
            raise TypeError(f"{name} must be integer token ids, got non-integer {x.dtype} values")
        if x.size and x.min() < 0:
            raise ValueError(f"{name} must be token ids >= 0, found {x.min()}")
        return x.astype(np.int32, copy=False)
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x)))
        raise ValueError(f"{name} contains {bad} NaN or infinite values")
    return x


def check_labels(y: np.ndarray, num_classes: int, batch: int | None = None, name: str = "y",
                 target_shape: Sequence[int] = ()) -> np.ndarray:
    """Returns integer labels as int32 after checking their shape, [batch, *target_shape] (one
    label per example, or one per position: [batch, T] for a sequence), and range [0, num_classes)."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise TypeError(f"{name} must be integer class labels, got dtype {y.dtype}")
    target_shape = tuple(int(s) for s in target_shape)
    if y.ndim != 1 + len(target_shape) or tuple(y.shape[1:]) != target_shape:
        want = "1-D [batch]" if not target_shape else f"[batch, {', '.join(map(str, target_shape))}] (one per position)"
        raise ValueError(f"{name} must be {want}, got shape {list(y.shape)}")
    if batch is not None and y.shape[0] != batch:
        raise ValueError(f"{name} has {y.shape[0]} labels for {batch} inputs")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), found values in [{y.min()}, {y.max()}]"
        )
    return y.astype(np.int32)


def check_targets(y: np.ndarray, batch: int | None = None, name: str = "y") -> np.ndarray:
    """Returns real regression targets as float32 after checking they are 1-D and finite."""
    y = np.asarray(y)
    if y.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold numbers, got dtype {y.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D [batch] (one target), got shape {list(y.shape)}")
    if batch is not None and y.shape[0] != batch:
        raise ValueError(f"{name} has {y.shape[0]} targets for {batch} inputs")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(y)))} NaN or infinite values")
    return y.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test arrays held in memory, already normalised, and optionally a validation
    split held out of the training set (`split_validation`; `validation` says how it was drawn).

    `input_shape` is the per-example shape (e.g. (2,) for spirals, (28, 28, 1) for MNIST).
    targets: 'class' (integer labels, `num_classes` of them; one per example [N], or one per
    position [N, *target_shape], e.g. the next token at every position of a sequence) or 'real'
    (regression: float targets, standardised; `num_classes` is 1, the one output; `target_scale` =
    (loc, scale) maps them back to the data's units, y = loc + scale * y_standardised).
    inputs: 'real' (float features) or 'tokens' (integer ids, kept int32 for an embedding).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    validation: dict | None = None
    targets: Literal["class", "real"] = "class"
    target_scale: tuple[float, float] = (0.0, 1.0)
    inputs: Inputs = "real"

    def __post_init__(self):
        if self.inputs not in ("real", "tokens"):
            raise ValueError(f"inputs must be 'real' or 'tokens', got {self.inputs!r}")
        if self.targets not in ("class", "real"):
            raise ValueError(f"targets must be 'class' or 'real', got {self.targets!r}")
        if self.targets == "real" and self.num_classes != 1:
            raise ValueError(f"a regression data set has one output (num_classes=1), got {self.num_classes}")
        if not (len(self.target_scale) == 2 and np.isfinite(self.target_scale).all() and self.target_scale[1] > 0):
            raise ValueError(f"target_scale must be (loc, scale) with scale > 0, got {self.target_scale}")
        object.__setattr__(self, "target_scale", tuple(float(v) for v in self.target_scale))
        shape = self.x_train.shape[1:]
        for split in ("train", "test", "val"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if split == "val" and x is None and y is None:
                continue
            if x is None or y is None:
                raise ValueError("x_val and y_val must be given together")
            object.__setattr__(self, f"x_{split}", check_inputs(x, shape, f"x_{split}", self.inputs))
            y = (check_labels(y, self.num_classes, len(x), f"y_{split}", np.shape(self.y_train)[1:])
                 if self.targets == "class"
                 else check_targets(y, len(x), f"y_{split}"))
            object.__setattr__(self, f"y_{split}", y)

    @property
    def n_val(self) -> int:
        return 0 if self.x_val is None else int(self.x_val.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def target_shape(self) -> tuple[int, ...]:
        """Targets per example: () for one label, (T,) for one per position of a sequence."""
        return tuple(self.y_train.shape[1:]) if self.targets == "class" else ()

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])


def split_validation(data: Dataset, fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Holds out a seeded, class-stratified `fraction` of the training set for validation.

    Each class gives round(fraction * its count) examples, so the validation set has the
    training set's class balance (Fashion-MNIST: 600 of each class's 6000). The split belongs
    to the data, not to a network: every network of a study sees the same one. Regression
    targets have no classes, and per-position targets no one class per example: for them the
    split is a plain seeded random one.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    if data.x_val is not None:
        raise ValueError(f"{data.name} already has a validation split ({data.n_val} examples)")
    rng = np.random.default_rng(seed)
    stratified = data.targets == "class" and not data.target_shape
    groups = [np.flatnonzero(data.y_train == c) for c in range(data.num_classes)] if stratified else [
        np.arange(data.n_train)]
    held = [rng.permutation(g) for g in groups]
    val = np.sort(np.concatenate([idx[: int(round(fraction * len(idx)))] for idx in held]))
    if val.size == 0 or val.size == data.n_train:
        raise ValueError(f"a {fraction:g} validation split of {data.n_train} training examples leaves one side empty")
    train = np.setdiff1d(np.arange(data.n_train), val)
    return dataclasses.replace(
        data, x_train=data.x_train[train], y_train=data.y_train[train], x_val=data.x_train[val],
        y_val=data.y_train[val],
        validation={"fraction": fraction, "seed": seed, "stratified": stratified, "n_val": int(val.size)},
    )
