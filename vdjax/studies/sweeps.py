"""Grids of spirals runs: one results file per grid point, skipped when it already exists.

Each grid point trains all repeats together (`vmap` over seeds, one compile) through
`vdjax.studies.experiment.run_in_memory` and writes `<out>/<name>.json` (configs, q(d), d_opt,
marginal / pruned / per-depth test metrics for every seed) and `<out>/<name>.msgpack` (the
kept parameters of every seed), atomically. A killed sweep resumes at the first missing point.

Data seeds: by default every repeat draws its own spirals, seeded by the repeat's network seed
(`data_seeds="per_repeat"`), as the reference's reruns each drew new data. With
`data_seeds="shared"` every repeat trains and tests on the one draw of `SpiralsConfig.seed`:
how the records before per-repeat data were made (with `data.seed = 0`). A record names its
mode in `data_seeds`, and each seed's `data_seed`; repeat 0 has the same data in both modes.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import flax.serialization
import numpy as np

from vdjax.data import Dataset, SpiralsConfig, spirals_dataset
from vdjax.data.spirals import spirals_draws
from vdjax.studies.experiment import epoch_progress, run_in_memory
from vdjax.io import not_directories, read_json, unique, write_bytes, write_json
from vdjax.nn.models import ModelConfig
from vdjax.training.config import RunOptions, TrainConfig


DataSeeds = Literal["per_repeat", "shared"]
# The sweeps' block scan is fully unrolled up to this many blocks and rolled (unroll 1) beyond:
# see `scan_unroll` for what was measured.
FULL_UNROLL_UP_TO = 20


def scan_unroll(max_depth: int) -> int:
    """The block scan's unroll factor of a sweep's MLP: all blocks (max_depth) up to
    `FULL_UNROLL_UP_TO` blocks, else 1 (rolled). Measured: process CPU time per seed-epoch
    (median of 2-6 interleaved runs), 6 seeds with their own data on 2 XLA CPU devices of a 2-core
    machine that other jobs kept at load 6-7 (so +-10%), rolled -> unroll 20, remat 'auto' both:
    D = 20 width 20: 1.42 -> 1.31 ms (wall 2.11 -> 2.01 ms), D = 20 width 256: 43.8 -> 35.8 ms;
    but D = 40: 3.00 -> 3.42 ms and D = 100: 7.3 -> 9.4 ms (unroll 100: 7.4 ms, 80 s more
    compile). remat False instead of 'auto' measured the same within the noise at D = 20 (1.35 ms,
    35.9 ms) and slower at D = 40 (3.65) and 100 (10.3), so remat stays `ModelConfig`'s 'auto'."""
    return max(max_depth, 1) if max_depth <= FULL_UNROLL_UP_TO else 1


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One run of a sweep: a name (the file stem), and what to train on what.

    data_seeds: 'per_repeat' (each repeat draws its own data, seeded by its network seed;
    `data.seed` is not used) or 'shared' (every repeat on the draw of `data.seed`)."""

    name: str
    data: SpiralsConfig
    model: ModelConfig
    train: TrainConfig
    meta: tuple[tuple[str, Any], ...] = ()  # the swept variable(s), e.g. (("max_depth", 20),)
    data_seeds: DataSeeds = "per_repeat"

    def __post_init__(self):
        if self.data_seeds not in ("per_repeat", "shared"):
            raise ValueError(f"data_seeds must be 'per_repeat' or 'shared', got {self.data_seeds!r}")

    def data_seed_of(self, seeds: list[int]) -> list[int]:
        """The data seed of each repeat: its network seed, or the one shared seed."""
        return [int(s) for s in seeds] if self.data_seeds == "per_repeat" else [self.data.seed] * len(seeds)

    def datasets(self, seeds: list[int]) -> Dataset | list[Dataset]:
        """What `run_in_memory` trains the repeats on: one data set per repeat, or the shared one."""
        if self.data_seeds == "shared":
            return spirals_dataset(self.data)
        return spirals_draws(self.data, self.data_seed_of(seeds))


def spirals_point(name: str, meta: dict[str, Any], *, max_depth: int = 20, width: int = 20,
                  train: TrainConfig = TrainConfig(), data_seeds: DataSeeds = "per_repeat",
                  unroll: int | None = None, remat: bool | str = "auto", **data_kwargs) -> GridPoint:
    """A spirals grid point; `data_kwargs` go to `SpiralsConfig` (its `seed` only counts for
    shared data). unroll / remat: the block scan's (`ModelConfig`); unroll None: `scan_unroll`.
    The records made before per-repeat data ran rolled (unroll 1, remat 'auto'): an unrolled scan
    computes other floats, so reproducing those records takes `unroll=1, data_seeds='shared'`."""
    if unroll is None:
        unroll = scan_unroll(max_depth)
    data = SpiralsConfig(**data_kwargs)
    model = ModelConfig("mlp", max_depth, data.n_arms, (2,), width=width, unroll=unroll, remat=remat)
    return GridPoint(name, data, model, train, tuple(meta.items()), data_seeds)


def record_dataset(record: dict[str, Any], seed_index: int = 0) -> Dataset:
    """The data set that one seed of a sweep record trained and was tested on (records from before
    per-repeat data: the shared draw of `data_config.seed`)."""
    config = dict(record["data_config"])
    seed = record["seeds"][seed_index].get("data_seed")
    if seed is not None:
        config["seed"] = seed
    return spirals_dataset(SpiralsConfig(**config))


def run_grid(points: Iterable[GridPoint], out: str | Path, seeds: list[int],
             log: Callable[[str], None] = print, chunk_epochs: int = 250,
             checkpoint_every_s: float = 60.0) -> list[dict[str, Any]]:
    """Runs every missing grid point and returns all their records (loaded or fresh).

    A point in progress checkpoints to `<out>/<name>.checkpoint` and resumes from it when run
    again (the checkpoint is deleted once its results are written).
    """
    out = Path(out)
    records = []
    points = list(points)
    names = [p.name for p in points]
    unique(names, "grid point names")
    not_directories([out / f"{n}{ext}" for n in names for ext in (".json", ".msgpack")])
    # Every finished point is read before anything trains: a damaged file stops the sweep now, not hours in.
    finished = {n: read_json(out / f"{n}.json") for n in names if (out / f"{n}.json").is_file()}
    for i, point in enumerate(points, 1):
        path = out / f"{point.name}.json"
        if point.name in finished:
            records.append(finished[point.name])
            log(f"[{i}/{len(points)}] {point.name}: done before, skipped")
            continue
        checkpoint = out / f"{point.name}.checkpoint"
        started = time.monotonic()
        with epoch_progress(point.train.max_epochs, f"[{i}/{len(points)}] {point.name}", leave=False) as progress:
            run = run_in_memory(point.datasets(seeds), point.model, point.train, seeds,
                                data_seeds=point.data_seed_of(seeds),
                                options=RunOptions(chunk_epochs=chunk_epochs, progress=progress,
                                                   checkpoint_dir=checkpoint, checkpoint_every_s=checkpoint_every_s))
        record = run.summary()
        data_config = dataclasses.asdict(point.data)
        if point.data_seeds == "per_repeat":
            data_config["seed"] = None  # each seed's own: its `data_seed`
        record.update(name=point.name, meta=dict(point.meta), data_config=data_config, data_seeds=point.data_seeds,
                      # this launch's training and evaluation, and the training of the launches it resumed
                      wall_seconds=time.monotonic() - started + run.train_seconds - run.fit.call_seconds)
        # Parameters first, results last: a results file always has its parameters beside it.
        write_bytes(out / f"{point.name}.msgpack", flax.serialization.msgpack_serialize(
            {"variables": [_np(run.fit.best_state(s).variables) for s in range(len(seeds))],
             "depth_logits": [np.asarray(run.fit.best_state(s).params["depth_logits"]) for s in range(len(seeds))]}))
        written = write_json(path, record)  # elsewhere (and said so) if `out` has become unwritable
        shutil.rmtree(checkpoint, ignore_errors=True)  # the results are safe now
        records.append(read_json(written))
        m = record["mean"]
        log(f"[{i}/{len(points)}] {point.name}: d_opt {m['d_opt']:.1f}, test LL {m['test_log_lik']:.3f}, "
            f"error {m['test_error']:.3f} ({run.train_seconds:.0f} s of training, resumed runs included)")
    return records


def load_variables(out: str | Path, name: str, seed_index: int = 0) -> tuple[dict, np.ndarray]:
    """The kept variables and depth logits of one seed of a finished grid point."""
    blob = flax.serialization.msgpack_restore((Path(out) / f"{name}.msgpack").read_bytes())
    return _index(blob["variables"], seed_index), np.asarray(_index(blob["depth_logits"], seed_index))


def _index(seq, i):
    """msgpack may restore a list as a dict keyed '0', '1', ..."""
    return seq[str(i)] if isinstance(seq, dict) else seq[i]


def _np(tree):
    import jax

    return jax.tree_util.tree_map(np.asarray, tree)


def sweep_table(records: list[dict[str, Any]], key: str) -> dict[str, np.ndarray]:
    """Means and stds over repeats, per grid point, ordered by the swept value `key`."""
    records = sorted(records, key=lambda r: r["meta"][key])
    out: dict[str, Any] = {key: np.array([r["meta"][key] for r in records])}
    for stat in ("d_opt", "d_expected", "test_log_lik", "pruned_log_lik", "test_error", "pruned_error"):
        out[stat] = np.array([r["mean"][stat] for r in records])
        out[stat + "_std"] = np.array([r["std"][stat] for r in records])
    return out


def functions_figure(records: list[dict[str, Any]], out: str | Path, key: str, path: str | Path,
                     n_depths: int = 6, resolution: int = 70):
    """Figs 7/8: p(class 1 | x, d) at single depths of each grid point's first-seed LDN, one row
    per value of `key`, with that point's training data (single depths, no marginalisation)."""
    from vdjax.studies.experiment import depth_probs, input_grid
    from vdjax.studies.plots import plot_decision_functions

    records = sorted(records, key=lambda r: r["meta"][key])
    maps, titles, rows = [], [], []
    for r in records:
        cfg = ModelConfig(**{**r["model_config"], "input_shape": tuple(r["model_config"]["input_shape"])})
        data = record_dataset(r, 0)
        variables, _ = load_variables(out, r["name"])
        gx, gy, pts = input_grid(data.x_train, resolution)
        probs = depth_probs(cfg, variables, pts)
        q = np.asarray(r["seeds"][0]["q"])
        for d in np.linspace(0, cfg.max_depth, n_depths).round().astype(int):
            maps.append((gx, gy, probs[d].reshape(gx.shape)))
            titles.append(f"{key}={r['meta'][key]}, d={d}, q={q[d]:.2f}")
        rows.append((data.x_train, data.y_train))
    return plot_decision_functions(maps, titles, rows, path, ncols=n_depths)
