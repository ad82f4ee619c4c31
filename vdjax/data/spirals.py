"""The spirals data set of the paper, generated with an explicit seed.

Each arm draws angles `t = sqrt(u) * rotation` (u ~ U[0, 1), so points are denser towards
the outer end), places the point `(t cos t, t sin t)`, adds `noise * U[0, 1)` to each
coordinate (uniform, as the reference generator does although the paper says Gaussian) and
rotates the whole arm by `360 deg * arm / n_arms`. The label is the arm. The reference code
ignored its `random_state` (numpy's global RNG, never seeded), so each of its runs trained and
tested on a new draw; here every draw comes from one `numpy` generator seeded by `seed`, and
`spirals_draws` gives repeats their own draws (one seed each) as the reference's reruns had.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vdjax.data.core import Dataset


@dataclasses.dataclass(frozen=True)
class SpiralsConfig:
    """Defaults are the paper's: 2000 points, 2 arms, 720 deg, noise 0.2, 10% (200) for training."""

    n_points: int = 2000
    n_arms: int = 2
    rotation: float = 720.0  # degrees of rotation of each arm
    noise: float = 0.2
    n_train: int = 200  # the rest of the points form the test set
    seed: int = 0  # seeds the draw: the points, their noise and the train/test split

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.n_arms < 2:
            raise ValueError(f"n_arms must be >= 2, got {self.n_arms}")
        if self.n_points < self.n_arms:
            raise ValueError(f"n_points must be >= n_arms, got {self.n_points}")
        if not 1 <= self.n_train < self.n_points:
            raise ValueError(f"n_train must be in [1, n_points), got {self.n_train} of {self.n_points}")
        if self.rotation <= 0:
            raise ValueError(f"rotation must be positive (degrees), got {self.rotation}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")


def make_spirals(
    n_points: int, n_arms: int, rotation: float, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draws `n_points` shuffled points (float32 [n, 2]) and their arm labels (int32 [n])."""
    counts = np.full(n_arms, n_points // n_arms)
    counts[: n_points % n_arms] += 1
    stop = np.deg2rad(rotation)
    xs, ys = [], []
    for arm, count in enumerate(counts):
        t = np.sqrt(rng.random(count)) * stop
        pts = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
        pts = pts + noise * rng.random((count, 2))
        angle = 2 * np.pi * arm / n_arms
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        xs.append(pts @ rot.T)
        ys.append(np.full(count, arm))
    x, y = np.concatenate(xs), np.concatenate(ys)
    order = rng.permutation(n_points)
    return x[order].astype(np.float32), y[order].astype(np.int32)


def spirals_dataset(config: SpiralsConfig = SpiralsConfig()) -> Dataset:
    """Generates, splits and standardises (with train statistics) a spirals data set."""
    rng = np.random.default_rng(config.seed)
    x, y = make_spirals(config.n_points, config.n_arms, config.rotation, config.noise, rng)
    x_train, x_test = x[: config.n_train], x[config.n_train :]
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    return Dataset(
        name="spirals",
        x_train=(x_train - mean) / std,
        y_train=y[: config.n_train],
        x_test=(x_test - mean) / std,
        y_test=y[config.n_train :],
        num_classes=config.n_arms,
    )


def spirals_draws(config: SpiralsConfig, seeds: list[int]) -> list[Dataset]:
    """One data set per seed: `config` drawn with each seed in turn (the sizes, arms, rotation and
    noise of `config`; its own `seed` is not used). The data of repeats that each draw their own."""
    return [spirals_dataset(dataclasses.replace(config, seed=int(s))) for s in seeds]
