"""One pass over what a GPU changes, in one command and one JSON file, within a time budget.

The H200 run. Here, first (data/fashion_mnist is git-ignored: the device tool's `carry` takes
it along with the working tree, 30 MB):

    apt-get install -y dataset-fashion-mnist   # only if /usr/share/datasets/fashion-mnist is missing
    mkdir -p data/fashion_mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion_mnist/

then on the H200, with carry ["data/fashion_mnist"] and a device timeout of 480 s (what it
writes under $OUT comes back):

    PYTHONPATH=. python3 benchmarks/gpu_check.py --data-dir data/fashion_mnist --budget-s 420 --out "$OUT/gpu_check.json"

and here copy the file that came back to benchmarks/gpu/gpu_check.json (the default --out) and
run `python3 tools/report.py`, which renders its tables into benchmarks/RESULTS.md.
Cost: about 7.5 minutes of device time (420 s of measurements, plus start-up, imports and
writing). The JSON is written atomically after every section, so a killed run keeps what it
measured.

    PYTHONPATH=. python3 benchmarks/gpu_check.py --tiny   # CPU, tiny sizes: checks the script (the tests)

Sections, each with its share of the budget; what a section could not fit is listed under its
`cut`, with the reason:
  cnn_step              the CNN LDN train step, vdjax against the PyTorch peer (benchmarks/torch_ldn.py)
                        on the same device, D = 10, 20, 50, batch 512: compile time, median step
  networks_per_program  network-steps/s of 1, 4, 16 networks in one vdjax program (the image
                        trainer's vmapped step, fed host batches as in training) against PyTorch
                        training the same networks one after the other, D = 20, batch 512
  slice                 the paper's protocol on full Fashion-MNIST for one seed: LDN and DDN at
                        D = 10 and 30 (50 if the budget allows), each in its own program with the
                        reference code's choices (PAPER_IMAGE_PROTOCOL, shared head statistics),
                        for as many epochs as the budget allows
  time_split            the trainer's compiled step on a batch already on the device, against the
                        trainer's real epoch time per step in the slice
  environment           GPU, driver, library versions, devices
and the targets, each met or not met as computed from the numbers.

Precision: float32 on both sides. On a GPU, JAX runs with jax_default_matmul_precision='highest'
and PyTorch with TF32 off for matmuls and cuDNN convolutions (by default both may use TF32 on
an H200); the JSON records the settings under `precision`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

# JAX takes 75% of the GPU's memory at start by default; the PyTorch peer runs in this process too.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.6")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

# JAX's backend starts before PyTorch is imported, so that JAX loads its own CUDA libraries
# (cuDNN 9 runs programs built for an older 9.x, not the other way round; PyTorch's would
# otherwise be loaded first).
jax.devices()

import compare  # noqa: E402  (imports PyTorch)
import image_throughput  # noqa: E402

from vdjax.cli import validate  # noqa: E402
from vdjax.io import write_json  # noqa: E402

try:
    import torch

    import torch_ldn
except ImportError:  # the bench extra is not installed
    torch = None

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks/gpu/gpu_check.json"
TINY_OUT = ROOT / "results/gpu_check_tiny.json"  # never the committed file


@dataclasses.dataclass(frozen=True)
class Settings:
    """The sizes of every section; `FULL` on the GPU, `TINY` for the CPU dry run."""

    batch: int
    shape: tuple[int, int, int]  # input of the synthetic-batch sections (cnn_step, networks_per_program)
    step_depths: tuple[int, ...]
    step_repeats: int  # timed steps per median
    warmup: int
    networks: tuple[int, ...]
    network_depth: int
    network_steps: int  # steps per network per round
    network_rounds: int
    slice_depths: tuple[int, ...]
    slice_optional_depths: tuple[int, ...]  # only if the budget left allows
    slice_max_epochs: int
    slice_n_train: int | None  # None: the whole training set
    slice_n_test: int | None
    min_network_s: float  # a slice network is started only with at least this much time
    optional_min_s: float | None  # the optional depths run only with this much left (None: never)
    split_steps: int
    shares: dict[str, float]  # of the budget, per section; the slice gets what the others leave


SHARES = {"cnn_step": 0.2, "networks_per_program": 0.2, "time_split": 0.05}
FULL = Settings(batch=512, shape=(28, 28, 1), step_depths=(10, 20, 50), step_repeats=20, warmup=3,
                networks=(1, 4, 16), network_depth=20, network_steps=10, network_rounds=3,
                slice_depths=(10, 30), slice_optional_depths=(50,), slice_max_epochs=500, slice_n_train=None,
                slice_n_test=None, min_network_s=20.0, optional_min_s=120.0, split_steps=20, shares=SHARES)
TINY = Settings(batch=8, shape=(8, 8, 1), step_depths=(1, 2), step_repeats=3, warmup=1, networks=(1, 2),
                network_depth=2, network_steps=2, network_rounds=1, slice_depths=(1,),
                slice_optional_depths=(2,), slice_max_epochs=2, slice_n_train=256, slice_n_test=128,
                min_network_s=0.0, optional_min_s=None, split_steps=3, shares=SHARES)
"""The dry run always cuts the optional depth (so its JSON has a cut to show) and has a budget
that a loaded CPU does not run out of: it checks the script, not the budget."""
TARGETS = {"cnn_step_speedup": 1.5, "networks_vs_torch": 4.0, "ldn_entropy_fraction": 0.9}


@dataclasses.dataclass
class Budget:
    """Seconds from `start`; `share` hands a section its part, never more than is left."""

    seconds: float
    start: float = dataclasses.field(default_factory=time.perf_counter)

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def share(self, seconds: float) -> "Budget":
        return Budget(max(0.0, min(seconds, self.left())))


def log(text: str) -> None:
    print(text, flush=True)


def cut(item: Any, reason: str) -> dict[str, Any]:
    log(f"  cut {item}: {reason}")
    return {"item": item, "reason": reason}


# ---------------------------------------------------------------------------- set-up


def torch_device() -> tuple[str | None, str | None]:
    """The device the PyTorch peer runs on (the one JAX runs on), or None and why not."""
    if torch is None:
        return None, "PyTorch is not installed (the bench extra)"
    if jax.default_backend() == "cpu":
        return "cpu", None
    if torch.cuda.is_available():
        return "cuda", None
    return None, f"JAX runs on {jax.default_backend()} but PyTorch sees no CUDA device: no like-for-like peer"


def use_float32() -> dict[str, Any]:
    """float32 arithmetic on both sides (no TF32), recorded as it was set."""
    gpu = jax.default_backend() != "cpu"
    if gpu:
        jax.config.update("jax_default_matmul_precision", "highest")
    out: dict[str, Any] = {"dtype": "float32", "jax_default_matmul_precision": jax.config.jax_default_matmul_precision}
    if torch is not None and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if torch is not None:
        out.update(torch_matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                   torch_cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   torch_cudnn_benchmark=torch.backends.cudnn.benchmark)
    out["note"] = ("TF32 off on both sides" if gpu else
                   "CPU: float32 throughout (XLA:CPU and PyTorch's CPU kernels have no TF32 path)")
    return out


def gpu_query() -> dict[str, Any] | None:
    """nvidia-smi's name, driver and memory of each GPU, else what PyTorch knows, else None."""
    if shutil.which("nvidia-smi"):
        try:
            query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
            text = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout
            rows = [[c.strip() for c in line.split(",")] for line in text.strip().splitlines()]
            return {"source": "nvidia-smi", "gpus": [{"name": r[0], "driver_version": r[1], "memory": r[2]}
                                                       for r in rows if len(r) == 3]}
        except (OSError, subprocess.SubprocessError):
            pass
    if torch is not None and torch.cuda.is_available():
        return {"source": "torch.cuda", "gpus": [{"name": torch.cuda.get_device_name(i), "driver_version": None,
                                                  "cuda_runtime": torch.version.cuda}
                                                 for i in range(torch.cuda.device_count())]}
    return None


def environment_section(budget: Budget, out: dict[str, Any]) -> None:
    import flax
    import jaxlib
    import optax

    from vdjax.runtime import environment

    out.update({"gpu": gpu_query(), "backend": jax.default_backend(), "device_count": jax.device_count(),
            "devices": [str(d) for d in jax.devices()], "device_kind": jax.devices()[0].device_kind,
            "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
                         "optax": optax.__version__, "numpy": np.__version__,
                         "torch": torch.__version__ if torch is not None else None,
                         "torch_cuda": torch.version.cuda if torch is not None else None},
            "torch_threads": torch.get_num_threads() if torch is not None else None,
            "xla_python_client_mem_fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
            "vdjax": environment()})


# ---------------------------------------------------------------------------- (i) the CNN step


def torch_part(row: dict[str, Any], fn: Callable[[], Any]) -> Any:
    """`fn()`, or None with the error under row['torch_error']: a failing peer keeps vdjax's numbers."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001
        traceback.print_exc()
        row["torch_error"] = validate.one_line(err)
        return None


def cnn_step_section(s: Settings, budget: Budget, out: dict[str, Any]) -> None:
    """Rows of `compare.cnn_row` with `compare.with_torch_step`, deepest last; a depth whose
    estimated cost (the last one's compile time, and its steps scaled by depth) no longer fits
    is cut."""
    device, why_not = torch_device()
    out.update(batch=s.batch, shape=list(s.shape), repeats=s.step_repeats, warmup=s.warmup, torch_device=device,
               torch_skipped=why_not, rows=[], cut=[])
    last: dict[str, Any] | None = None
    for d in s.step_depths:
        estimate = 0.0 if last is None else (
            last["vdjax_compile_s"] + (last["wall_s"] - last["vdjax_compile_s"]) * (d + 1) / (last["max_depth"] + 1))
        if budget.left() < estimate:
            out["cut"].append(cut(f"D={d}", f"estimated {estimate:.0f} s, {budget.left():.0f} s left"))
            continue
        t0 = time.perf_counter()
        row = compare.cnn_row(d, s.batch, s.shape, s.step_repeats, s.warmup)
        if device is not None:
            row = torch_part(row, lambda: compare.with_torch_step(row, s.batch, s.shape, s.step_repeats, s.warmup,
                                                                  device)) or row
        row["wall_s"] = time.perf_counter() - t0
        log(f"  cnn {row}")
        out["rows"].append(row)
        last = row


# ---------------------------------------------------------------------------- (ii) networks per program


def torch_sequential_seconds(calls: list[Callable[[], float]], steps: int) -> float:
    """Seconds for `steps` steps of each network, one network after the other."""
    t0 = time.perf_counter()
    for call in calls:
        for _ in range(steps):
            call()
    return time.perf_counter() - t0


def networks_section(s: Settings, budget: Budget, out: dict[str, Any]) -> None:
    """Rates (network-steps/s, medians over interleaved rounds) of K networks in one vdjax
    program and of PyTorch training them one after the other."""
    from vdjax.training.runner import _take as take

    device, why_not = torch_device()
    d, batch, shape, steps = s.network_depth, s.batch, s.shape, s.network_steps
    out.update(max_depth=d, batch=batch, shape=list(shape), steps_per_round=steps, torch_device=device,
               torch_skipped=why_not, rows=[], cut=[], compile_s={},
               feeding={"vdjax": "host-gathered batches placed on the device every step, as the trainer",
                        "torch": "one fixed batch per network, resident on the device (favours PyTorch)"})
    nets = image_throughput.initial_states(d, batch, shape, max(s.networks))
    programs = {}
    for k in s.networks:
        last = max(out["compile_s"].values(), default=0.0)
        if budget.left() < 2 * last:
            out["cut"].append(cut(f"K={k}", f"{budget.left():.0f} s left, the last program took {last:.0f} s"))
            continue
        programs[k] = image_throughput.VdjaxProgram(d, batch, shape, take(nets, np.arange(k)))
        out["compile_s"][str(k)] = programs[k].compile_s

    def torch_networks() -> list[Callable[[], float]]:
        calls = []
        for i in range(max(programs, default=0)):
            torch.manual_seed(i)
            calls.append(torch_ldn.cnn_step_call(d, batch, shape, device=device))
        torch_sequential_seconds(calls, 1)  # warm-up
        return calls

    calls = (torch_part(out, torch_networks) if device is not None else None) or []
    times: dict[str, list[float]] = {}
    for r in range(s.network_rounds):
        t0 = time.perf_counter()
        for k, program in programs.items():
            times.setdefault(f"vdjax_{k}", []).append(program.run(steps))
            if calls:
                t = torch_part(out, lambda: torch_sequential_seconds(calls[:k], steps))
                calls = calls if t is not None else []
                times.setdefault(f"torch_{k}", []).append(t)
        out["rounds"] = r + 1
        if budget.left() < time.perf_counter() - t0 and r + 1 < s.network_rounds:
            out["cut"].append(cut(f"rounds {r + 2}..{s.network_rounds}", f"{budget.left():.0f} s left"))
            break
    out["times_s"] = times
    for k in programs:
        row = {"networks": k, "vdjax_program": k * steps / statistics.median(times[f"vdjax_{k}"])}
        if calls:
            row["torch_sequential"] = k * steps / statistics.median(times[f"torch_{k}"])
            row["program_vs_torch"] = row["vdjax_program"] / row["torch_sequential"]
        out["rows"].append(row)
    one = next((r for r in out["rows"] if r["networks"] == 1), None)
    for row in out["rows"]:
        if one is not None:
            row["program_vs_one_network"] = row["vdjax_program"] / one["vdjax_program"]
        log(f"  networks {row}")


# ---------------------------------------------------------------------------- (iii) the paper-protocol slice


def slice_data(s: Settings, data_dir: Path | None, tiny: bool):
    """Fashion-MNIST (a few hundred images in the dry run; there, without the files and without
    --data-dir, a synthetic set of the same form)."""
    from vdjax.data.core import Dataset
    from vdjax.data.images import DataNotFoundError, load_images

    try:
        return load_images("fashion_mnist", data_dir, source="files", n_train=s.slice_n_train, n_test=s.slice_n_test)
    except DataNotFoundError:
        if not tiny or data_dir is not None:
            raise
    rng = np.random.default_rng(0)
    templates = rng.normal(size=(10, *s.shape)).astype(np.float32)

    def draw(n: int):
        y = rng.integers(0, 10, n)
        return templates[y] + rng.normal(size=(n, *s.shape)).astype(np.float32), y.astype(np.int32)

    (xtr, ytr), (xte, yte) = draw(s.slice_n_train or 256), draw(s.slice_n_test or 128)
    return Dataset(name="synthetic", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, num_classes=10)


def method_config(method: str, s: Settings):
    """The paper's protocol as the reference code runs it (PAPER_IMAGE_PROTOCOL: stopping on the
    test ELBO of the marginal predictive, the reference's patience rule, LDNs at lr 0.1 throughout
    and DDNs dropping it x0.1 after 31 epochs) for `method`, at the slice's batch and epoch cap."""
    from vdjax.training.config import PAPER_IMAGE_PROTOCOL

    return PAPER_IMAGE_PROTOCOL.replace(method=method, batch_size=s.batch, max_epochs=s.slice_max_epochs)


def schedule_text(tc) -> str:
    if tc.lr_drop_epoch is None or tc.method not in tc.lr_drop_methods:
        return f"lr {tc.learning_rate:g} constant"
    return f"lr {tc.learning_rate:g}, x{tc.lr_drop_factor:g} after epoch {tc.lr_drop_epoch}"


def network_summary(record: dict[str, Any], wall_s: float, limit_s: float) -> dict[str, Any]:
    """What the slice keeps of an image record: training, q(d) and its entropy, test metrics."""
    tc = record["train_config"]
    stopped = {"interrupted": "time_budget"}.get(record["stopped"], record["stopped"])
    seconds = [h["seconds"] for h in record["history"]]
    row = {"method": record["method"], "max_depth": record["max_depth"], "seed": record["seed"],
           "epochs": record["epochs"], "best_epoch": record["best_epoch"], "stopped": stopped,
           "time_limit_s": limit_s, "wall_s": wall_s, "train_seconds": record["train_seconds"],
           "epoch_seconds_median": statistics.median(seconds[1:] or seconds),
           "lr_drop_epoch": tc["lr_drop_epoch"] if record["method"] in tc["lr_drop_methods"] else None,
           "history": record["history"]}
    if record["method"] == "ldn":
        from vdjax.studies.image_study import q_movement

        moved, h_max = q_movement(record["q"]), math.log(len(record["q"]))
        row.update(q=record["q"], entropy=moved["entropy_fraction"] * h_max, entropy_max=h_max,
                   entropy_fraction=moved["entropy_fraction"], tv_from_uniform=moved["tv_from_uniform"],
                   d_opt=record["d_opt"], d_expected=record["d_expected"],
                   test={k: record["ldn_full"][k] for k in ("log_lik", "error", "ece")},
                   test_pruned={k: record["ldn_95"][k] for k in ("depth", "log_lik", "error", "ece")})
    else:
        row["test"] = {k: record["test"][k] for k in ("log_lik", "error", "ece")}
    return row


def train_network(data, method: str, depth: int, s: Settings, limit_s: float) -> dict[str, Any]:
    """One network with the library's image trainer, stopped by patience, the epoch cap or `limit_s`."""
    from vdjax.studies.image_runs import ImageModel, ImagePoint, cnn_config, network_record
    from vdjax.training.config import RunOptions
    from vdjax.training.runner import fit

    cfg, tc = cnn_config(data, depth, ImageModel(head_norm="shared")), method_config(method, s)
    t0 = time.perf_counter()
    result = fit(cfg, tc, data, [(method, 0)], RunOptions(log=log, stop_after_seconds=max(limit_s, 0.0)))
    record = network_record(data, ImagePoint(method, depth, 0), result, cfg, tc)
    row = network_summary(record, time.perf_counter() - t0, limit_s)
    log(f"  slice {method} D={depth}: {row['epochs']} epochs ({row['stopped']}), test LL {row['test']['log_lik']:.3f}"
        f" error {row['test']['error']:.3f}" + (f", d_opt {row['d_opt']}, entropy {row['entropy_fraction']:.2f} of max"
                                                 if method == "ldn" else "") + f", {row['wall_s']:.0f} s")
    return row


def slice_section(s: Settings, budget: Budget, out: dict[str, Any], data) -> None:
    """LDNs first (the target is about them), then DDNs; each network gets an equal part of the
    time left (its fit stops short of it, leaving room for the test evaluation)."""
    from vdjax.training.epoch import Batching

    batching, tc = Batching.for_size(data.n_train, s.batch), method_config("ldn", s)
    out.update(dataset=data.name, n_train=data.n_train, n_test=int(len(data.x_test)), batch_size=s.batch,
               effective_batch=batching.batch_size, steps_per_epoch=batching.n_batches, seed=0,
               max_epochs=s.slice_max_epochs, protocol=f"PAPER_IMAGE_PROTOCOL: early stopping on the {tc.stop_on} "
               f"ELBO, patience {tc.patience}, lr {tc.learning_rate:g}, momentum {tc.momentum:g}, batch {s.batch}",
               schedules={m: schedule_text(method_config(m, s)) for m in ("ldn", "ddn")},
               schedule_note=("each network trains in its own program (its own time budget) with the reference "
                              "code's schedule (arch_uncert: LDN schedule=None, DDN schedule=[30]) and the output "
                              "block's BatchNorm statistics shared by every depth (head_norm='shared')"),
               networks=[], cut=[])
    for group in (s.slice_depths, s.slice_optional_depths):
        plan = [(m, d) for m in ("ldn", "ddn") for d in group]
        if group is s.slice_optional_depths and (s.optional_min_s is None or budget.left() < s.optional_min_s):
            why = "the dry run" if s.optional_min_s is None else f"{budget.left():.0f} s left"
            out["cut"] += [cut(f"{m} D={d}", f"optional; {why}") for m, d in plan]
            continue
        for i, (method, depth) in enumerate(plan):
            share = budget.left() / (len(plan) - i)
            if share < s.min_network_s:
                out["cut"].append(cut(f"{method} D={depth}", f"{budget.left():.0f} s left"))
                continue
            out["networks"].append(train_network(data, method, depth, s, 0.85 * share))


# ---------------------------------------------------------------------------- (iv) where the time goes


def time_split_section(s: Settings, budget: Budget, out: dict[str, Any], data, slice_out: dict[str, Any]) -> None:
    """The slice's first LDN program again (the trainer's cached compiled step): its step on a
    batch resident on the device, on host-fed batches, and the trainer's epoch per step."""
    ldn = next((n for n in slice_out.get("networks", []) if n["method"] == "ldn"), None)
    if ldn is None:
        out.update(skipped="no LDN was trained in the slice", cut=[])
        return
    d, batch, n_train = ldn["max_depth"], slice_out["effective_batch"], data.n_train
    tc = method_config("ldn", s)
    net = image_throughput.initial_states(d, batch, data.input_shape, 1, tc, n_train)
    program = image_throughput.VdjaxProgram(d, batch, data.input_shape, net, train_config=tc, n_train=n_train)
    resident = program.run_resident(s.split_steps) / s.split_steps
    host_fed = program.run(s.split_steps) / s.split_steps
    trainer = ldn["epoch_seconds_median"] / slice_out["steps_per_epoch"]
    out.update(method="ldn", max_depth=d, batch=batch, steps=s.split_steps, compile_and_warmup_s=program.compile_s,
               device_step_s=resident, host_fed_step_s=host_fed, trainer_step_s=trainer,
               trainer_epoch_s=ldn["epoch_seconds_median"], steps_per_epoch=slice_out["steps_per_epoch"],
               epochs_in_median=max(len(ldn["history"]) - 1, 1), first_epoch_only=len(ldn["history"]) < 2,
               trainer_vs_device=trainer / resident, host_fed_vs_device=host_fed / resident, cut=[],
               note=("device: the compiled step, batch resident; host fed: the same with a batch gathered on "
                     "the host and placed every step; trainer: the slice's median epoch (after the first, "
                     "which compiles) over its steps, so it also holds the per-epoch test-set evaluation"))
    log(f"  time split D={d}: device {resident * 1e3:.2f} ms, host fed {host_fed * 1e3:.2f} ms, "
        f"trainer {trainer * 1e3:.2f} ms a step")


# ---------------------------------------------------------------------------- targets


def verdict(name: str, text: str, value: float | None, threshold: float, at_least: bool, why: str = "") -> dict:
    met = None if value is None else (value >= threshold if at_least else value <= threshold)
    return {"name": name, "target": text, "threshold": threshold, "value": value, "met": met,
            **({"reason": why} if value is None else {})}


def targets(s: Settings, sections: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets against the numbers (None: not measured, with the reason)."""
    d, k = max(s.step_depths), max(s.networks)
    cnn = next((r for r in sections["cnn_step"].get("rows", []) if r["max_depth"] == d), {})
    nets = next((r for r in sections["networks_per_program"].get("rows", []) if r["networks"] == k), {})
    ldns = [n for n in sections["slice"].get("networks", []) if n["method"] == "ldn"]
    worst = max((n["entropy_fraction"] for n in ldns), default=None)
    return [
        verdict("cnn_step_speedup", f"vdjax CNN train step >= {TARGETS['cnn_step_speedup']}x PyTorch's at D = {d}",
                cnn.get("speedup"), TARGETS["cnn_step_speedup"], True, f"D = {d} not compared with PyTorch"),
        verdict("networks_vs_torch", f"{k} networks per program >= {TARGETS['networks_vs_torch']}x PyTorch's "
                "one-after-the-other throughput", nets.get("program_vs_torch"), TARGETS["networks_vs_torch"], True,
                f"K = {k} not compared with PyTorch"),
        verdict("ldn_entropy_fraction", f"every slice LDN's q(d) off uniform: entropy <= "
                f"{TARGETS['ldn_entropy_fraction']} of log(D+1)", worst, TARGETS["ldn_entropy_fraction"], False,
                "no LDN trained"),
    ]


# ---------------------------------------------------------------------------- the run


def run_section(name: str, fn: Callable[[Budget, dict[str, Any]], None], budget: Budget, res: dict[str, Any],
                path: Path) -> dict:
    """Runs `fn(budget, out)`, which fills `out` = res['sections'][name] as it goes (so a
    section that fails keeps what it measured), and writes the file."""
    out: dict[str, Any] = {"budget_s": budget.seconds}
    res["sections"][name] = out
    log(f"[{time.perf_counter() - res['_start']:5.0f} s] {name} (budget {budget.seconds:.0f} s)")
    t0 = time.perf_counter()
    try:
        fn(budget, out)
        out["status"] = "partial" if out.get("cut") else "complete"
    except Exception as err:  # noqa: BLE001  one failed section must not lose the others
        traceback.print_exc()
        out.update(status="failed", error=validate.one_line(err))
    out["wall_s"] = time.perf_counter() - t0
    write_json(path, {k: v for k, v in res.items() if not k.startswith("_")})
    return out


def output_file(text: str | os.PathLike) -> Path:
    """argparse type: a file whose directory can be written (created if missing)."""
    path = Path(text).expanduser()
    validate.output_dir(path.parent)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a directory; pass the results file's path")
    return path


def main(argv=None) -> dict[str, Any]:
    p = validate.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", "--dry-run", action="store_true", dest="tiny",
                      help="every section at tiny sizes on the CPU: checks the script, not the speed")
    p.add_argument("--data-dir", type=validate.existing_dir, default=None,
                   help="directory with Fashion-MNIST's four IDX .gz files (default: vdjax's data directories; "
                        "--tiny without them uses a synthetic set)")
    p.add_argument("--budget-s", type=validate.finite_float, default=None,
                   help="seconds for all the measurements together (default 420; --tiny 900)")
    p.add_argument("--out", type=output_file, default=None,
                   help=f"results JSON (default {DEFAULT_OUT.relative_to(ROOT)}; --tiny {TINY_OUT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    start = time.perf_counter()
    s = TINY if args.tiny else FULL
    total = args.budget_s if args.budget_s is not None else 900.0 if args.tiny else 420.0
    if total <= 0:
        raise validate.UserError(f"--budget-s must be positive, got {total:g}")
    path = args.out or output_file(TINY_OUT if args.tiny else DEFAULT_OUT)
    data = slice_data(s, args.data_dir, args.tiny)  # missing data fails here, before anything is timed
    if not args.tiny and jax.default_backend() == "cpu":
        raise validate.UserError("JAX sees no GPU (its backend is cpu): the full check is GPU work; --tiny runs "
                                 "its dry run on the CPU")
    if args.tiny and torch is not None:
        torch.set_num_threads(1)  # a loaded CPU: PyTorch's threads would only wait for each other
    budget = Budget(total, start)
    res: dict[str, Any] = {"_start": start, "tiny": args.tiny, "command": "python3 benchmarks/gpu_check.py "
                           + " ".join(sys.argv[1:] if argv is None else argv), "budget_s": total,
                           "settings": dataclasses.asdict(s), "precision": use_float32(), "sections": {}}
    run_section("environment", environment_section, budget.share(0), res, path)
    for name, fn in (("cnn_step", cnn_step_section), ("networks_per_program", networks_section)):
        run_section(name, functools.partial(fn, s), budget.share(s.shares[name] * total), res, path)
    run_section("slice", lambda b, o: slice_section(s, b, o, data),
                budget.share(budget.left() - s.shares["time_split"] * total), res, path)
    run_section("time_split", lambda b, o: time_split_section(s, b, o, data, res["sections"]["slice"]),
                budget.share(budget.left()), res, path)
    res["targets"] = targets(s, res["sections"])
    res["wall_s"] = time.perf_counter() - start
    res.pop("_start")
    written = write_json(path, res)
    for t in res["targets"]:
        log(f"target {t['name']}: {'not measured' if t['met'] is None else 'met' if t['met'] else 'not met'} "
            f"({t['value']})")
    log(f"wrote {written} in {res['wall_s']:.0f} s")
    return res


if __name__ == "__main__":
    sys.exit(validate.run_main(main))
