"""Regression data: toy 1-D sets with gaps, the UCI benchmark splits, scikit-learn's diabetes.

Every loader returns a `Dataset` with `targets='real'`: inputs standardised with the training
set's statistics, targets too, and the target's (loc, scale) kept in `target_scale` so
predictions are reported in the data's units (`vdjax.depth.likelihoods.to_original_scale`).

UCI layout (Hernandez-Lobato & Adams' and Gal's MC-dropout benchmark, reused by DUN): a
directory with `data.txt` (whitespace-separated rows), `index_features.txt` and
`index_target.txt` (0-based column numbers), and `index_train_K.txt` / `index_test_K.txt`
(0-based row numbers of split K). DUN's "gap" splits (`UCI_for_sharing/gap/<name>/data/`)
hold only the index files: for each input feature, the test set is the middle third of the
rows sorted by that feature, so a gap opens in the training inputs. Any of these files may be
xz-compressed (`<file>.txt.xz`), as the copy of that archive in the repository's `data/uci/`
is. `load_uci` takes the two directories; `load_uci_benchmark` a set's name and the archive's
root (default: `uci_root()`).
"""

from __future__ import annotations

import dataclasses
import lzma
import os
import re
from pathlib import Path

import numpy as np

from vdjax.data.core import Dataset
from vdjax.data.images import DataNotFoundError


@dataclasses.dataclass(frozen=True)
class Standardiser:
    """(v - loc) / scale per column, with statistics of the training set (a constant column: scale 1)."""

    loc: np.ndarray
    scale: np.ndarray

    @staticmethod
    def fit(v: np.ndarray) -> "Standardiser":
        v = np.asarray(v, np.float64)
        scale = v.std(axis=0)
        return Standardiser(v.mean(axis=0), np.where(scale < 1e-10, 1.0, scale))

    def apply(self, v: np.ndarray) -> np.ndarray:
        return ((np.asarray(v, np.float64) - self.loc) / self.scale).astype(np.float32)

    def invert(self, v: np.ndarray) -> np.ndarray:
        return np.asarray(v, np.float64) * self.scale + self.loc


def regression_dataset(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                       y_test: np.ndarray) -> tuple[Dataset, Standardiser]:
    """A standardised regression `Dataset` from raw arrays, and the inputs' standardiser (to map
    new inputs, e.g. a plotting grid, the same way)."""
    x_train, x_test = (np.asarray(v, np.float64).reshape(len(v), -1) for v in (x_train, x_test))
    y_train, y_test = (np.asarray(v, np.float64).reshape(-1) for v in (y_train, y_test))
    sx, sy = Standardiser.fit(x_train), Standardiser.fit(y_train)
    data = Dataset(name, sx.apply(x_train), sy.apply(y_train), sx.apply(x_test), sy.apply(y_test), num_classes=1,
                   targets="real", target_scale=(float(sy.loc), float(sy.scale)))
    return data, sx


# ---------------------------------------------------------------------------- toy 1-D sets

TOY_DATASETS = ("gap", "wiggle")


def toy_gap(n: int = 1002, noise: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """DUN's 'my_1d' set: x in three clusters [-1, 0], [1.7, 2.5], [4, 5] (gaps between them),
    y = x - 0.1 x^2 + cos(pi x / 2) + N(0, noise^2). Raw x [n, 1], y [n]."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.uniform(lo, hi, n // 3) for lo, hi in ((-1, 0), (1.7, 2.5), (4, 5))])
    y = x - 0.1 * x**2 + np.cos(np.pi * x / 2) + noise * rng.standard_normal(x.shape)
    return x[:, None], y


def toy_wiggle(n: int = 300, noise: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """DUN's 'wiggle' set: x ~ N(5, 2.5^2) (sparse in the tails), y = sin(pi x) +
    0.2 cos(4 pi x) - 0.3 x + N(0, noise^2). Raw x [n, 1], y [n]."""
    rng = np.random.default_rng(seed)
    x = 5.0 + 2.5 * rng.standard_normal(n)
    y = np.sin(np.pi * x) + 0.2 * np.cos(4 * np.pi * x) - 0.3 * x + noise * rng.standard_normal(n)
    return x[:, None], y


def toy_dataset(name: str = "gap", seed: int = 0, test_fraction: float = 0.5) -> tuple[Dataset, Standardiser]:
    """A toy set split at random into train and test (DUN: half and half), standardised."""
    gens = {"gap": toy_gap, "wiggle": toy_wiggle}
    if name not in gens:
        raise ValueError(f"unknown toy data set {name!r}; choose one of {list(TOY_DATASETS)}")
    x, y = gens[name](seed=seed)
    test = np.random.default_rng([seed, 1]).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    te, tr = np.sort(test[:n_test]), np.sort(test[n_test:])
    return regression_dataset(f"toy_{name}", x[tr], y[tr], x[te], y[te])


# ---------------------------------------------------------------------------- UCI layout

UCI_FILES = ("data.txt", "index_features.txt", "index_target.txt")
UCI_SETS = ("boston", "concrete", "energy", "kin8nm", "naval", "power", "protein", "wine", "yacht")
UCI_DIR_ENV = "VDJAX_UCI_DIR"


def _present(path: Path) -> Path | None:
    """`path`, or its xz-compressed twin `<path>.xz`, whichever exists (None: neither)."""
    for candidate in (path, path.with_name(path.name + ".xz")):
        if candidate.is_file():
            return candidate
    return None


def _read(path: Path, what: str, integer: bool = False) -> np.ndarray:
    found = _present(path) or path
    try:
        if found.suffix == ".xz":
            with lzma.open(found, "rt") as f:
                arr = np.loadtxt(f, ndmin=1)
        else:
            arr = np.loadtxt(found, ndmin=1)
    except (ValueError, lzma.LZMAError) as e:
        raise ValueError(f"{found}: not a whitespace-separated table of numbers ({e})") from None
    if integer:
        if not np.all(arr == np.round(arr)) or (arr.size and arr.min() < 0):
            raise ValueError(f"{found}: {what} must be non-negative integers")
        return arr.astype(np.int64).reshape(-1)
    return arr


def uci_splits(index_dir: str | os.PathLike) -> list[int]:
    """The split numbers K with both `index_train_K.txt` and `index_test_K.txt` (or their `.xz`)
    in `index_dir`."""
    index_dir = Path(index_dir)
    found = {int(m.group(1)) for f in index_dir.glob("index_train_*.txt*")
             if (m := re.fullmatch(r"index_train_(\d+)\.txt(\.xz)?", f.name))}
    return sorted(k for k in found if _present(index_dir / f"index_test_{k}.txt"))


def load_uci(data_dir: str | os.PathLike, split: int = 0, index_dir: str | os.PathLike | None = None,
             name: str | None = None) -> Dataset:
    """Split `split` of a UCI regression set in the MC-dropout/DUN layout, standardised with its
    training rows. `index_dir`: where the split files are (default `data_dir`; a gap split's
    directory for DUN's gap splits)."""
    data_dir = Path(data_dir)
    index_dir = Path(index_dir) if index_dir is not None else data_dir
    needed = [data_dir / f for f in UCI_FILES] + [index_dir / f"index_{s}_{split}.txt" for s in ("train", "test")]
    missing = [str(p) for p in needed if _present(p) is None]
    if missing:
        have = uci_splits(index_dir) if index_dir.is_dir() else []
        raise DataNotFoundError(
            f"UCI data missing: {', '.join(missing)} (nor .xz). Expected the MC-dropout/DUN layout: data.txt, "
            "index_features.txt, index_target.txt and index_train_K.txt / index_test_K.txt"
            + (f" (splits present in {index_dir}: {have})" if have else ""))
    table = _read(data_dir / "data.txt", "data")
    if table.ndim != 2:
        raise ValueError(f"{data_dir / 'data.txt'}: expected a 2-D table, got shape {list(table.shape)}")
    features = _read(data_dir / "index_features.txt", "column numbers", integer=True)
    target = _read(data_dir / "index_target.txt", "column numbers", integer=True)
    train = _read(index_dir / f"index_train_{split}.txt", "row numbers", integer=True)
    test = _read(index_dir / f"index_test_{split}.txt", "row numbers", integer=True)
    n_rows, n_cols = table.shape
    if target.size != 1:
        raise ValueError(f"{data_dir / 'index_target.txt'}: expected one target column, got {target.tolist()}")
    for what, idx, bound in (("feature columns", features, n_cols), ("target column", target, n_cols),
                             ("train rows", train, n_rows), ("test rows", test, n_rows)):
        if idx.size == 0 or idx.max() >= bound:
            raise ValueError(f"UCI split {split} in {index_dir}: {what} must be non-empty and below {bound}")
    if np.intersect1d(train, test).size:
        raise ValueError(f"UCI split {split} in {index_dir}: {np.intersect1d(train, test).size} rows are in "
                         "both the train and the test indices")
    if name is None:  # <name>/data/ in the benchmark's layout
        name = data_dir.parent.name if data_dir.name == "data" else data_dir.name
    data, _ = regression_dataset(f"{name}_split{split}", table[train][:, features], table[train, target[0]],
                                 table[test][:, features], table[test, target[0]])
    return data


def uci_root(root: str | os.PathLike | None = None) -> Path:
    """Where the UCI benchmark archive is: `root` if given, else $VDJAX_UCI_DIR, else the
    repository's `data/uci` (beside the package in a checkout; not part of an installed wheel)."""
    if root is None:
        root = os.environ.get(UCI_DIR_ENV) or Path(__file__).resolve().parents[2] / "data" / "uci"
    return Path(root)


def uci_benchmark_dirs(name: str, gap: bool = False, root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(data directory, index directory) of set `name` in the archive at `uci_root(root)`;
    an unknown name or a missing directory raises `DataNotFoundError` naming where it looked."""
    base = uci_root(root)
    data_dir = base / "standard" / name / "data"
    index_dir = base / ("gap" if gap else "standard") / name / "data"
    for d in dict.fromkeys((data_dir, index_dir)):
        if not d.is_dir():
            known = f"; the benchmark's sets: {', '.join(UCI_SETS)}" if name not in UCI_SETS else ""
            raise DataNotFoundError(f"UCI set {name!r}: no directory {d} (pass root= or set {UCI_DIR_ENV} to a "
                                    f"folder with standard/<set>/data and gap/<set>/data{known})")
    return data_dir, index_dir


def load_uci_benchmark(name: str, split: int = 0, gap: bool = False, root: str | os.PathLike | None = None
                       ) -> Dataset:
    """Split `split` of `name` from DUN's `UCI_for_sharing` archive (default `uci_root()`):
    `<root>/standard/<name>/data/` holds the data, `<root>/gap/<name>/data/` the gap splits."""
    data_dir, index_dir = uci_benchmark_dirs(name, gap, root)
    data = load_uci(data_dir, split, index_dir, name=name)
    return dataclasses.replace(data, name=f"{name}{'_gap' if gap else ''}_split{split}")


# ---------------------------------------------------------------------------- scikit-learn's diabetes


def load_diabetes(split: int = 0, test_fraction: float = 0.1) -> Dataset:
    """scikit-learn's diabetes set (442 patients, 10 features, disease progression after a year),
    which ships inside the package: a seeded train/test split (`split` is the seed; the UCI
    benchmark's splits are 90/10 too), standardised."""
    try:
        from sklearn.datasets import load_diabetes as sk_diabetes
    except ImportError:
        raise DataNotFoundError("the diabetes data ship with scikit-learn: pip install scikit-learn") from None
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    x, y = sk_diabetes(return_X_y=True, scaled=False)
    order = np.random.default_rng([split, 17]).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    te, tr = np.sort(order[:n_test]), np.sort(order[n_test:])
    data, _ = regression_dataset(f"diabetes_split{split}", x[tr], y[tr], x[te], y[te])
    return data
