"""Result files: atomic, with the user's permissions, and never lost to a failed write.

Atomic: a crash mid-write never leaves a truncated file behind (write a temporary file beside
the target, then rename it). The temporary file is created with mode 0666 so the user's umask
applies, as for any other file they make (`tempfile.mkstemp` would make it 0600).

Never lost: outputs are checked before training (`vdjax.cli.validate.output_dir`), but a directory
can still vanish or fill up during a run of hours. Then the file goes to a fallback directory
(`$VDJAX_FALLBACK_DIR`, else ~/.vdjax/unsaved, else the system's temporary directory), under
its original absolute path, and a line on stderr names where it went.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

FALLBACK_ENV = "VDJAX_FALLBACK_DIR"
_SESSION = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"  # one fallback folder per process
_FALLBACK_WRITES: list[Path] = []  # where this process's files went instead of their own paths


def fallback_writes() -> list[Path]:
    """The files this process wrote to a fallback directory since the last `forget_fallbacks`."""
    return list(_FALLBACK_WRITES)


def forget_fallbacks() -> None:
    _FALLBACK_WRITES.clear()


def _temporary_beside(path: Path) -> str:
    """A new empty file next to `path`, created 0666 & ~umask."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return str(tmp)
        except FileExistsError:
            continue


def _write_atomically(path: Path, write: Callable[[str], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_beside(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def fallback_dirs() -> list[Path]:
    """Where a file whose own directory cannot be written goes, in order of preference."""
    dirs = [Path(os.environ[FALLBACK_ENV])] if os.environ.get(FALLBACK_ENV) else []
    return dirs + [Path.home() / ".vdjax" / "unsaved", Path(tempfile.gettempdir()) / "vdjax-unsaved"]


def _atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Writes `path` atomically; if that fails, a fallback copy, and returns where it went."""
    path = Path(path)
    try:
        return _write_atomically(path, write)
    except OSError as err:
        parent = path.parent
        reason = f"{parent} is a file" if parent.exists() and not parent.is_dir() else err.strerror or str(err)
        for root in fallback_dirs():
            target = root / _SESSION / path.absolute().relative_to(path.absolute().anchor)
            try:
                _write_atomically(target, write)
            except OSError:
                continue
            print(f"vdjax: could not write {path} ({reason}); wrote it to {target} instead",
                  file=sys.stderr)
            _FALLBACK_WRITES.append(target)
            return target
        raise


def to_jsonable(obj: Any) -> Any:
    """Numpy/JAX arrays to lists, dataclasses to dicts, recursively."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "__array__"):
        arr = np.asarray(obj)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    if isinstance(obj, (np.generic,)):
        return obj.item()
    return obj


SCHEMA_VERSION = 1  # of every results file; `vdjax.studies.load_results` reads it back


def write_json(path: str | os.PathLike, obj: dict[str, Any]) -> Path:
    """Writes a results record as JSON, stamped with `schema_version`; returns where it went
    (the fallback copy if `path` failed)."""
    if not isinstance(obj, dict):
        raise TypeError(f"a results file holds one JSON object, got {type(obj).__name__}")
    text = json.dumps(to_jsonable({"schema_version": SCHEMA_VERSION, **obj}), indent=1)
    return write_text(path, text)


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's contents; a damaged one is a ValueError naming the file and the fix."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it (that result is then computed again) "
                         "or restore it") from None


def write_text(path: str | os.PathLike, text: str) -> Path:
    return _atomic(path, lambda tmp: Path(tmp).write_text(text))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Saves a matplotlib figure, atomically."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return _atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt))


# ---------------------------------------------------------------------------- checks before writing


def unique(values: Sequence[Any], name: str) -> list[Any]:
    """`values` as a list, or a UserError naming the repeated ones (a repeated seed would train
    the same network twice and count it twice in the mean)."""
    seen, repeated = set(), []
    for v in values:
        if v in seen and v not in repeated:
            repeated.append(v)
        seen.add(v)
    if repeated:
        raise ValueError(f"{name} must be unique, {', '.join(map(str, repeated))} given more than once")
    return list(values)


def not_directories(paths: Iterable[Path]) -> None:
    """The files a command will write must not be directories already (their write would fail)."""
    for p in paths:
        if p.is_dir():
            raise ValueError(f"{p} is a directory, but the results file goes there; move it or pass another --out")
