"""The in-memory data set container and input validation shared by every data source."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


def check_inputs(x: np.ndarray, input_shape: Sequence[int], name: str = "x") -> np.ndarray:
    """Returns `x` as float32 after checking its per-example shape, dtype and finiteness.

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
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x)))
        raise ValueError(f"{name} contains {bad} NaN or infinite values")
    return x


def check_labels(y: np.ndarray, num_classes: int, batch: int | None = None, name: str = "y") -> np.ndarray:
    """Returns integer labels as int32 after checking they are 1-D and in [0, num_classes)."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise TypeError(f"{name} must be integer class labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D [batch], got shape {list(y.shape)}")
    if batch is not None and y.shape[0] != batch:
        raise ValueError(f"{name} has {y.shape[0]} labels for {batch} inputs")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), found values in [{y.min()}, {y.max()}]"
        )
    return y.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test arrays held in memory, already normalised.

    `input_shape` is the per-example shape (e.g. (2,) for spirals, (28, 28, 1) for MNIST).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    def __post_init__(self):
        shape = self.x_train.shape[1:]
        object.__setattr__(self, "x_train", check_inputs(self.x_train, shape, "x_train"))
        object.__setattr__(self, "x_test", check_inputs(self.x_test, shape, "x_test"))
        object.__setattr__(
            self, "y_train", check_labels(self.y_train, self.num_classes, len(self.x_train), "y_train")
        )
        object.__setattr__(
            self, "y_test", check_labels(self.y_test, self.num_classes, len(self.x_test), "y_test")
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])
