"""What several test files share: fake and real image files, small Flax modules."""

import gzip
import os
import struct
from pathlib import Path

import flax.linen as nn
import numpy as np
import pytest

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# CI installs Debian's dataset-fashion-mnist and sets this, so the real-data tests cannot skip there.
REQUIRE_REAL = os.environ.get("VDJAX_REQUIRE_REAL_DATA") == "1"


def write_idx(path: Path, array: np.ndarray, dims=None, truncate: int = 0, magic_type: int = 0x08):
    dims = array.shape if dims is None else dims
    body = struct.pack(">BBBB", 0, 0, magic_type, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    body += array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as f:
        f.write(body[: len(body) - truncate])


def fake_mnist(d: Path, n_train=30, n_test=12, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test),
    }
    d.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        write_idx(d / name, a)
    return arrays


def real_fashion_dir() -> Path:
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        if REQUIRE_REAL:
            pytest.fail(f"{FASHION_DIR} is missing: apt-get install dataset-fashion-mnist")
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    return FASHION_DIR


class ConvBN(nn.Module):
    """A residual branch (keeps the shape), or a strided transition (changes it)."""

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, a, train: bool = False):
        a = nn.Conv(self.features, (3, 3), strides=self.strides)(nn.relu(a))
        return nn.BatchNorm(use_running_average=not train, momentum=0.8)(a)


class DenseBN(nn.Module):
    """A dense residual branch or stage exit with BatchNorm (statistics to check per depth)."""

    features: int

    @nn.compact
    def __call__(self, a, train: bool = False):
        return nn.BatchNorm(use_running_average=not train, momentum=0.8)(nn.Dense(self.features)(nn.relu(a)))


class TokenBlock(nn.Module):
    width: int

    @nn.compact
    def __call__(self, a):
        return nn.Dense(self.width)(nn.relu(nn.Dense(self.width)(a)))
