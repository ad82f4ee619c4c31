"""vdjax against PyTorch, same machine, same run, same shapes: a table of ratios.

    python benchmarks/compare.py            # the full table (about 15 min on 2 CPU cores)
    python benchmarks/compare.py --quick    # seconds, tiny shapes (run by the tests)

Every time is a median over several steps after warm-up; vdjax compile time is reported
apart from step time. PyTorch is optional: without it only the vdjax columns are filled.
The tables (here, in table.md, and in RESULTS.md and README.md via `python3 tools/report.py`)
are rendered by `tools/report.py` from the results JSON this script writes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # report.py renders the tables
from cnn_step import time_train_step  # noqa: E402

from vdjax.cli import validate  # noqa: E402
from vdjax.training.cost import median_seconds  # noqa: E402
from vdjax.data import spirals_dataset  # noqa: E402
from vdjax.training.runner import fit  # noqa: E402
from vdjax.nn.models import ModelConfig  # noqa: E402
from vdjax.depth.prune import prune  # noqa: E402
from vdjax.nn.models import forward_fn  # noqa: E402
from report import benchmark_markdown  # noqa: E402
from vdjax.runtime import use_all_cpu_cores  # noqa: E402
from vdjax.training.config import TrainConfig  # noqa: E402
from vdjax.training.step import init_state, make_optimizer  # noqa: E402

try:
    import torch

    import torch_ldn
except ImportError:  # the benchmark extra is not installed
    torch = None


def torch_cnn_step(depth: int, batch: int, shape: tuple[int, int, int], steps: int, warmup: int = 1,
                   device: str = "cpu") -> float:
    return median_seconds(torch_ldn.cnn_step_call(depth, batch, shape, device=device), steps, warmup)


def cnn_row(depth: int, batch: int, shape: tuple[int, int, int], steps: int, warmup: int = 1) -> dict:
    """vdjax's CNN train step at max depth `depth`: compile time, and the median of `steps` steps
    after `warmup`."""
    r = time_train_step(ModelConfig("cnn", depth, 10, shape), batch, steps, warmup)
    return {"max_depth": depth, "vdjax_compile_s": r["compile_s"], "vdjax_step_s": r["step_s"],
            "vdjax_ex_s": batch / r["step_s"]}


def with_torch_step(row: dict, batch: int, shape: tuple[int, int, int], steps: int, warmup: int = 1,
                    device: str = "cpu") -> dict:
    """A `cnn_row` with PyTorch's step on `device` beside vdjax's."""
    t = torch_cnn_step(row["max_depth"], batch, shape, steps, warmup, device)
    return {**row, "torch_step_s": t, "torch_ex_s": batch / t, "speedup": t / row["vdjax_step_s"]}


def cnn_rows(depths, batch, shape, steps):
    rows = []
    for d in depths:
        row = cnn_row(d, batch, shape, steps)
        rows.append(with_torch_step(row, batch, shape, steps) if torch is not None else row)
        print("cnn", {k: round(v, 3) for k, v in rows[-1].items()}, flush=True)
    return rows


FIXED_EPOCHS = 1000  # the equal-work spirals runs: every seed exactly this many epochs (at most max_epochs)


def spirals_row(n_seeds, max_depth, max_epochs, patience):
    """The spirals protocol for `n_seeds` seeds in both frameworks; with patience >= max_epochs no
    seed stops early, so both do the same work."""
    data = spirals_dataset()
    cfg = ModelConfig("mlp", max_depth, 2, (2,))
    tc = TrainConfig(max_epochs=max_epochs, patience=patience)
    seeds = list(range(n_seeds))
    t0 = time.perf_counter()
    r = fit(cfg, tc, data, seeds)  # chunks of 250 epochs: stopped seeds compacted out
    jax.block_until_ready(r.state.best_loss)
    row = {"seeds": n_seeds, "max_depth": max_depth, "max_epochs": max_epochs, "patience": patience,
           "vdjax_s": time.perf_counter() - t0, "vdjax_epochs": [int(e) for e in r.state.epoch],
           "devices": len(jax.devices())}
    t0 = time.perf_counter()
    fit(cfg, tc, data, seeds)  # the same again, compiled programs cached
    row["vdjax_s_no_compile"] = time.perf_counter() - t0
    if torch is not None:
        x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train).long()
        t0 = time.perf_counter()
        runs = [torch_ldn.fit_spirals(x, y, max_depth, 20, s, max_epochs, patience) for s in seeds]
        row.update(torch_s=time.perf_counter() - t0, torch_epochs=[r["epochs"] for r in runs])
        row["speedup"] = row["torch_s"] / row["vdjax_s"]
    print("spirals", row, flush=True)
    return row


def spirals_section(n_seeds, max_depth, max_epochs, patience) -> dict:
    """The protocol end to end ('spirals': each seed stops on its own, so the frameworks' work
    differs), and runs of equal work for 1 and `n_seeds` seeds ('spirals_fixed_epochs')."""
    epochs = min(FIXED_EPOCHS, max_epochs)
    return {"spirals": spirals_row(n_seeds, max_depth, max_epochs, patience),
            "spirals_fixed_epochs": [spirals_row(n, max_depth, epochs, epochs) for n in sorted({1, n_seeds})]}


def spirals_in_child(spirals_cfg) -> dict:
    """The spirals sections run in their own process with one XLA device per core (seeds are
    sharded over them); the CNN sections run here on one device, where each CPU device would
    otherwise get a smaller thread pool (measured: D=20 step 1.45 s -> 1.9 s)."""
    import subprocess

    import vdjax

    cmd = [sys.executable, __file__, "--spirals-only", *map(str, spirals_cfg)]
    # The child imports the same vdjax as this process (a checkout may differ from the installed one).
    path = os.pathsep.join(filter(None, [str(Path(vdjax.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path}).stdout
    for line in out.splitlines():
        if line.startswith("spirals "):
            print(line, flush=True)
    return json.loads(next(line[5:] for line in out.splitlines() if line.startswith("JSON ")))


def rerun_row(n_seeds: int, quick: bool) -> dict:
    """The main job (`vdjax spirals`, `n_seeds` seeds) twice, each a fresh process writing to its
    own directory, with an empty persistent compilation cache: the second run loads every
    program the first one compiled. Wall time of the whole command, imports included."""
    import subprocess
    import tempfile

    import vdjax

    root = str(Path(vdjax.__file__).resolve().parents[1])
    args = ["--no-plots", "--seeds", *map(str, range(n_seeds))] + (["--max-depth", "2", "--max-epochs", "5"] if quick else [])
    row = {"seeds": n_seeds, "command": "vdjax spirals " + " ".join(args)}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "VDJAX_COMPILATION_CACHE": str(Path(tmp) / "cache"),
               "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        env.pop("JAX_NUM_CPU_DEVICES", None)  # the command sets one device per core itself
        for run in ("first", "second"):
            cmd = [sys.executable, "-m", "vdjax", "spirals", "--out", str(Path(tmp) / run), *args]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            row[f"{run}_s"] = time.perf_counter() - t0
        row["cache_files"] = sum(1 for f in (Path(tmp) / "cache").rglob("*") if f.is_file())
    row["second_vs_first"] = row["second_s"] / row["first_s"]
    print("rerun", {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    return row


def pruned_row(max_depth, d_opt, batch, shape, steps):
    cfg = ModelConfig("cnn", max_depth, 10, shape)
    state = init_state(jax.random.key(0), cfg, make_optimizer(TrainConfig(), 1))
    q = np.full(max_depth + 1, 1.0 / (max_depth + 1))
    small = prune(cfg, state.variables, q, d_opt)
    x = np.random.default_rng(0).normal(size=(batch, *shape)).astype(np.float32)
    full_fn, small_fn = forward_fn(cfg), forward_fn(small.config)
    t_full = median_seconds(lambda: jax.block_until_ready(full_fn(state.variables, x)), steps)
    t_small = median_seconds(lambda: jax.block_until_ready(small_fn(small.variables, x)), steps)
    row = {"max_depth": max_depth, "d_opt": d_opt, "ideal_ratio": (d_opt + 1) / (max_depth + 1),
           "vdjax_full_s": t_full, "vdjax_pruned_s": t_small, "vdjax_ratio": t_small / t_full}
    row["vdjax_vs_ideal"] = row["vdjax_ratio"] / row["ideal_ratio"]
    if torch is not None:
        model = torch_ldn.TorchLDN("cnn", max_depth, 10, shape[-1], 64).eval()
        pruned = model.pruned(d_opt).eval()
        xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            tf = median_seconds(lambda: model(xt), steps)
            tp = median_seconds(lambda: pruned(xt), steps)
        row.update(torch_full_s=tf, torch_pruned_s=tp, torch_ratio=tp / tf)
    print("pruned", {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    return row


def main(argv=None) -> dict:
    p = validate.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny shapes, seconds: checks the script, not the speed")
    p.add_argument("--steps", type=validate.positive_int, default=5)
    p.add_argument("--out", type=validate.output_dir, default=None, help="write results JSON and a Markdown table here")
    p.add_argument("--spirals-only", nargs=4, type=validate.positive_int, metavar=("SEEDS", "D", "EPOCHS", "PATIENCE"),
                   help=argparse.SUPPRESS)  # the child process that times the spirals section
    args = p.parse_args(argv)
    if args.spirals_only:
        use_all_cpu_cores()  # before the first JAX computation: seeds then run on every core
        print("JSON " + json.dumps(spirals_section(*args.spirals_only)))
        return {}
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)
    if args.quick:
        cfg = dict(depths=[2, 4], compile_depths=[], batch=8, shape=(8, 8, 1), steps=2,
                   spirals=(1, 4, 30, 30), pruned=(4, 1, 16))  # patience 30: the fixed-epoch run reuses its programs
    else:
        cfg = dict(depths=[10, 20, 50], compile_depths=[100], batch=128, shape=(28, 28, 1), steps=args.steps,
                   spirals=(6, 20, 8000, 500), pruned=(50, 10, 512))
    res = {
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, jax {jax.__version__} "
                   f"({jax.default_backend()})" + (f", torch {torch.__version__}" if torch is not None else ", no torch"),
        "command": "python benchmarks/compare.py" + (" --quick" if args.quick else ""),
        "batch": cfg["batch"], "shape": cfg["shape"], "infer_batch": cfg["pruned"][2],
    }
    res["cnn"] = cnn_rows(cfg["depths"], cfg["batch"], cfg["shape"], cfg["steps"])
    for d in cfg["compile_depths"]:  # compile time (and step time) only: PyTorch has no compile step
        r = time_train_step(ModelConfig("cnn", d, 10, cfg["shape"]), cfg["batch"], 2)
        res["cnn"].append({"max_depth": d, "vdjax_compile_s": r["compile_s"], "vdjax_step_s": r["step_s"],
                           "vdjax_ex_s": cfg["batch"] / r["step_s"]})
        print("cnn", res["cnn"][-1], flush=True)
    res.update(spirals_in_child(cfg["spirals"]))
    res["rerun"] = rerun_row(cfg["spirals"][0], args.quick)
    res["pruned"] = pruned_row(*cfg["pruned"][:2], cfg["pruned"][2], cfg["shape"], cfg["steps"])
    table = benchmark_markdown(res)
    print(table)
    if args.out:
        from vdjax.io import write_json, write_text

        write_json(args.out / "results.json", res)
        write_text(args.out / "table.md", table)
    return res


if __name__ == "__main__":
    sys.exit(validate.run_main(main))
