"""MNIST, Fashion-MNIST and SVHN: from the original files in a directory, or through TFDS.

Where the data come from (`source`):
- 'files': the original distribution files in `data_dir` (or the default directory below):
  MNIST / Fashion-MNIST IDX `.gz` files, SVHN `train_32x32.mat` / `test_32x32.mat`;
- 'tfds': `tensorflow_datasets` (needs the `tfds` extra, tensorflow, and network access or a
  prepared TFDS data directory);
- 'auto' (default): files if they are all there, else TFDS if it is installed, else a clear
  error naming the missing files and where to put them.

Default directory: `$VDJAX_DATA/<name>` if VDJAX_DATA is set, else `~/.vdjax/data/<name>`;
Fashion-MNIST also looks in `/usr/share/datasets/fashion-mnist` (Debian's
`dataset-fashion-mnist` package).

Images are scaled to [0, 1] and normalised per channel with the paper's statistics. Subsets
for CPU-sized runs are drawn with a seeded permutation, before normalisation.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from pathlib import Path
from typing import Literal

import numpy as np

from vdjax.data.core import Dataset

Source = Literal["auto", "files", "tfds"]


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    name: str
    tfds_name: str
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    files: dict[str, str]  # role -> file name in the data directory
    system_dirs: tuple[str, ...] = ()
    url: str = ""


_IDX = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

IMAGE_DATASETS: dict[str, ImageSpec] = {
    "mnist": ImageSpec("mnist", "mnist", (28, 28, 1), (0.1307,), (0.3081,), _IDX,
                       url="http://yann.lecun.com/exdb/mnist/"),
    "fashion_mnist": ImageSpec("fashion_mnist", "fashion_mnist", (28, 28, 1), (0.2860,), (0.3530,), _IDX,
                               system_dirs=("/usr/share/datasets/fashion-mnist",),
                               url="https://github.com/zalandoresearch/fashion-mnist"),
    "svhn": ImageSpec("svhn", "svhn_cropped", (32, 32, 3), (0.431, 0.430, 0.446), (0.197, 0.198, 0.199),
                      {"train": "train_32x32.mat", "test": "test_32x32.mat"},
                      url="http://ufldl.stanford.edu/housenumbers/"),
}
_ALIASES = {"fashion-mnist": "fashion_mnist", "fmnist": "fashion_mnist", "svhn_cropped": "svhn"}


class DataNotFoundError(FileNotFoundError):
    """The data set's files are not where vdjax looked, and TFDS could not provide them."""


def image_spec(name: str) -> ImageSpec:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in IMAGE_DATASETS:
        raise ValueError(f"unknown image data set {name!r}; choose one of {sorted(IMAGE_DATASETS)}")
    return IMAGE_DATASETS[key]


def default_data_dirs(name: str) -> list[Path]:
    """Where 'files' looks for `name`, in order."""
    spec = image_spec(name)
    root = Path(os.environ["VDJAX_DATA"]) if os.environ.get("VDJAX_DATA") else Path.home() / ".vdjax" / "data"
    return [root / spec.name, *map(Path, spec.system_dirs)]


# ---------------------------------------------------------------------------- readers

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (gzip-compressed or not) as an array, checking its header and its length."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # bad gzip stream, truncated gzip
        raise ValueError(f"{path}: not a readable IDX file ({e})") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: wrong magic number {data[:4].hex()!r}; expected 0x0000TTNN (an IDX file)")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError(f"{path}: IDX header truncated or with no dimensions")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: IDX body has {len(data) - header} bytes, the header {list(shape)} needs {expected} "
            "(truncated or corrupt file)"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_svhn_mat(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """SVHN's `*_32x32.mat`: images [N, 32, 32, 3] uint8 and labels 0..9 (the file's 10 is digit 0)."""
    from scipy.io import loadmat

    path = Path(path)
    try:
        mat = loadmat(path)
    except Exception as e:  # scipy raises several types for bad files
        raise ValueError(f"{path}: not a readable SVHN .mat file ({e})") from e
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path}: expected variables 'X' and 'y', found {sorted(k for k in mat if not k.startswith('__'))}")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise ValueError(f"{path}: 'X' must have shape [32, 32, 3, N], got {list(x.shape)}")
    if x.shape[3] != y.shape[0]:
        raise ValueError(f"{path}: {x.shape[3]} images but {y.shape[0]} labels")
    y = y.astype(np.int64) % 10
    return np.moveaxis(x, 3, 0), y


def _check_pair(images: np.ndarray, labels: np.ndarray, what: str, shape) -> None:
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{what}: {images.shape[0]} images but {labels.shape[0]} labels")
    if tuple(images.shape[1:3]) != tuple(shape[:2]):
        raise ValueError(f"{what}: images are {list(images.shape[1:])}, expected {list(shape)}")


def _find_dir(spec: ImageSpec, data_dir: str | os.PathLike | None) -> tuple[Path | None, list[Path]]:
    """The first directory holding every file of `spec`, and the directories searched."""
    dirs = [Path(data_dir)] if data_dir is not None else default_data_dirs(spec.name)
    for d in dirs:
        if all((d / f).is_file() for f in spec.files.values()):
            return d, dirs
    return None, dirs


def _missing_message(spec: ImageSpec, dirs: list[Path], tfds_error: str | None) -> str:
    lines = [f"data set {spec.name!r} not found."]
    for d in dirs:
        missing = [f for f in spec.files.values() if not (d / f).is_file()]
        lines.append(f"  {d}: missing {', '.join(missing)}")
    lines.append(
        f"Put the original files ({', '.join(spec.files.values())}, from {spec.url}) in {dirs[0]} "
        "(or pass data_dir / --data-dir, or set VDJAX_DATA)."
    )
    if spec.name == "fashion_mnist":
        lines.append("On Debian/Ubuntu: apt-get install dataset-fashion-mnist")
    lines.append(f"TFDS: {tfds_error}" if tfds_error else
                 "Or install the TFDS extra (pip install 'vdjax[tfds]') on a machine that can download.")
    return "\n".join(lines)


def _read_files(spec: ImageSpec, d: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if spec.name == "svhn":
        x_tr, y_tr = read_svhn_mat(d / spec.files["train"])
        x_te, y_te = read_svhn_mat(d / spec.files["test"])
    else:
        x_tr, y_tr = read_idx(d / spec.files["train_images"]), read_idx(d / spec.files["train_labels"])
        x_te, y_te = read_idx(d / spec.files["test_images"]), read_idx(d / spec.files["test_labels"])
        for arr, what in ((x_tr, "train images"), (x_te, "test images")):
            if arr.ndim != 3:
                raise ValueError(f"{spec.name} {what}: expected [N, 28, 28] in the IDX file, got {list(arr.shape)}")
        x_tr, x_te = x_tr[..., None], x_te[..., None]
    _check_pair(x_tr, y_tr, f"{spec.name} train ({d})", spec.shape)
    _check_pair(x_te, y_te, f"{spec.name} test ({d})", spec.shape)
    return x_tr, y_tr, x_te, y_te


def _read_tfds(spec: ImageSpec, data_dir) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    out = []
    for split in ("train", "test"):
        x, y = tfds.as_numpy(tfds.load(spec.tfds_name, split=split, as_supervised=True, batch_size=-1,
                                       data_dir=data_dir))
        out += [x, y]
    return tuple(out)  # type: ignore[return-value]


def normalise(images: np.ndarray, mean, std) -> np.ndarray:
    """uint8 [0, 255] images to float32, per-channel (x / 255 - mean) / std."""
    x = images.astype(np.float32) / 255.0
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def _subset(n: int, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ValueError(f"subset size must be >= 1, got {limit}")
    return np.sort(rng.permutation(n)[:limit])


def check_available(name: str, data_dir: str | os.PathLike | None = None, source: Source = "auto") -> None:
    """Raises what `load_images` would for an unknown name or missing files, without reading
    them: a command checks every data set it needs before it trains on the first."""
    spec = image_spec(name)
    if source not in ("auto", "files", "tfds"):
        raise ValueError(f"source must be 'auto', 'files' or 'tfds', got {source!r}")
    found, dirs = _find_dir(spec, data_dir)
    if found is not None and source != "tfds":
        return
    if source == "files":
        raise DataNotFoundError(_missing_message(spec, dirs, "not tried (source='files')"))
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        raise DataNotFoundError(_missing_message(spec, dirs, None)) from None


def load_images(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    source: Source = "auto",
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
) -> Dataset:
    """An image data set, normalised, optionally subset to `n_train` / `n_test` examples."""
    spec = image_spec(name)
    if source not in ("auto", "files", "tfds"):
        raise ValueError(f"source must be 'auto', 'files' or 'tfds', got {source!r}")
    arrays = None
    if source in ("auto", "files"):
        found, dirs = _find_dir(spec, data_dir)
        if found is not None:
            arrays = _read_files(spec, found)
        elif source == "files":
            raise DataNotFoundError(_missing_message(spec, dirs, "not tried (source='files')"))
    if arrays is None:
        try:
            arrays = _read_tfds(spec, data_dir)
        except ImportError:
            _, dirs = _find_dir(spec, data_dir)
            raise DataNotFoundError(_missing_message(spec, dirs, None)) from None
        except Exception as e:  # TFDS could not download or prepare the data
            _, dirs = _find_dir(spec, data_dir)
            raise DataNotFoundError(_missing_message(spec, dirs, f"{type(e).__name__}: {e}")) from e
    x_tr, y_tr, x_te, y_te = arrays
    rng = np.random.default_rng(seed)
    tr, te = _subset(len(x_tr), n_train, rng), _subset(len(x_te), n_test, rng)
    return Dataset(
        name=spec.name,
        x_train=normalise(x_tr[tr], spec.mean, spec.std),
        y_train=np.asarray(y_tr[tr]),
        x_test=normalise(x_te[te], spec.mean, spec.std),
        y_test=np.asarray(y_te[te]),
        num_classes=10,
    )
