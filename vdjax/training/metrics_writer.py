"""Live training metrics: scalars streamed while a run trains, not only written at its end.

A writer takes `write(step, {name: value})` calls from `vdjax.fit` (every network's row after every
epoch on a held-out split; after every chunk of epochs on the train ELBO, its epochs and best
train loss) and makes each visible at once:
`JsonlWriter` appends a JSON line per call (readable while the run goes on, by `tail -f` or a
notebook's `read_metrics`), and `TensorBoardWriter` writes TensorBoard event files where
`tensorboardX` or PyTorch's `torch.utils.tensorboard` is installed. `create_writer(folder)` gives
both where it can.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence


class MetricsWriter(Protocol):
    def write(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class JsonlWriter:
    """One JSON object per `write` ({"step": ..., name: value, ...}), appended and flushed."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a")

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        row = {"step": int(step), **{k: (float(v) if math.isfinite(float(v)) else None) for k, v in scalars.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardWriter:
    """Scalars as TensorBoard event files in `logdir` (tensorboardX, else torch.utils.tensorboard)."""

    def __init__(self, logdir: str | os.PathLike):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            from torch.utils.tensorboard import SummaryWriter  # raises ImportError without either
        self._writer = SummaryWriter(str(logdir))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        for name, value in scalars.items():
            self._writer.add_scalar(name, float(value), int(step))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MultiWriter:
    def __init__(self, writers: Sequence[MetricsWriter]):
        self.writers = list(writers)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        for w in self.writers:
            w.write(step, scalars)

    def close(self) -> None:
        for w in self.writers:
            w.close()


def create_writer(folder: str | os.PathLike, tensorboard: bool = True) -> MetricsWriter:
    """`folder/metrics.jsonl`, and TensorBoard events in `folder` where a TensorBoard writer is
    installed (`tensorboard=False` skips it)."""
    writers: list[MetricsWriter] = [JsonlWriter(Path(folder) / "metrics.jsonl")]
    if tensorboard:
        try:
            writers.append(TensorBoardWriter(folder))
        except ImportError:
            pass
    return MultiWriter(writers)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows a `JsonlWriter` has written so far (a line still being written is skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
