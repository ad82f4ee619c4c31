"""Image experiments: one trained network per (data set, method, depth, seed), one results file each.

`run_image_points` trains (or resumes) the LDNs and DDNs of one max depth as one program with
`vdjax.fit`, then evaluates each on the test set and writes `<out>/<data set>/<method>_D<depth>_s<seed>.json` and
the kept parameters beside it (`.msgpack`), atomically; a finished point is skipped on rerun.

An LDN record holds q(d), d_opt by the 95% rule and by expected depth, test log-likelihood,
error and ECE (with reliability tables) of LDN-full, LDN-95 and LDN-expected, every single
depth's test metrics, and -- when the DDN of the same depth and seed has been trained -- that
DDN's metrics and the forward-pass speed-up of the pruned LDN over it, timed in the same run.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, Callable

import flax.serialization
import jax
import numpy as np

from vdjax.training.cost import median_seconds
from vdjax.data.core import Dataset
from vdjax.io import read_json, write_bytes, write_json
from vdjax.depth.metrics import marginal_log_probs, per_depth_metrics, predictive_metrics
from vdjax.nn.models import Model, ModelConfig
from vdjax.depth.prune import d_opt_95, expected_depth, last_head_only, prune, pruned_log_probs
from vdjax.nn.models import eval_logits, forward_fn
from vdjax.runtime import environment
from vdjax.training.config import RunOptions, TrainConfig
from vdjax.training.runner import FitResult, fit, with_stopping_data


@dataclasses.dataclass(frozen=True)
class ImagePoint:
    """One network to train: which method at which (max) depth with which seed."""

    method: str  # 'ldn' | 'ddn'
    depth: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}_D{self.depth:03d}_s{self.seed}"


def record_path(out: str | Path, dataset: str, point: ImagePoint) -> Path:
    return Path(out) / dataset / f"{point.name}.json"


@dataclasses.dataclass(frozen=True)
class ImageModel:
    """The CNN of the image points: `head_norm` as `ModelConfig.head_norm`; `width` / `bottleneck`
    the outer and inner channel counts (None: the paper's 64 / 32)."""

    head_norm: str = "per_depth"
    width: int | None = None
    bottleneck: int | None = None


SPEED_BATCH = 512  # test images per timed forward pass of the pruned LDN and the DDN


def cnn_config(data: Dataset, depth: int, model: ImageModel = ImageModel()) -> Model:
    """The paper's CNN for `data` at max depth `depth`, sized by `model`."""
    sizes = {k: v for k, v in (("width", model.width), ("bottleneck", model.bottleneck)) if v is not None}
    return ModelConfig("cnn", depth, data.num_classes, data.input_shape, head_norm=model.head_norm, **sizes)


def run_image_point(data: Dataset, point: ImagePoint, train_config: TrainConfig, out: str | Path,
                    model: ImageModel = ImageModel(), options: RunOptions = RunOptions()) -> dict[str, Any]:
    """Trains and evaluates one point (resuming its checkpoint), writes and returns its record."""
    return run_image_points(data, [point], train_config, out, model, options)[0]


def run_image_points(data: Dataset, points: list[ImagePoint], train_config: TrainConfig, out: str | Path,
                     model: ImageModel = ImageModel(), options: RunOptions = RunOptions()) -> list[dict[str, Any]]:
    """Trains the points of one max depth that have no results yet as one program (resuming its
    checkpoint under `out`; `options` as for `vdjax.fit`, its checkpoint_dir set here), writes a
    record per network (DDNs first, so that each LDN record holds its DDN's metrics and speed-up)
    and returns every point's record.

    With `options.span_processes` every process calls this and trains the program together; what
    is done is process 0's view of `out` (broadcast, so all train the same networks), and only
    process 0 evaluates, writes records and removes the checkpoint; the others return []."""
    span_processes, log = options.span_processes, options.log
    if len({p.depth for p in points}) != 1:
        raise ValueError(f"points of one program must share their max depth, got {sorted({p.depth for p in points})}")
    done = _process0_view(np.array([record_path(out, data.name, p).exists() for p in points]), span_processes)
    todo = [p for p, d in zip(points, done) if not d]
    for p in points:
        if p not in todo:
            log(f"{data.name} {p.name}: done before, skipped")
    written: dict[ImagePoint, Path] = {}
    if todo:
        model_config = cnn_config(data, todo[0].depth, model)
        data = with_stopping_data(data, train_config)
        # A run stopped while writing the records leaves the whole program's checkpoint: its
        # networks are finished there, so resume it rather than train the unwritten ones again.
        checkpoints = Path(out) / data.name / "checkpoints"
        whole = _process0_view(np.array((checkpoints / "+".join(p.name for p in points)).exists()), span_processes)
        program = points if whole else todo
        ckpt_dir = checkpoints / "+".join(p.name for p in program)
        result = fit(model_config, train_config, data, [(p.method, p.seed) for p in program],
                     options.replace(checkpoint_dir=ckpt_dir))
        if span_processes and jax.process_index() != 0:
            return []
        results = [result.select([i]) for i in range(len(program))]
        for point, result in sorted(zip(program, results), key=lambda pr: pr[0].method != "ddn"):
            if point in todo:
                written[point] = _write_record(data, point, result, model_config,
                                               train_config.replace(method=point.method), out, log)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    if span_processes and jax.process_index() != 0:
        return []
    return [read_json(written[p] if p in written else record_path(out, data.name, p)) for p in points]


def _process0_view(flags: np.ndarray, span_processes: bool) -> np.ndarray:
    """What process 0 sees of the shared results directory (booleans), broadcast to every
    process when they train one program together, so all of them train the same networks."""
    if not span_processes:
        return flags
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(flags.astype(np.int32))) > 0


def network_record(data: Dataset, point: ImagePoint, result: FitResult, model_config: Model,
                   train_config: TrainConfig) -> dict[str, Any]:
    """One trained network (`result` of it alone) evaluated on the test set: how it trained and, for an LDN, q(d), d_opt
    and the full, 95%-pruned and expected-depth predictives (log-likelihood, error, ECE with
    reliability tables); for a DDN its own predictive."""
    state, trained = result.best_state(0), result.summary(0)
    variables = jax.device_get(state.variables)
    record: dict[str, Any] = {
        "dataset": data.name,
        "n_train": data.n_train,
        "n_val": data.n_val,
        "n_test": int(len(data.x_test)),
        "early_stopping": early_stopping_note(train_config, data),
        "method": point.method,
        "max_depth": point.depth,
        "seed": point.seed,
        "model_config": model_config.describe(),
        "train_config": dataclasses.asdict(train_config),
        "best_epoch": trained["best_epoch"],
        "epochs": trained["epochs"],
        "stopped": trained["stopped"],
        "networks_in_program": trained["networks_in_program"],
        "train_seconds": float(sum(h["seconds"] for h in result.histories[0])),
        "history": with_learning_rates(result.histories[0], train_config, point.method),
        "backend": jax.default_backend(),
        "environment": {**environment(), "seeds_in_batch": trained["networks_in_program"]},  # what the numbers depend on
    }
    logits = eval_logits(model_config, variables, data.x_test)
    per_depth = per_depth_metrics(logits, data.y_test)
    q = (np.asarray(jax.nn.softmax(np.asarray(state.params["depth_logits"])), np.float64)
         if point.method == "ldn" else None)
    if data.x_val is not None:  # how precisely the stopping split measured what it watched
        record["validation"] = validation_log_lik(eval_logits(model_config, variables, data.x_val), data.y_val, q)
    record["per_depth"] = {k: np.asarray(v).tolist() for k, v in per_depth.items()}
    if point.method == "ldn":
        d95, dexp = d_opt_95(q), expected_depth(q)
        record.update(q=q.tolist(), d_opt=d95, d_expected=dexp)
        record["ldn_full"] = predictive_metrics(marginal_log_probs(logits, q), data.y_test, reliability=True)
        for key, depth in (("ldn_95", d95), ("ldn_expected", dexp)):
            record[key] = {"depth": depth, **predictive_metrics(pruned_log_probs(logits, q, depth), data.y_test,
                                                                reliability=True)}
    else:
        record["test"] = predictive_metrics(jax.nn.log_softmax(logits[-1]), data.y_test, reliability=True)
    return record


def with_learning_rates(history: list[dict[str, Any]], train_config: TrainConfig, method: str) -> list[dict[str, Any]]:
    """A network's per-epoch history with each epoch's learning rate, `lr` (what every SGD step of
    that epoch took: `TrainConfig.epoch_learning_rate` of its method)."""
    return [{**h, "lr": train_config.epoch_learning_rate(int(h["epoch"]), method)} for h in history]


def validation_log_lik(logits: np.ndarray, labels: np.ndarray, q: np.ndarray | None) -> dict[str, float]:
    """Mean log-likelihood of the kept network's predictive (the q-marginal for an LDN, the last
    head for a DDN) on the validation split, and its standard error over the split's examples."""
    log_probs = np.asarray(marginal_log_probs(logits, q) if q is not None else jax.nn.log_softmax(logits[-1]))
    ll = log_probs[np.arange(len(labels)), np.asarray(labels)]
    return {"n": int(len(labels)), "log_lik": float(ll.mean()), "log_lik_se": float(ll.std(ddof=1) / np.sqrt(len(ll)))}


def _write_record(data: Dataset, point: ImagePoint, result: FitResult, model_config: Model,
                  train_config: TrainConfig, out: str | Path, log: Callable[[str], None]) -> Path:
    """Evaluates one trained network on the test set (with, for an LDN, the DDN of its depth and
    seed where that is trained); writes its parameters, then its record, and returns where the
    record went (a fallback location if `out` has become unwritable)."""
    path = record_path(out, data.name, point)
    state = result.best_state(0)
    variables = jax.device_get(state.variables)
    depth_logits = np.asarray(state.params["depth_logits"])
    record = network_record(data, point, result, model_config, train_config)
    ddn_path = record_path(out, data.name, dataclasses.replace(point, method="ddn"))
    if point.method == "ldn" and ddn_path.exists():
        ddn = read_json(ddn_path)
        record["ddn"] = ddn["test"]
        ddn_vars = load_image_variables(out, data.name, dataclasses.replace(point, method="ddn"))[0]
        record.update(_speedups(model_config, variables, record, ddn_vars, data.x_test[:SPEED_BATCH]))
    # Parameters first, results last: a results file always has its parameters beside it.
    write_bytes(path.with_suffix(".msgpack"), flax.serialization.msgpack_serialize(
        {"variables": variables, "depth_logits": depth_logits}))
    written = write_json(path, record)  # elsewhere (and said so) if `out` has become unwritable
    log(summary_line(record))
    return written


def _speedups(model_config: Model, variables: dict, record: dict[str, Any], ddn_variables: dict,
              x: np.ndarray) -> dict[str, dict[str, float]]:
    """An LDN record's `speed` and `speed_expected`: its forward pass pruned to d_opt and to the
    expected depth, each timed against the DDN of its max depth on the images `x`."""
    timed: dict[int, dict[str, float]] = {}  # depth -> its speed-up: the two depths often coincide
    for depth in (record["d_opt"], record["d_expected"]):
        if depth not in timed:
            pruned = prune(model_config, variables, np.asarray(record["q"]), depth)
            timed[depth] = forward_speedup(model_config, ddn_variables, pruned.config, pruned.variables, x)
    return {"speed": timed[record["d_opt"]], "speed_expected": timed[record["d_expected"]]}


def retime_speedups(out: str | Path, data: Dataset, log: Callable[[str], None] = print) -> list[Path]:
    """Times every finished LDN under `out` (on `data`) against its DDN again, from their saved
    parameters, and rewrites its record (`speed`, `speed_expected`, each marked `retimed`); returns
    the records rewritten. Training beside the timing measures the load, not the networks: run
    this on idle cores when the training shared them."""
    rewritten = []
    for record in load_records(out, data.name):
        point = ImagePoint(record["method"], record["max_depth"], record["seed"])
        ddn = dataclasses.replace(point, method="ddn")
        if point.method != "ldn" or not record_path(out, data.name, ddn).exists():
            continue
        config = ModelConfig(**{**record["model_config"], "input_shape": tuple(record["model_config"]["input_shape"])})
        variables = load_image_variables(out, data.name, point)[0]
        timed = _speedups(config, variables, record, load_image_variables(out, data.name, ddn)[0],
                          data.x_test[:SPEED_BATCH])
        record.update({k: {**v, "retimed": True} for k, v in timed.items()})
        rewritten.append(write_json(record_path(out, data.name, point), record))
        log(summary_line(record))
    return rewritten


def early_stopping_note(train_config: TrainConfig, data: Dataset) -> dict[str, Any]:
    """What early stopping watched, for results files and figure captions."""
    note: dict[str, Any] = {"on": train_config.stop_on, "objective": train_config.stop_objective,
                            "patience": train_config.patience, "patience_rule": train_config.patience_rule}
    if train_config.stop_on == "val":
        note["validation"] = data.validation
    return note


def stopping_caption(records: list[dict[str, Any]]) -> str:
    """'early stopping on ...' for a figure drawn from `records` (records written before the
    validation split existed stopped on the test ELBO)."""
    notes = {r.get("early_stopping", {}).get("on", "test"): r.get("early_stopping", {}) for r in records}
    words = {"train": "the train ELBO", "test": "the test ELBO (paper protocol)"}
    if "val" in notes:
        v = notes["val"].get("validation") or {}
        words["val"] = f"the ELBO of a {100 * v.get('fraction', 0.1):g}% stratified validation split"
    return "early stopping on " + " / ".join(words[k] for k in sorted(notes))


def summary_line(r: dict[str, Any]) -> str:
    head = f"{r['dataset']} {r['method']} D={r['max_depth']} seed {r['seed']}: "
    tail = f" ({r['epochs']} epochs, best {r['best_epoch']}, {r['train_seconds']:.0f} s)"
    if r["method"] == "ddn":
        t = r["test"]
        return head + f"test LL {t['log_lik']:.3f}, error {t['error']:.3f}, ECE {t['ece']:.3f}" + tail
    f, p = r["ldn_full"], r["ldn_95"]
    s = (f"d_opt {r['d_opt']} (expected {r['d_expected']}); full LL {f['log_lik']:.3f} err {f['error']:.3f} "
         f"ECE {f['ece']:.3f}; pruned LL {p['log_lik']:.3f} err {p['error']:.3f} ECE {p['ece']:.3f}")
    if "speed" in r:
        s += f"; pruned forward {100 * r['speed']['speedup']:.0f}% faster than DDN-{r['max_depth']}"
    return head + s + tail


def load_image_variables(out: str | Path, dataset: str, point: ImagePoint) -> tuple[dict, np.ndarray]:
    blob = flax.serialization.msgpack_restore(record_path(out, dataset, point).with_suffix(".msgpack").read_bytes())
    return blob["variables"], np.asarray(blob["depth_logits"])


def forward_seconds(config: Model, variables: dict, x: np.ndarray, repeats: int = 7) -> float:
    """Median wall time of one jitted eval-mode forward pass on the batch `x` (after a warm-up)."""
    fn = forward_fn(config)
    x = jax.device_put(np.asarray(x, np.float32))
    variables = jax.device_put(variables)
    return median_seconds(lambda: jax.block_until_ready(fn(variables, x)), repeats)


def forward_speedup(ddn_config: Model, ddn_variables: dict, pruned_config: Model,
                    pruned_variables: dict, x: np.ndarray) -> dict[str, float]:
    """Fig 11: the proportional reduction in forward time, 1 - t(pruned LDN) / t(DDN), same batch.

    The DDN computes only its own (last) output block, as deployed; the pruned LDN computes
    all d_opt + 1 of its outputs, since its prediction is their marginal under q. Both are
    timed alternately (twice each) and the fastest kept, so drifting load affects both alike.
    """
    ddn_config, ddn_variables = last_head_only(ddn_config, ddn_variables)
    t_ddn, t_pruned = [], []
    for _ in range(2):
        t_ddn.append(forward_seconds(ddn_config, ddn_variables, x))
        t_pruned.append(forward_seconds(pruned_config, pruned_variables, x))
    ddn_s, pruned_s = float(np.min(t_ddn)), float(np.min(t_pruned))
    return {"ddn_seconds": ddn_s, "pruned_seconds": pruned_s, "speedup": 1.0 - pruned_s / ddn_s,
            "batch": int(len(x)), "ddn_depth": ddn_config.max_depth, "pruned_depth": pruned_config.max_depth}


# ---------------------------------------------------------------------------- tables


def load_records(out: str | Path, dataset: str) -> list[dict[str, Any]]:
    """Every finished record of one data set under `out`."""
    return [read_json(p) for p in sorted((Path(out) / dataset).glob("*_D*_s*.json"))]


def depth_table(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Fig 9: per max depth, mean and std over seeds of d_opt (both rules) and the test
    log-likelihood / error / ECE of LDN-full, LDN-95, LDN-expected and the DDN of that depth."""
    ldn = [r for r in records if r["method"] == "ldn"]
    ddn = {(r["max_depth"], r["seed"]): r["test"] for r in records if r["method"] == "ddn"}
    depths = sorted({r["max_depth"] for r in ldn} | {d for d, _ in ddn})
    out: dict[str, Any] = {"max_depth": np.array(depths)}

    def put(name: str, values_per_depth: list[list[float]]):
        out[name] = np.array([np.mean(v) if v else np.nan for v in values_per_depth])
        out[name + "_std"] = np.array([np.std(v) if v else np.nan for v in values_per_depth])

    for stat in ("d_opt", "d_expected"):
        put(stat, [[r[stat] for r in ldn if r["max_depth"] == d] for d in depths])
    for variant in ("ldn_full", "ldn_95", "ldn_expected"):
        for m in ("log_lik", "error", "ece"):
            put(f"{variant}_{m}", [[r[variant][m] for r in ldn if r["max_depth"] == d] for d in depths])
    for m in ("log_lik", "error", "ece"):
        put(f"ddn_{m}", [[v[m] for (dd, _), v in ddn.items() if dd == d] for d in depths])
    put("speedup", [[r["speed"]["speedup"] for r in ldn if r["max_depth"] == d and "speed" in r] for d in depths])
    return out



def image_figures(out: str | Path, datasets: list[str]) -> list[Path]:
    """Figs 4, 9, 10 and 11 from the results files under `out` (whatever has been run so far)."""
    return draw_image_figures({name: load_records(out, name) for name in datasets}, out)


def draw_image_figures(records: dict[str, list[dict[str, Any]]], out: str | Path,
                       q_notes: dict[str, str] | None = None) -> list[Path]:
    """Figs 4, 9, 10 and 11 into `out` from records per data set (results files or a summary);
    `q_notes[name]`, where given, is a last title line of that data set's Fig 4 (for example, that
    its q(d) had not settled), so the figure never shows an unsettled q as a finding."""
    from vdjax.studies.plots import (DepthPosterior, plot_depth_posterior, plot_image_depth_scan, plot_reliability,
                                     plot_speedup)

    out = Path(out)
    records = {k: v for k, v in records.items() if v}
    paths: list[Path] = []
    tables = {name: depth_table(rs) for name, rs in records.items()}
    caption = stopping_caption([r for rs in records.values() for r in rs])
    if any(any(r["method"] == "ldn" for r in rs) for rs in records.values()):
        paths.append(plot_image_depth_scan(tables, out / "fig9_depth_scan.png", suptitle=caption))
        paths.append(plot_speedup(tables, out / "fig11_speedup.png"))
    panels = []
    for name, rs in records.items():
        ldn = [r for r in rs if r["method"] == "ldn"]
        if not ldn:
            continue
        deepest = max(r["max_depth"] for r in ldn)
        top = [r for r in ldn if r["max_depth"] == deepest]
        ddn = {}
        for r in rs:
            if r["method"] == "ddn" and r["max_depth"] <= deepest:
                ddn.setdefault(r["max_depth"], []).append(r["test"]["log_lik"])
        ddn_depths = sorted(ddn)
        posterior = DepthPosterior(
            np.array([r["q"] for r in top]), np.array([r["per_depth"]["log_lik"] for r in top]),
            float(np.mean([r["ldn_full"]["log_lik"] for r in top])), int(round(np.mean([r["d_opt"] for r in top]))),
            ddn_log_lik=np.array([np.mean(ddn[d]) for d in ddn_depths]) if ddn_depths else None,
            ddn_depths=np.array(ddn_depths) if ddn_depths else None)
        paths.append(plot_depth_posterior(
            posterior, out / f"fig4_posterior_{name}.png",
            f"{name}: q(d) of LDN D={deepest} ({len(top)} seed{'s' if len(top) > 1 else ''}), "
            f"test log-likelihood per depth\n{caption}" + (f"\n{q_notes[name]}" if q_notes and name in q_notes else "")))
        first = top[0]
        if "ddn" in first:
            panels += [(f"{name} DDN-{deepest}", first["ddn"]), (f"{name} LDN-{deepest} full", first["ldn_full"]),
                       (f"{name} LDN pruned to {first['d_opt']}", first["ldn_95"])]
    if panels:
        paths.append(plot_reliability(panels, out / "fig10_calibration.png", suptitle=caption))
    return paths
