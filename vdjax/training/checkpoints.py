"""Checkpoints for long runs: the latest state of a run, refused when it belongs to another.

One Orbax `CheckpointManager` step per save, keeping only the latest. Every save carries a
`run_id` (whatever must match for resuming to be exact: data, configs, seeds), and `restore`
refuses a checkpoint whose id differs or that cannot be read, leaving it in place, so a
wrong `--out` or a damaged file never silently restarts or corrupts a run. `SaveCadence`
decides when a save is due.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that belongs to a different run."""


def fingerprint(*arrays: np.ndarray) -> str:
    """A digest of arrays' shapes, dtypes and contents, for a run id: two data sets of the same
    name and size (e.g. subsets drawn with other seeds) are different runs."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        digest.update(repr((a.shape, a.dtype.str)).encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


class Checkpoints:
    """The latest state (a pytree) and JSON metadata of one run, in `directory`."""

    def __init__(self, directory: str | Path):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        from orbax.checkpoint.checkpoint_managers import preservation_policy

        self.manager = ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
            preservation_policy=preservation_policy.LatestN(1), create=True))

    def save(self, step: int, state: Any, meta: dict[str, Any], run_id: Any) -> bool:
        """Saves `state` and `meta` as step `step` and waits until they are on disk. A failed
        save (disk full, directory gone) warns and returns False: a checkpoint only shortens a
        resume, so it must never end the run it protects."""
        ocp = self._ocp
        try:
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave({**meta, "run_id": run_id}),
            ), force=True)
            self.manager.wait_until_finished()
        except Exception as e:  # orbax raises many types for failed writes
            warnings.warn(f"could not save the checkpoint of step {step} in {self.directory} ({type(e).__name__}: "
                          f"{e}); training goes on, and a resume starts from an earlier checkpoint", RuntimeWarning,
                          stacklevel=2)
            return False
        return True

    def restore(self, target: Any, run_id: Any) -> tuple[Any, dict[str, Any]] | None:
        """(state shaped like `target`, meta) of the latest step, or None when there is none.

        The small metadata are read first, so another run's checkpoint is refused before its
        state is loaded."""
        step = self.manager.latest_step()
        if step is None:
            return None
        ocp = self._ocp
        meta = dict(self._read(step, meta=ocp.args.JsonRestore()).meta)
        saved = meta.pop("run_id", None)
        if saved != run_id:
            raise CheckpointError(
                f"checkpoint in {self.directory} belongs to a different run ({_differences(saved, run_id)} differ), "
                "so resuming it would not compute this run's numbers; rerun with its settings, or move or delete "
                "it to start over."
            )
        return self._read(step, state=ocp.args.StandardRestore(target)).state, meta

    def _read(self, step: int, **items: Any) -> Any:
        try:
            return self.manager.restore(step, args=self._ocp.args.Composite(**items))
        except Exception as e:  # orbax raises many types for damaged files
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} cannot be read ({type(e).__name__}: {e}). "
                "It was left in place; move or delete it to start this run over."
            ) from e

    def close(self) -> None:
        self.manager.close()


def _differences(saved: Any, wanted: Any) -> str:
    """The run-id entries that differ, for the message ('data, config or seeds' if not dicts)."""
    if not isinstance(saved, dict) or not isinstance(wanted, dict):
        return "data, config or seeds"
    keys = [k for k in wanted if saved.get(k) != wanted[k]] + [k for k in saved if k not in wanted]
    return ", ".join(keys) or "data, config or seeds"


def config_key(config: Any) -> str:
    """A config's repr naming only the fields that differ from their defaults, so that a field a
    later version adds, left at its default, keeps earlier checkpoints resumable."""
    if not dataclasses.is_dataclass(config):
        return repr(config)
    changed = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if default is dataclasses.MISSING or type(value) is not type(default) or value != default:
            changed.append(f"{f.name}={value!r}")
    return f"{type(config).__name__}({', '.join(changed)})"


def run_id(model_config: Any, train_config: Any, *arrays: np.ndarray, name: str | None = None,
           **networks_and_layout: Any) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed: configs, the data themselves (two subsets of
    the same size drawn with other seeds are different runs), and what the caller names: the
    networks (seeds, methods) and what sets their floats (devices, chunking, versions)."""
    rid = {"model_config": config_key(model_config), "train_config": config_key(train_config),
           "data": [name, fingerprint(*arrays)] if name is not None else fingerprint(*arrays)}
    return {**rid, **networks_and_layout}


class SaveCadence:
    """When to checkpoint: at most every `every_s` seconds (0: whenever asked), and with at most
    5% of the time spent saving (a 6-seed width-512 spirals state is 380 MB, 2.6 s to save)."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        self.last = time.monotonic()
        self.cost = 0.0

    def due(self) -> bool:
        if self.every_s == 0:
            return True
        waited = time.monotonic() - self.last
        return waited >= self.every_s and waited >= 20 * self.cost

    def saved(self, started: float) -> None:
        """Call after a save that began at `started` (time.monotonic())."""
        self.last = time.monotonic()
        self.cost = self.last - started
