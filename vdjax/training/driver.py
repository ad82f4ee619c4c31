"""The one training driver: every trainer's orchestration, whatever advances its epochs.

A run is K networks with a leading network axis on one `NetState` (`vdjax.training.protocol`). The
driver owns what every regime shares:
- restore from a checkpoint (refusing another run's),
- advance a chunk of epochs (the regime's `advance`, the only part that differs),
- compact stopped networks out of the vmapped batch,
- the save cadence (and a save whenever the call stops early),
- progress, the metrics stream, per-epoch histories and the result.

Regimes (`vdjax.training.loop`: the spirals protocol as one compiled `while_loop`; `vdjax.training.trainer`:
held-out early stopping, on the device or fed from the host) give it two functions:
`advance(net, active, epoch, stop) -> (net, rows)` runs epochs `epoch .. stop-1` of the
networks `active` (positions in the run) and returns, per epoch, a row of metrics per network
(None where it was not running), or None when it keeps no host history; `place(net, active)`
puts the state of those networks on the devices.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from vdjax.training.checkpoints import Checkpoints
from vdjax.training.metrics_writer import MetricsWriter
from vdjax.training.protocol import (
    NetState,
    SaveCadence,
    assemble,
    best_train_state,
    loadable,
    savable,
    should_compact,
    stop_reason,
    take,
)
from vdjax.runtime import gather, to_host
from vdjax.training.train import TrainState

Rows = list[list[dict[str, float] | None]]  # [epochs of the chunk][running networks]
Advance = Callable[[NetState, np.ndarray, int, int], tuple[NetState, Rows | None]]
Place = Callable[[NetState, np.ndarray], NetState]
Progress = Callable[[int, int, dict[str, Any]], None]  # (epochs done, max epochs, {'running', 'best'})


@dataclasses.dataclass
class FitResult:
    """Every network of one run; each array of `state` has a leading network axis."""

    model_config: Any
    train_config: Any
    state: NetState
    seconds: float = 0.0  # wall time of training, compile included, over every call that resumed it
    layout: dict[str, Any] = dataclasses.field(default_factory=dict)  # what the floats depend on
    histories: list[list[dict[str, float]]] = dataclasses.field(default_factory=list)  # per network, per epoch
    resumed_from: int | None = None  # epochs already done when this call started (None: fresh run)
    call_seconds: float = 0.0  # wall time of the epochs run by this call

    @property
    def n_networks(self) -> int:
        return int(self.state.epoch.shape[0])

    n_seeds = n_networks  # the spirals runs' networks are seeds

    def best_state(self, index: int) -> TrainState:
        """The kept (best-objective) parameters of one network (optimiser state: the last)."""
        return best_train_state(self.state, index)

    def stopped(self, index: int) -> str:
        """'patience' | 'max_epochs' | 'nonfinite' | 'interrupted' for network `index`."""
        host = self.host
        return stop_reason(bool(host.done[index]), bool(host.nonfinite[index]), int(host.epoch[index]),
                           self.train_config.max_epochs)

    @property
    def host(self) -> NetState:
        """The counters (epochs, best epochs, flags) on the host, read once."""
        if getattr(self, "_host", None) is None:
            s = self.state
            self._host = to_host(s.replace(train=None, best_params=None, best_batch_stats=None, key=None))
        return self._host


def drive(
    net: NetState,
    advance: Advance,
    place: Place,
    *,
    model_config: Any,
    train_config: Any,
    layout: dict[str, Any] | None = None,
    chunk_epochs: int = 1,
    checkpoint_dir: str | Path | None = None,
    run_id: Any = None,
    checkpoint_every_s: float = 0.0,
    progress: Progress | None = None,
    stop_after_epochs: int | None = None,
    stop_after_seconds: float | None = None,
    metrics_writer: MetricsWriter | None = None,
    tags: Sequence[str] | None = None,
    objective: str = "loss",
    on_resume: Callable[[int], None] | None = None,
    called: float | None = None,
) -> FitResult:
    """Runs the protocol (`train_config.max_epochs`, its patience inside `advance`) to its end or
    the time/epoch limit; the result holds every network in the original order.

    stop_after_epochs / stop_after_seconds stop the call early as if killed (the networks still
    running are 'interrupted'), after saving; the time budget counts from `called` and stops
    before a chunk that, taking as long as the last one, would end past it (the first always runs).
    metrics_writer: with rows, each running network's row at its epoch as `<tag>/<metric>`;
    without, `<tag>/epochs` and `<tag>/best_<objective>` at the end of every chunk.
    """
    called = time.perf_counter() if called is None else called
    max_epochs = train_config.max_epochs
    k = int(net.epoch.shape[0])
    tags = list(tags) if tags is not None else [str(i) for i in range(k)]
    active = np.arange(k)
    parts: list[tuple[np.ndarray, NetState]] = []
    histories: list[list[dict[str, float]]] = [[] for _ in range(k)]
    epoch, resumed_from, earlier = 0, None, 0.0
    ckpt = Checkpoints(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None:
        saved = ckpt.restore(savable(net), run_id)
        if saved is not None:
            full, meta = loadable(saved[0]), saved[1]
            epoch = resumed_from = int(meta["epochs"] if "epochs" in meta else meta["stop"])
            active = np.asarray(meta["active"], dtype=np.int64)
            histories = meta.get("history") or histories
            earlier = float(meta.get("seconds", 0.0))
            finished = np.setdiff1d(np.arange(k), active)
            parts = [(finished, take(full, finished))] if finished.size else []
            net = take(full, active)
            if on_resume is not None:
                on_resume(epoch)
    start, cadence = time.perf_counter(), SaveCadence(checkpoint_every_s)
    limit = max_epochs if stop_after_epochs is None else min(max_epochs, stop_after_epochs)
    if active.size:  # a checkpoint of finished networks (killed before their results were written) has none
        net = place(net, active)
    # The stop flags before a chunk are those the previous chunk read back: they cross to the host once per chunk.
    was_done, was_nonfinite = to_host((net.done, net.nonfinite)) if active.size else (None, None)
    try:
        while active.size and epoch < limit:
            t0 = time.perf_counter()
            stop = min(epoch + chunk_epochs, limit)
            net, rows = advance(net, active, epoch, stop)
            seconds = time.perf_counter() - t0
            if rows is not None:
                for e, row_list in enumerate(rows):
                    for j, row in enumerate(row_list):
                        if row is not None:
                            histories[active[j]].append({**row, "seconds": seconds / len(rows)})
                    if metrics_writer is not None:
                        metrics_writer.write(epoch + e, {f"{tags[active[j]]}/{name}": v for j, row in enumerate(row_list)
                                                         if row is not None for name, v in row.items()
                                                         if name != "epoch" and isinstance(v, float)})
            done, nonfinite, epochs, best, best_epoch = to_host(
                (net.done, net.nonfinite, net.epoch, net.best_loss, net.best_epoch))
            if metrics_writer is not None and rows is None:
                metrics_writer.write(stop, {f"{tags[i]}/{name}": float(v[j]) for j, i in enumerate(active)
                                            for name, v in (("epochs", epochs), (f"best_{objective}", best))})
            for j in np.flatnonzero(nonfinite & ~was_nonfinite & ~was_done):
                warnings.warn(f"non-finite loss at epoch {int(epochs[j]) - 1} ({tags[active[j]]}): stopping, keeping "
                              f"the parameters of epoch {int(best_epoch[j])}", RuntimeWarning, stacklevel=3)
            epoch = stop
            running_best = float(np.min(best)) if best.size else float("nan")
            was_done, was_nonfinite = done, nonfinite
            if done.all() or should_compact(done):
                parts.append((active[done], take(net, np.flatnonzero(done))))
                keep = np.flatnonzero(~done)
                active, net = active[keep], take(net, keep)
                was_done, was_nonfinite = done[keep], nonfinite[keep]
                if active.size:
                    net = place(net, active)
            out_of_time = stop_after_seconds is not None and time.perf_counter() - called + seconds > stop_after_seconds
            stopping = not active.size or out_of_time or epoch >= limit
            if ckpt is not None and (cadence.due() or stopping):
                t_save = time.monotonic()
                meta = {"epochs": epoch, "active": active.tolist(), "history": histories,
                        "seconds": earlier + time.perf_counter() - start}
                ckpt.save(epoch, savable(assemble(parts + ([(active, net)] if active.size else []))), meta, run_id)
                cadence.saved(t_save)
            if progress is not None:
                progress(int(np.max(epochs)), max_epochs, {"running": int(active.size), "best": running_best})
            if out_of_time:
                break
    finally:
        if ckpt is not None:
            ckpt.close()
    final = gather(assemble(parts + ([(active, net)] if active.size else [])))
    now = time.perf_counter()
    return FitResult(model_config, train_config, final, earlier + now - start, dict(layout or {}), histories,
                     resumed_from, now - start)
