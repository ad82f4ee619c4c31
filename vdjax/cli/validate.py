"""Checks every command runs before it trains or compiles anything, and the one `main` wrapper.

A mistake in the arguments, the data or the output paths must cost the user seconds, not a
training run: argument types here reject bad values while the command line is parsed, output
directories are created and probed for writability up front, and `run_main` turns a user error
into one line on stderr and exit status 2. `--debug` or VDJAX_DEBUG=1 shows the traceback
instead (for bug reports). Every entry point (`vdjax`, `experiments/`, `benchmarks/`) uses
these, so each check exists once.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from vdjax.io import not_directories, unique  # noqa: F401 (the checks every command makes)
from vdjax.training.config import MAX_SEED

DEBUG_ENV = "VDJAX_DEBUG"


class UserError(ValueError):
    """A mistake the user can fix (arguments, data, paths): reported in one line, no traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a `--debug` flag, whose errors are `UserError`s (one line, exit 2 via `run_main`)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true",
                          help=f"show the full traceback of an error (also {DEBUG_ENV}=1)")

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")


# ---------------------------------------------------------------------------- argument types


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def seed(text: str) -> int:
    """argparse type: a PRNG seed, 0 <= seed < 2**32."""
    value = _int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be an integer in [0, {MAX_SEED}], got {value}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number (float('nan') and 'inf' parse, but no setting wants them)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def output_dir(text: str | os.PathLike) -> Path:
    """argparse type: a directory results can be written to, created if missing.

    Probed with a real file, since permission bits do not tell the whole story (read-only
    mounts, ACLs, root): a run whose results cannot be written is refused before it starts.
    """
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file, not a directory; pass a directory for the results")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise argparse.ArgumentTypeError(
            f"cannot write to {path} ({reason}); pass a writable directory") from None
    return path


def existing_dir(text: str | os.PathLike) -> Path:
    """argparse type: a directory that exists (e.g. where data files are read from)."""
    path = Path(text).expanduser()
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{path} {what}; pass the directory that holds the data files")
    return path


# ---------------------------------------------------------------------------- checks after parsing


# ---------------------------------------------------------------------------- the wrapper

# Errors a user can fix: ValueError covers bad configs and corrupt data or results files,
# FileNotFoundError missing data (DataNotFoundError), CheckpointError foreign or damaged
# checkpoints. Anything else is a bug and keeps its traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)


def _user_errors() -> tuple[type[BaseException], ...]:
    from vdjax.training.checkpoints import CheckpointError

    return (*_USER_ERRORS, CheckpointError)


def one_line(err: BaseException) -> str:
    """An error's message on one line: lines joined with '; ', or a space after a full stop."""
    text = ""
    for line in (line.strip() for line in str(err).splitlines()):
        if line:
            text += ("" if not text else " " if text.endswith((".", ":")) else "; ") + line
    return text or type(err).__name__


FALLBACK_STATUS = 3


def run_main(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Runs `main(argv)` as a command: 0 on success (or main's own int status), 2 with one line
    on stderr for a user error, 3 when it finished but some outputs had to go to the fallback
    directory (nothing is lost, but they are not where they were asked for: a script or job
    array must notice), 130 when interrupted. With `--debug` among the arguments or
    VDJAX_DEBUG=1 errors propagate with their traceback."""
    from vdjax.io import fallback_writes, forget_fallbacks

    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or Path(sys.argv[0]).name
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    forget_fallbacks()
    try:
        status = main(argv)
    except _user_errors() as err:
        if debug:
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prog}: interrupted; the files already written are kept (an experiment resumes from its "
              "last checkpoint when run again)", file=sys.stderr)
        return 130
    status = status if isinstance(status, int) and not isinstance(status, bool) else 0
    moved = fallback_writes()
    if status == 0 and moved:
        print(f"{prog}: finished, but {len(moved)} output file(s) went to the fallback directory "
              f"({moved[0].parent if len(moved) == 1 else 'see the lines above'}): exit status 3", file=sys.stderr)
        return FALLBACK_STATUS
    return status
