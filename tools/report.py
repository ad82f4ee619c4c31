"""Repository tooling, not part of the installed package: the tables of README.md,
benchmarks/RESULTS.md and docs/results/*.md, rendered from the
raw results committed in the repository, so that no number in them is typed by hand.

    python3 tools/report.py          # rewrite every marked table from its data
    python3 tools/report.py --check  # exit 1, with a diff, where a committed table differs

A table lives between `<!-- BEGIN table:NAME -->` and `<!-- END table:NAME -->` lines; `TABLES`
maps NAME to its source file (JSON, relative to the repository root) and the pure function that
renders the loaded data. A new table is one function, one `TABLES` entry and one marker pair.
`WHOLE_FILES` are rendered entirely (the benchmark's own table.md, beside its results.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import sys
from pathlib import Path
from typing import Any, Callable

from vdjax.studies.depth_demo import demo_markdown
from vdjax.studies.image_study import (ablation_markdown, cap_markdown, findings, findings_markdown, ldn_markdown,
                                      verdicts_markdown)
from vdjax.studies.spirals_study import (DDN_SCAN, REDRAWN, SCANS, SPIRALS, all_findings, committed_folder,  # noqa: F401 (REDRAWN: tests)
                                        ddn_table, findings_table, headline, scan_table, wall_times)

ROOT = Path(__file__).resolve().parents[1]  # the checkout: this tool renders its documents
DOCUMENTS = ("README.md", "benchmarks/RESULTS.md", "docs/results/nas.md", "docs/results/spirals.md",
             "docs/results/images.md", "docs/results/dun.md", "docs/results/resnet_stages.md",
             "docs/results/lm_fortunes.md")
BENCHMARK = "benchmarks/latest/results.json"  # written by `benchmarks/compare.py --out benchmarks/latest`
THROUGHPUT = "benchmarks/latest/throughput/throughput.json"  # benchmarks/image_throughput.py --out benchmarks/latest/throughput
FEED = "benchmarks/latest/feed/feed.json"  # benchmarks/trainer_feed.py --out benchmarks/latest/feed
GRID_ESTIMATE = "benchmarks/latest/throughput/grid_estimate.json"  # the same with --estimate
CNN_IDEAS = "benchmarks/latest/cnn_ideas/cnn_ideas.json"  # benchmarks/cnn_ideas.py --out benchmarks/latest/cnn_ideas
NAS_ROWS = "docs/data/nas_comparison/rows.json"  # written by `experiments/compare_search_strategies.py`
# SPIRALS: the main job (`python3 -m vdjax spirals --out docs/data/spirals`, and `--seeds 0 1 2 3 4 5 --out
# docs/data/spirals/six_seeds`) and the earlier scans; REDRAWN: the scans rerun with a data draw per repeat
# (`experiments/<scan>.py --out docs/data/spirals_redrawn/<scan>`), read wherever a scan's folder exists there.
DUN_TOY = "docs/data/dun/toy_gap.json"  # experiments/regression_toy.py --out docs/data/dun
DUN_UCI = "docs/data/dun/uci_diabetes.json"  # experiments/regression_uci.py at a4b29c8 (its diabetes default)
DUN_UCI_SUITE = "docs/data/dun/uci_quick/summary.json"  # experiments/regression_uci.py --quick --out docs/data/dun/uci_quick
DUN_UCI_FULL = "docs/data/dun/uci"  # experiments/regression_uci.py --out docs/data/dun/uci (the CPU default; per set)
DUN_SHIFT = "docs/data/dun/shift_fashion_mnist.json"  # experiments/dataset_shift.py --out docs/data/dun
IMAGE_CAP = "docs/data/images_study_cap150/summary.json"  # the study at --max-epochs 150
IMAGE_STUDY = "docs/data/images_study/summary.json"  # results/images_study4/summary.json of `scan_max_depth_images.py --study`
RESNET_STAGES = "docs/data/resnet_stages/resnet_stages_fashion_mnist.json"  # experiments/resnet_stages_fashion_mnist.py
LM_FORTUNES = "docs/data/lm_fortunes/lm_fortunes.json"  # experiments/lm_fortunes.py
GPU_CHECK = "benchmarks/gpu/gpu_check.json"  # benchmarks/gpu_check.py on an NVIDIA H200
GPU_CHECK_COMMAND = "PYTHONPATH=. python3 benchmarks/gpu_check.py --data-dir data/fashion_mnist --budget-s 420"

_REGION = re.compile(r"^<!-- BEGIN table:(?P<name>[\w-]+) -->\n(?P<body>.*?)^<!-- END table:(?P=name) -->$",
                     re.S | re.M)


# ---------------------------------------------------------------------------- benchmarks


def _f(row: dict[str, Any], key: str, spec: str, suffix: str = "") -> str:
    """A formatted value, or '-' where the run did not measure it (no PyTorch, say)."""
    return format(row[key], spec) + suffix if row.get(key) is not None else "-"


def _ratio(num: float | None, den: float | None) -> str:
    return "-" if num is None or den is None else f"{num / den:.1f}x"


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table with right-aligned (numeric) columns."""
    return ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def machine_line(res: dict[str, Any]) -> str:
    return f"Machine: {res['machine']}. Command: `{res['command']}`."


def cnn_table(res: dict[str, Any]) -> str:
    """CNN train step per max depth, and how compile time grows from the shallowest to the deepest."""
    rows = [[str(r["max_depth"]), f"{r['vdjax_ex_s']:.1f}", _f(r, "torch_ex_s", ".1f"), _f(r, "speedup", ".2f", "x"),
             f"{r['vdjax_step_s']:.3f}", _f(r, "torch_step_s", ".3f"), f"{r['vdjax_compile_s']:.2f}"]
            for r in res["cnn"]]
    lines = _grid(["max_depth", "vdjax ex/s", "PyTorch ex/s", "vdjax / PyTorch", "vdjax step s", "PyTorch step s",
                   "vdjax compile s"], rows)
    lo, hi = _compile_depths(res)
    lines += ["", f"Compile time D={hi['max_depth']} / D={lo['max_depth']}: **{_compile_ratio(res):.2f}x**"]
    return "\n".join(lines) + "\n"


def _compile_depths(res: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    rows = sorted(res["cnn"], key=lambda r: r["max_depth"])
    return rows[0], rows[-1]


def _compile_ratio(res: dict[str, Any]) -> float:
    lo, hi = _compile_depths(res)
    return hi["vdjax_compile_s"] / lo["vdjax_compile_s"]


def spirals_work(s: dict[str, Any]) -> dict[str, float]:
    """The end-to-end run's work, which differs between the frameworks (their seeds stop at
    different epochs): seed-epochs trained, seconds per seed-epoch, and the per-seed-epoch ratio."""
    out = {"vdjax_seed_epochs": sum(s["vdjax_epochs"])}
    out["vdjax_ms_per_seed_epoch"] = 1e3 * s["vdjax_s"] / out["vdjax_seed_epochs"]
    if s.get("torch_epochs") is not None:
        out["torch_seed_epochs"] = sum(s["torch_epochs"])
        out["torch_ms_per_seed_epoch"] = 1e3 * s["torch_s"] / out["torch_seed_epochs"]
        out["per_seed_epoch_speedup"] = out["torch_ms_per_seed_epoch"] / out["vdjax_ms_per_seed_epoch"]
    return out


def spirals_table(res: dict[str, Any]) -> str:
    """The spirals protocol end to end, with the work each framework did; and, where the run
    measured them (`spirals_fixed_epochs`: [{seeds, max_epochs, vdjax_s, vdjax_s_no_compile,
    torch_s}], no early stopping), runs of equal work: every seed trains exactly `max_epochs`
    epochs in both frameworks."""
    s = res["spirals"]
    w = spirals_work(s)
    lines = [f"End to end: {s['seeds']} seeds, max_depth {s['max_depth']}, early stopping (each seed stops on "
             "its own).", ""]
    lines += _grid(["vdjax s (compile incl.)", "vdjax s (compiled)", "PyTorch s", "vdjax / PyTorch",
                    "seed-epochs vdjax", "seed-epochs PyTorch", "ms per seed-epoch vdjax", "ms per seed-epoch PyTorch",
                    "vdjax / PyTorch per seed-epoch"],
                   [[f"{s['vdjax_s']:.1f}", f"{s['vdjax_s_no_compile']:.1f}", _f(s, "torch_s", ".1f"),
                     _f(s, "speedup", ".1f", "x"), str(w["vdjax_seed_epochs"]), _f(w, "torch_seed_epochs", "d"),
                     f"{w['vdjax_ms_per_seed_epoch']:.2f}", _f(w, "torch_ms_per_seed_epoch", ".2f"),
                     _f(w, "per_seed_epoch_speedup", ".1f", "x")]])
    lines += ["", f"Epochs per seed: vdjax {s['vdjax_epochs']}, PyTorch {s.get('torch_epochs', '-')}."]
    if res.get("spirals_fixed_epochs"):
        ms = lambda r, k: 1e3 * r[k] / r["max_epochs"] if r.get(k) is not None else None  # noqa: E731
        lines += ["", "Equal work: every seed trains exactly the same number of epochs in both frameworks (no early "
                  "stopping).", ""]
        lines += _grid(["seeds", "epochs", "vdjax s (compile incl.)", "vdjax s (compiled)", "PyTorch s",
                        "vdjax / PyTorch", "vdjax / PyTorch (compiled)", "vdjax ms/epoch (compiled)",
                        "PyTorch ms/epoch"],
                       [[str(r["seeds"]), str(r["max_epochs"]), f"{r['vdjax_s']:.1f}", f"{r['vdjax_s_no_compile']:.1f}",
                         _f(r, "torch_s", ".1f"), _ratio(r.get("torch_s"), r["vdjax_s"]),
                         _ratio(r.get("torch_s"), r["vdjax_s_no_compile"]), f"{ms(r, 'vdjax_s_no_compile'):.2f}",
                         "-" if ms(r, "torch_s") is None else f"{ms(r, 'torch_s'):.2f}"]
                        for r in res["spirals_fixed_epochs"]])
    return "\n".join(lines) + "\n"


def rerun_table(res: dict[str, Any]) -> str:
    """The main job run twice from a cold persistent compilation cache (`benchmarks/compare.py`)."""
    r = res.get("rerun")
    if r is None:
        return "Not measured in this run.\n"
    return "\n".join([f"`{r['command']}`, each run a new process, the cache empty before the first:", ""] + _grid(
        ["first run s (compiles)", "second run s (cache)", "second / first", "cached programs"],
        [[f"{r['first_s']:.1f}", f"{r['second_s']:.1f}", f"{r['second_vs_first']:.2f}", str(r["cache_files"])]])) + "\n"


def pruned_table(res: dict[str, Any]) -> str:
    p = res["pruned"]
    torch_ms = (f" ({p['torch_pruned_s'] * 1e3:.0f} / {p['torch_full_s'] * 1e3:.0f} ms)"
                if p.get("torch_full_s") is not None else "")
    return "\n".join(_grid(
        ["max_depth", "d_opt", "batch", "ideal (d_opt+1)/(D+1)", "vdjax pruned/full", "vdjax vs ideal",
         "PyTorch pruned/full"],
        [[str(p["max_depth"]), str(p["d_opt"]), str(res["infer_batch"]), f"{p['ideal_ratio']:.3f}",
          f"{p['vdjax_ratio']:.3f} ({p['vdjax_pruned_s'] * 1e3:.0f} / {p['vdjax_full_s'] * 1e3:.0f} ms)",
          f"**{p['vdjax_vs_ideal']:.2f}x**", _f(p, "torch_ratio", ".3f") + torch_ms]])) + "\n"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def targets_table(res: dict[str, Any]) -> str:
    """The benchmark's targets against this run."""
    cnn = {r["max_depth"]: r for r in res["cnn"] if r.get("speedup") is not None}
    s, p = res["spirals"], res["pruned"]
    lines = ["| target | result |", "|---|---|"]
    if 20 in cnn and 50 in cnn:
        a, b = cnn[20]["speedup"], cnn[50]["speedup"]
        lines.append(f"| CNN train step ≥ 1.5x PyTorch at D=20 and D=50 | {_met(min(a, b) >= 1.5)}: {a:.2f}x and "
                     f"{b:.2f}x |")
    lo, hi = _compile_depths(res)
    lines.append(f"| compile time D={hi['max_depth']} ≤ 1.5x D={lo['max_depth']} | "
                 f"{_met(_compile_ratio(res) <= 1.5)}: {_compile_ratio(res):.2f}x |")
    if s.get("speedup") is not None:
        no_compile = s["torch_s"] / s["vdjax_s_no_compile"]
        per_epoch = spirals_work(s)["per_seed_epoch_speedup"]
        equal = [r for r in res.get("spirals_fixed_epochs", []) if r["seeds"] == s["seeds"] and r.get("torch_s")]
        equal_text = "".join(f"; equal work, {r['seeds']} seeds x {r['max_epochs']} epochs: "
                             f"{r['torch_s'] / r['vdjax_s']:.1f}x" for r in equal)
        lines.append(f"| spirals end to end ≥ 20x PyTorch | {_met(s['speedup'] >= 20)}: {s['speedup']:.1f}x "
                     f"({no_compile:.1f}x excluding compile; unequal work: {per_epoch:.1f}x per seed-epoch"
                     f"{equal_text}) |")
    lines.append(f"| pruned inference within 15% of ideal | {_met(p['vdjax_vs_ideal'] <= 1.15)}: "
                 f"{p['vdjax_vs_ideal']:.2f}x ideal |")
    return "\n".join(lines) + "\n"


def benchmark_summary(res: dict[str, Any]) -> str:
    """README's one-paragraph digest of the benchmark."""
    s, p = res["spirals"], res["pruned"]
    cnn = [r["speedup"] for r in res["cnn"] if r.get("speedup") is not None]
    lo, hi = _compile_depths(res)
    out = [f"On {res['machine']}:"]
    if s.get("speedup") is not None:
        w = spirals_work(s)
        out.append(f"the spirals protocol for {s['seeds']} seeds runs {s['speedup']:.1f}x faster end to end than "
                   f"PyTorch's per-step loop ({s['vdjax_s']:.1f} s vs {s['torch_s']:.1f} s), but its seeds ran "
                   f"{w['vdjax_seed_epochs']} epochs in vdjax against {w['torch_seed_epochs']} in PyTorch, so per "
                   f"seed-epoch the ratio is {w['per_seed_epoch_speedup']:.1f}x;")
    out.append(f"compile time is flat in depth (D={hi['max_depth']}: {_compile_ratio(res):.2f}x "
               f"D={lo['max_depth']});")
    out.append(f"pruned inference costs {p['vdjax_vs_ideal']:.2f}x the ideal (d_opt+1)/(D+1)")
    if cnn:
        out[-1] += ";"
        out.append(f"the CNN train step is {min(cnn):.2f}–{max(cnn):.2f}x PyTorch's.")
    else:
        out[-1] += "."
    return " ".join(out) + "\n"


def benchmark_markdown(res: dict[str, Any]) -> str:
    """Every benchmark table of one run, as `benchmarks/compare.py` prints and saves it."""
    return "\n".join([
        machine_line(res), "",
        f"### CNN LDN train step (batch {res['batch']}, {'x'.join(map(str, res['shape']))} inputs)", "",
        cnn_table(res), "### Spirals, the full protocol", "", spirals_table(res),
        "### Rerunning the main job (persistent compilation cache)", "", rerun_table(res),
        "### Pruned inference (eval forward)", "", pruned_table(res), "### Targets", "", targets_table(res),
    ])


def throughput_table(res: dict[str, Any]) -> str:
    """`benchmarks/image_throughput.py`: network-steps per second per setting, and the ratios."""
    peers = res["torch_peers"]
    head = ["networks K", "vdjax K per program", "vdjax one after the other"]
    head += [f"PyTorch {p.replace('x', ' proc x ')} thr" for p in peers]
    head += ["program / one after the other"] + (["program / best PyTorch"] if peers else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in res["rows"]:
        cells = [str(r["networks"]), f"{r['vdjax_program']:.2f}", f"{r['vdjax_sequential']:.2f}"]
        cells += [f"{r[f'torch_{p}']:.2f}" for p in peers]
        cells += [f"{r['program_vs_sequential']:.2f}x"] + ([f"{r['program_vs_torch_best']:.2f}x"] if peers else [])
        lines.append("| " + " | ".join(cells) + " |")
    s = res["settings"]
    return (f"Network-steps per second, reference CNN LDN at D = {s['depth']}, batch {s['batch']}, "
            f"{'x'.join(map(str, s['shape']))} inputs, {s['steps']} steps per network per round, median of "
            f"{s['rounds']} interleaved rounds; vdjax on {res['devices']} XLA device(s). Target: >= 1.5x the best "
            f"PyTorch peer.\n\n" + "\n".join(lines) + "\n")


def feed_table(res: dict[str, Any]) -> str:
    """`benchmarks/trainer_feed.py`: the image epoch and the spirals loop before and after the
    one driver with the data on the device."""
    s, sp = res["settings"], res["spirals"]
    lines = ["| D | before: s/epoch | dispatches | transfers | host feed: s/epoch | same numbers as before | "
             "device feed: s/epoch | dispatches | transfers | before / device |", "|" + "---:|" * 10]
    for r in res["rows"]:
        lines.append(f"| {r['max_depth']} | {r['before_epoch_s']:.3f} | {r['before_dispatches']:.0f} | "
                     f"{r['before_transfers']:.0f} | {r['host_epoch_s']:.3f} | "
                     f"{'yes' if r['host_matches_before'] else 'no'} | {r['device_epoch_s']:.3f} | "
                     f"{r['device_dispatches']:.0f} | {r['device_transfers']:.0f} | {r['device_vs_before']:.2f}x |")
    env = res["environment"]
    return (f"One program of an LDN and a DDN (reference CNN), {s['data']} cut to {s['train_images']} images (10% held "
            f"out for early stopping: {s['steps_per_epoch']} steps of batch {s['batch']} per epoch), median of the "
            f"epochs after the first of {s['rounds']} runs of {s['epochs']} epochs; `before` is commit "
            f"{res['before_commit'][:7]}. {env['devices']} XLA device(s), {env.get('cpu_isa', '?')}, load average "
            f"{res['load_average']['before']:.1f} at the start and {res['load_average']['after']:.1f} at the end.\n\n"
            + "\n".join(lines) + "\n\n"
            f"Spirals, equal work ({sp['seeds']} seeds, {sp['epochs']} epochs each, compiled, median of "
            f"{s['rounds']}): before {sp['before_ms_per_epoch']:.2f} ms per epoch, after "
            f"{sp['after_ms_per_epoch']:.2f} ms; best losses {'identical' if sp['identical'] else 'different'}.\n")


def grid_estimate_text(est: dict[str, Any]) -> str:
    """`benchmarks/image_grid_estimate.py --flops`: the paper grid's FLOP count and GPU hours,
    labelled as the estimate it is."""
    depths = est["networks"] // 24  # 3 data sets x LDN + DDN x 4 repeats per max depth
    lines = [f"ESTIMATE (FLOP count, not a measurement): the paper's image grid, {est['networks']} networks "
             f"(3 data sets x {depths} max depths x LDN + DDN x 4 repeats), batch {est['batch']}, an assumed mean "
             f"of {est['epochs_assumed']} epochs per network (early stopping; the cap is 500), one test-set "
             "evaluation per epoch"]
    for shape, v in est["flops_per_shape"].items():
        (t0, tb), (f0, fb) = v["train_step"], v["forward_batch"]
        lines.append(f"  {shape}: train step {t0 / 1e9:.1f} + {tb / 1e9:.2f} * D GFLOP, evaluation "
                     f"{f0 / 1e9:.1f} + {fb / 1e9:.2f} * D GFLOP per batch of {est['batch']}")
    for name, f in est["epoch_flops_per_dataset"].items():
        lines.append(f"  {name}: one epoch of every depth, one network each: {f / 1e15:.2f} PFLOP")
    lines.append(f"  total: {est['total_flops'] / 1e18:.2f} EFLOP")
    for g in est["gpus"]:
        hours = est["gpu_hours"][g["name"]]
        lines.append(f"  {g['name']} ({g['peak_tflops']:g} TFLOP/s dense peak, assumed utilisation "
                     f"{100 * g['utilisation']:.0f}%): "
                     + ", ".join(f"{n} GPU{'s' if int(n) > 1 else ''} {h:,.1f} h" for n, h in hours.items()))
    cap = est["total_flops"] * 500 / est["epochs_assumed"]
    lines.append(f"  every network to the 500-epoch cap: {cap / 1e18:.2f} EFLOP "
                 f"({500 / est['epochs_assumed']:.1f}x the above)")
    return "\n".join(lines) + "\n"


IDEA_NAMES = {"im2col": "im2col, K = 288 (the library's form)", "rows3": "3 shifted products, K = 96",
              "native_vjp": "native convolution, custom VJP", "halves": "two half-batch chains, shared BN moments",
              "no_conv": "no 3x3 convolution (a bound)"}


def cnn_ideas_table(res: dict[str, Any]) -> str:
    """`benchmarks/cnn_ideas.py`: each idea's block-stack step, and the library's and PyTorch's whole
    steps, per max depth, with the ratio to the im2col form measured in the same rounds."""
    rows = res["rows"]
    head = ["idea"] + [h for r in rows for h in (f"D={r['max_depth']} s", f"vs im2col at D={r['max_depth']}")]
    names = [n for n in rows[0]["seconds"] if n not in ("library step", "PyTorch step")]
    cells = []
    for n in names:
        c = [IDEA_NAMES.get(n, n)]
        for r in rows:
            t = r["seconds"]
            c += [f"{t[n]:.3f}", f"{t['im2col'] / t[n]:.2f}x"]
        cells.append(c)
    lines = _grid(head, cells)
    for r in rows:
        t = r["seconds"]
        if "PyTorch step" in t:
            lines.append(f"\nD={r['max_depth']}: the library's whole train step {t['library step']:.3f} s, PyTorch's "
                         f"{t['PyTorch step']:.3f} s: vdjax runs at **{t['PyTorch step'] / t['library step']:.2f}x** "
                         f"PyTorch's speed; with no 3x3 convolution at all the block stack alone would be "
                         f"{t['PyTorch step'] / t['no_conv']:.2f}x.")
    lines.append("\nLargest difference from the im2col form's loss and gradients, relative to their largest value: "
                 + ", ".join(f"{IDEA_NAMES[k].split(',')[0]} {v:.0e}" for k, v in res["check"].items()) + ".")
    return (f"Seconds per step (gradient of the block stack; batch {res['batch']}, "
            f"{'x'.join(map(str, res['shape']))} inputs), median of {res['rounds']} interleaved rounds; "
            f"{res['machine']}.\n\n" + "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------- depth uncertainty (DUN)


def dun_method_label(name: str, res: dict[str, Any], d_opt: Any = None) -> str:
    """A results file's method key as the README names it (a method added later shows its key)."""
    labels = {"ldn": f"LDN (d_opt = {d_opt})" if d_opt is not None else "LDN", "ldn_full": "LDN full", "ddn": "DDN",
              "ensemble": f"ensemble ({res.get('ensemble_size', 5)})",
              "dropout": f"MC dropout ({res.get('dropout_samples', '?')})",
              "mfvi": f"MFVI ({res.get('mfvi_samples', '?')})"}
    return labels.get(name, name)


def _minus(x: float, spec: str) -> str:
    return format(x, spec).replace("-", "−")


def dun_toy_table(res: dict[str, Any]) -> str:
    """`experiments/regression_toy.py`: fit, predictive std per region and test-time cost per method."""
    q = ", ".join(f"{v:.2f}" for v in res["q"])
    mc = res["model_config"]
    width, depth = re.search(r"width=(\d+)", mc)[1], re.search(r"max_depth=(\d+)", mc)[1]
    head = (f"**Toy gap set** ({res['n_train']} train / {res['n_test']} test points, width {width}, D = {depth}; "
            f"q(d) = {q}, d_opt = {res['d_opt']}). Median predictive std (data units) over a 400-point grid in each "
            f"region; test-time cost for {res['n_test']} points (`toy_gap.json`: `test`, `predictive_std`, "
            "`test_time_seconds`):\n\n")
    rows = []
    for name, t in res["test"].items():
        std = res["predictive_std"][name]
        rows.append([dun_method_label(name, res, res["d_opt"]), _minus(t["log_lik"], ".3f"), f"{t['rmse']:.3f}",
                     f"{std['data']:.2f}", f"{std['gaps']:.2f}", f"{std['outside']:.2f}" if std["outside"] < 100 else f"{std['outside']:.0f}",
                     f"{1e3 * res['test_time_seconds'][name]:.1f}"])
    table = ["| method | test LL | RMSE | std in data | std in gaps | std outside | predict (ms) |",
             "|---|---|---|---|---|---|---|", *("| " + " | ".join(r) + " |" for r in rows)]
    return head + "\n".join(table) + "\n"


def dun_uci_table(res: dict[str, Any]) -> str:
    """`experiments/regression_uci.py` (diabetes by default): mean ± std over splits per method."""
    d_opts = sorted({s.get("d_opt") for s in res.get("per_split", []) if s.get("d_opt") is not None})
    d_opt = d_opts[0] if len(d_opts) == 1 else ", ".join(map(str, d_opts)) or None
    n_test = res.get("per_split", [{}])[0].get("n_test")
    rows = []
    for name, m in res["summary"].items():
        label = dun_method_label(name, res, d_opt)
        if name == "ldn" and len(d_opts) == 1:
            label = f"LDN (d_opt = {d_opt} on every split)"
        rows.append([label, f"{_minus(m['log_lik_mean'], '.3f')} ± {m['log_lik_std']:.3f}",
                     f"{m['rmse_mean']:.1f} ± {m['rmse_std']:.1f}", f"{1e3 * m['test_time_seconds_mean']:.2f}"])
    cost = f"predict (ms, {n_test} points)" if n_test else "predict (ms)"
    table = [f"| method | test LL | RMSE | {cost} |", "|---|---|---|---|", *("| " + " | ".join(r) + " |" for r in rows)]
    return "\n".join(table) + "\n"


def _suite_labels(summary: dict[str, Any]) -> dict[str, str]:
    hp = summary["suite"]["hyperparameters"]
    res = {"ensemble_size": hp["ensemble_size"], "dropout_samples": hp["samples"], "mfvi_samples": hp["samples"]}
    kind = next(k for k in ("standard", "gap") if k in summary)
    methods = list(next(iter(summary[kind]["sets"].values())))
    return {m: dun_method_label(m, res) for m in methods}


def _suite_setting(summary: dict[str, Any], kind: str) -> str:
    hp, part = summary["suite"]["hyperparameters"], summary[kind]
    splits = sorted({len(v) for v in part["splits"].values()})
    run = {"quick": "the `--quick` run", "cpu_default": "the CPU default", "paper": "the `--paper` run"}
    return (f"{run.get(summary['suite']['mode'], summary['suite']['mode'])}: {len(part['sets'])} sets, "
            f"{'/'.join(map(str, splits))} {kind} split(s) each, width {hp['width']}, D = {hp['max_depth']}, "
            f"{_epoch_cap(hp)} (patience {hp['patience']}), fixed untuned hyperparameters")


def _epoch_cap(hp: dict[str, Any]) -> str:
    """The suite's epoch cap as `SuiteConfig.epochs_for` sets it: per set when steps are capped."""
    if hp.get("max_steps") is None:
        return f"at most {hp['max_epochs']} epochs"
    return (f"an epoch cap per set of min({hp['max_epochs']}, ⌈{hp['max_steps']} / batches per epoch⌉), "
            f"so at most about {hp['max_steps']} gradient steps per network")


def _suite_grid(summary: dict[str, Any], kind: str, cell: Callable[[dict[str, Any]], str], rank: bool) -> str:
    labels, part = _suite_labels(summary), summary[kind]
    rows = [[name, *(cell(agg[m]) for m in labels)] for name, agg in part["sets"].items()]
    if rank:
        from vdjax.studies.uci_benchmark import FULL_RANKED, mean_ranks

        for what, ranks in (("mean rank (pruned LDN)", part["mean_rank"]),
                            ("mean rank (full LDN)", mean_ranks(part["sets"], FULL_RANKED))):
            rows.append([what, *(f"{ranks[m]:.2f}" if m in ranks else "" for m in labels)])
    return "\n".join(_grid(["set", *labels.values()], rows))


def _ll_cell(m: dict[str, Any]) -> str:
    return f"{_minus(m['log_lik_mean'], '.2f')} ± {m['log_lik_se']:.2f}"


def _rmse_cell(m: dict[str, Any]) -> str:
    return f"{m['rmse_mean']:.3g} ± {m['rmse_se']:.2g}"


def dun_uci_suite_table(summary: dict[str, Any]) -> str:
    """`experiments/regression_uci.py`: standard splits, test LL and RMSE per set and method (mean
    ± standard error over splits, data units), DUN's mean rank (by mean test LL) and the cost."""
    labels, part = _suite_labels(summary), summary["standard"]
    cost = {m: sum(agg[m]["cost_vs_ddn_mean"] for agg in part["sets"].values()) / len(part["sets"]) for m in labels}
    cache = ("compilation cache off" if summary.get("compilation_cache") is None
             else "programs possibly loaded from the compilation cache")
    return (f"Test log-likelihood, {_suite_setting(summary, 'standard')} (mean ± standard error over splits; "
            f"`summary.json`: `standard`):\n\n{_suite_grid(summary, 'standard', _ll_cell, True)}\n\n"
            f"Test RMSE (data units):\n\n{_suite_grid(summary, 'standard', _rmse_cell, False)}\n\n"
            "Prediction cost relative to the DDN's (mean over sets and splits): "
            + ", ".join(f"{labels[m]} {cost[m]:.1f}x" for m in labels)
            + f". The whole run took {summary['wall_seconds']:.0f} s (`wall_seconds`; {cache}).\n")


def dun_uci_gap_table(summary: dict[str, Any]) -> str:
    """`experiments/regression_uci.py`: gap splits, the test LL on the held-out gap per set and method."""
    return (f"Log-likelihood of the held-out gap, {_suite_setting(summary, 'gap')} (mean ± standard error "
            f"over gap splits; `summary.json`: `gap`):\n\n{_suite_grid(summary, 'gap', _ll_cell, True)}\n")


def load_uci_suite(folder: Path) -> dict[str, Any]:
    """The suite's per-set files ({set: record}) and a summary of them (sets still running left out)."""
    from vdjax.io import read_json
    from vdjax.studies.uci_benchmark import summarise

    per_set = {p.stem.removeprefix("uci_"): read_json(p) for p in sorted(folder.glob("uci_*.json"))}
    return {"per_set": per_set, "summary": summarise(per_set)}


def _sets_done(suite: dict[str, Any]) -> str:
    from vdjax.data.regression import UCI_SETS

    done = suite["summary"]["sets_done"]
    return ("every set" if len(done) == len(UCI_SETS) else
            f"**{len(done)} of {len(UCI_SETS)} sets so far** ({', '.join(done)}; the others have not run yet)")


def dun_uci_full_table(suite: dict[str, Any]) -> str:
    return f"Sets: {_sets_done(suite)}.\n\n" + dun_uci_suite_table(suite["summary"]).replace(
        "`summary.json`: `standard`", "`uci_<set>.json`: `standard.summary`")


def dun_uci_full_gap_table(suite: dict[str, Any]) -> str:
    return dun_uci_gap_table(suite["summary"]).replace("`summary.json`: `gap`", "`uci_<set>.json`: `gap.summary`")


def dun_uci_verdicts(suite: dict[str, Any]) -> str:
    """Each DUN finding the suite tests, for the pruned and the full LDN separately: one table per
    finding, LDN and baseline, a row per set (`vdjax.studies.uci_benchmark.suite_verdicts`)."""
    from vdjax.studies import claims
    from vdjax.studies.uci_benchmark import suite_verdicts

    out = []
    for v in suite_verdicts(suite["per_set"]):
        head = f"**{v['statement']}** (per set, n = splits"
        if "cost" in v:
            (ldn, c_ldn), (_, c_ens) = v["cost"].items()
            name = "LDN full" if ldn == "ldn_full" else "LDN"
            head += f"; prediction cost relative to the DDN, mean over sets: {name} {c_ldn:.1f}x, ensemble {c_ens:.1f}x"
        tally = ", ".join(f"{k} on {n}" for k, n in claims.tally(v["rows"]).items())
        out.append(f"{head}). Sets: {tally} of {len(v['rows'])}.\n\n{claims.table(v['rows'], first='set')}")
    return "\n".join(out)


def dun_uci_caps(suite: dict[str, Any]) -> str:
    """The suite's epoch cap per set and kind of split, and how many networks stopped at it."""
    from vdjax.studies.uci_benchmark import epoch_caps

    rows = epoch_caps(suite["per_set"])
    methods = list(dict.fromkeys(m for r in rows for m in r["networks"]))
    label = {"ldn": "LDN", "ddn": "DDN + ensemble members", "dropout": "MC dropout", "mfvi": "MFVI"}
    body = [[r["set"], r["kind"], "/".join(map(str, r["caps"])),
             *(f"{r['at_cap'].get(m, 0)} of {r['networks'].get(m, 0)}" for m in methods),
             f"{sum(r['at_cap'].values())} of {sum(r['networks'].values())}"] for r in rows]
    return ("Epoch cap per set (`max_epochs` of each split's record) and the networks that stopped at it rather than "
            "by patience (`training.*.stopped`):\n\n"
            + "\n".join(_grid(["set", "splits", "epoch cap", *(f"{label.get(m, m)}: at the cap" for m in methods),
                               "all networks: at the cap"], body)) + "\n")


def dun_shift_table(res: dict[str, Any]) -> str:
    """`experiments/dataset_shift.py`: metrics at 0, 90 and 180 degrees, OOD AUROC and test-time
    cost per method, then each metric averaged over every angle."""
    n_test, ood = res["n_test"], list(res["n_ood"])
    ood_names = [o.replace("fashion_mnist_held_out_classes", "held-out classes") for o in ood]
    rows, means = [], []
    for name, curve in res["rotation"].items():
        at = {p["angle"]: p for p in curve}
        cells = [dun_method_label(name, res)]
        for angle, keys in ((0, ("log_lik", "error", "ece", "brier")), (90, ("log_lik", "error", "ece", "brier")),
                            (180, ("log_lik",))):
            p = at[angle]
            cells += [_minus(p[k], ".2f") if k in ("log_lik", "error", "brier") else f"{p[k]:.3f}" for k in keys]
        cells += [f"{res['ood_auroc'][name][o]:.3f}" for o in ood] + [f"{res['test_time_seconds'][name]:.2f}"]
        rows.append(cells)
        mean = {k: sum(p[k] for p in curve) / len(curve) for k in ("log_lik", "error", "ece", "brier")}
        means.append([dun_method_label(name, res), _minus(mean["log_lik"], ".2f"), f"{mean['error']:.2f}",
                      f"{mean['ece']:.3f}", f"{mean['brier']:.2f}"])
    angles = sorted(p["angle"] for p in next(iter(res["rotation"].values())))
    table = ["| method | LL 0° | err 0° | ECE 0° | Brier 0° | LL 90° | err 90° | ECE 90° | Brier 90° | LL 180° | "
             + "".join(f"OOD AUROC ({o}) | " for o in ood_names) + f"predict (s, {n_test} images) |",
             "|---|" + "---|" * (10 + len(ood)),
             *("| " + " | ".join(r) + " |" for r in rows), "",
             f"Averaged over the {len(angles)} angles ({angles[0]}–{angles[-1]}°):", "",
             "| method | LL | error | ECE | Brier |", "|---|---|---|---|---|", *("| " + " | ".join(r) + " |" for r in means)]
    return "\n".join(table) + "\n"


# ---------------------------------------------------------------------------- NAS comparison


def nas_table(rows: list[dict[str, Any]]) -> str:
    from vdjax.studies.search_compare import markdown_table, summary_table

    return markdown_table(summary_table(rows))


def nas_verdicts(rows: list[dict[str, Any]]) -> str:
    from vdjax.studies import claims
    from vdjax.studies.search_compare import verdict_rows

    return claims.table(verdict_rows(rows), first="data: strategy", said="the page says")


def nas_setting(rows: list[dict[str, Any]]) -> str:
    """What the committed comparison ran: data sets, depth, seeds, and its search/training sizes."""
    out = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == name]
        steps = max(r["search_steps"] for r in rs if r["strategy"] not in ("ldn", "grid"))
        out.append(f"{name}: max_depth {rs[0]['max_depth']}, {len(set(r['seed'] for r in rs))} seeds, "
                   f"{steps} search steps")
    return "Committed run: " + "; ".join(out) + ".\n"


def nas_costs(rows: list[dict[str, Any]]) -> str:
    """Per data set, the LDN's cost against the searches' (search plus final training, means over seeds)."""
    from vdjax.studies.search_compare import summary_table

    lines = []
    table = summary_table(rows)
    for name in dict.fromkeys(e["dataset"] for e in table):
        es = {e["strategy"]: e for e in table if e["dataset"] == name}
        ldn, others = es.get("ldn"), [e for k, e in es.items() if k != "ldn"]
        span = lambda key, spec: "–".join(format(f(e[key] for e in others), spec) for f in (min, max))  # noqa: E731
        line = f"- {name}:"
        if ldn is not None:
            line += (f" the LDN {ldn['gradient_evaluations']:.0f} gradient evaluations, {ldn['seconds']:.0f} s "
                     f"({ldn['seconds_no_compile']:.0f} s without compiling);")
        if others:
            line += (f" the other strategies {span('gradient_evaluations', '.0f')} gradient evaluations and "
                     f"{span('forward_passes', '.0f')} forward passes, {span('seconds', '.0f')} s "
                     f"({span('seconds_no_compile', '.0f')} s without compiling)")
        if "grid" in es:
            g = es["grid"]
            line += (f"; the grid search alone {g['gradient_evaluations']:.0f} gradient evaluations, "
                     f"{g['seconds']:.0f} s ({g['seconds_no_compile']:.0f} s without compiling)")
        lines.append(line.rstrip(";") + ".")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- the GPU check


def demo_not_run(script: str) -> str:
    return f"Not run yet: `python3 {script}` writes the results file this page renders.\n"


def gpu_check_not_run() -> str:
    return (f"The GPU check has not been run yet: `{GPU_CHECK_COMMAND}` on the H200, with Fashion-MNIST's files "
            f"copied into data/fashion_mnist, measures what renders here from `{GPU_CHECK}` (the script's "
            "docstring has the steps).\n")


def _gpu_machine(res: dict[str, Any]) -> str:
    env = res["sections"].get("environment", {})
    gpus = (env.get("gpu") or {}).get("gpus") or [{}]
    v = env.get("versions", {})
    gpu = gpus[0].get("name") or env.get("device_kind", "?")
    driver = f", driver {gpus[0]['driver_version']}" if gpus[0].get("driver_version") else ""
    cuda = f" (CUDA {v['torch_cuda']})" if v.get("torch_cuda") else ""
    torch = f", torch {v['torch']}{cuda}" if v.get("torch") else ", no torch"
    tiny = "**Dry run (`--tiny`, CPU): these numbers check the script, not the speed.** " if res.get("tiny") else ""
    return (f"{tiny}Machine: {gpu}{driver} ({env.get('device_count', '?')} device(s), {env.get('backend', '?')}); "
            f"jax {v.get('jax')}, jaxlib {v.get('jaxlib')}, flax {v.get('flax')}, optax {v.get('optax')}{torch}. "
            f"Precision: {res['precision']['dtype']}, {res['precision']['note']}. Command: `{res['command']}` "
            f"({res.get('wall_s', 0):.0f} s, budget {res['budget_s']:.0f} s).")


def _cuts(section: dict[str, Any]) -> list[str]:
    """What a section could not do, as lines under its table."""
    notes = [f"The section failed: {section.get('error')}."] if section.get("status") == "failed" else []
    notes += [f"PyTorch not compared: {section['torch_skipped']}."] if section.get("torch_skipped") else []
    errors = [section.get("torch_error")] + [r.get("torch_error") for r in section.get("rows", [])]
    notes += [f"PyTorch failed: {e}." for e in errors if e]
    cuts = section.get("cut") or []
    notes += ["Cut: " + "; ".join(f"{c['item']} ({c['reason']})" for c in cuts) + "."] if cuts else []
    return [line for note in notes for line in ("", note)]


def gpu_check_markdown(res: dict[str, Any]) -> str:
    """`benchmarks/gpu_check.py`'s results: one table per section, and its targets."""
    sec = res["sections"]
    out = [_gpu_machine(res), ""]
    c = sec.get("cnn_step", {})
    rows = [[str(r["max_depth"]), f"{1e3 * r['vdjax_step_s']:.2f}",
             "-" if r.get("torch_step_s") is None else f"{1e3 * r['torch_step_s']:.2f}",
             _f(r, "speedup", ".2f", "x"), f"{r['vdjax_compile_s']:.1f}"] for r in c.get("rows", [])]
    out += [f"**CNN LDN train step** (batch {c.get('batch')}, {'x'.join(map(str, c.get('shape', [])))} inputs, "
            f"median of {c.get('repeats')} steps after {c.get('warmup')} warm-up; PyTorch on {c.get('torch_device')}):",
            "", *_grid(["max_depth", "vdjax step ms", "PyTorch step ms", "vdjax / PyTorch", "vdjax compile s"], rows),
            *_cuts(c), ""]
    n = sec.get("networks_per_program", {})
    rows = [[str(r["networks"]), f"{r['vdjax_program']:.1f}", _f(r, "torch_sequential", ".1f"),
             _f(r, "program_vs_torch", ".2f", "x"), _f(r, "program_vs_one_network", ".2f", "x")]
            for r in n.get("rows", [])]
    out += [f"**Networks per program** (network-steps/s, D = {n.get('max_depth')}, batch {n.get('batch')}, "
            f"median of {n.get('rounds')} rounds of {n.get('steps_per_round')} steps a network):", "",
            *_grid(["networks K", "vdjax, K in one program", "PyTorch, one after the other", "vdjax / PyTorch",
                    "vdjax K / vdjax 1"], rows), *_cuts(n), ""]
    sl = sec.get("slice", {})
    rows = []
    for r in sl.get("networks", []):
        ldn = r["method"] == "ldn"
        rows.append([r["method"].upper(), str(r["max_depth"]), str(r["epochs"]), r["stopped"],
                     str(r["d_opt"]) if ldn else "-", f"{r['entropy_fraction']:.2f}" if ldn else "-",
                     f"{r['test']['log_lik']:.3f}", f"{r['test']['error']:.3f}", f"{r['test']['ece']:.3f}",
                     f"{r['epoch_seconds_median']:.1f}", f"{r['wall_s']:.0f}"])
    out += [f"**Paper-protocol slice** ({sl.get('dataset')}, {sl.get('n_train')} train / {sl.get('n_test')} test, "
            f"batch {sl.get('effective_batch')} x {sl.get('steps_per_epoch')} steps an epoch, seed {sl.get('seed')}; "
            f"{sl.get('protocol')}; LDN: {sl.get('schedules', {}).get('ldn')}, DDN: {sl.get('schedules', {}).get('ddn')}"
            "; test metrics of the LDN's full marginal and of the DDN):", "",
            *_grid(["method", "D", "epochs", "stopped by", "d_opt", "entropy / log(D+1)", "test LL", "test error",
                    "ECE", "epoch s", "wall s"], rows), *_cuts(sl), ""]
    t = sec.get("time_split", {})
    if "device_step_s" in t:
        out += [f"**Where the time goes** (the slice's LDN at D = {t['max_depth']}, batch {t['batch']}): the compiled "
                f"step {1e3 * t['device_step_s']:.2f} ms with its batch on the device, "
                f"{1e3 * t['host_fed_step_s']:.2f} ms fed from the host, {1e3 * t['trainer_step_s']:.2f} ms in the "
                f"trainer (its epoch over its steps, test evaluation included): **{t['trainer_vs_device']:.2f}x** "
                "the step alone.", ""]
    else:
        out += [f"**Where the time goes**: not measured ({t.get('skipped') or t.get('error') or 'no result'}).", ""]
    lines = ["| target | result |", "|---|---|"]
    for g in res.get("targets", []):
        result = (f"not measured ({g['reason']})" if g["met"] is None else
                  f"{_met(g['met'])}: {g['value']:.2f}{'x' if g['name'] != 'ldn_entropy_fraction' else ''}")
        lines.append(f"| {g['target']} | {result} |")
    return "\n".join(out + lines) + "\n"


# ---------------------------------------------------------------------------- the registry


@dataclasses.dataclass(frozen=True)
class Table:
    source: str  # raw results, relative to the repository root
    render: Callable[[Any], str]
    load: Callable[[Path], Any] | None = None  # how to read `source` (default: one JSON file)
    missing: Callable[[], str] | None = None  # what to render while the source does not exist (None: an error)


def load_nas_rows(path: Path) -> list[dict[str, Any]]:
    """The NAS comparison's rows (a results record {"rows": [...]}, or the bare list of older files)."""
    from vdjax.io import read_json

    data = read_json(path)
    return data["rows"] if isinstance(data, dict) else data


def load_spirals(folder: Path) -> dict[str, Any]:
    """The main job's one- and six-seed results, and every spirals scan's records by scan: from its
    rerun with a data draw per repeat (`REDRAWN`, a sibling of `folder`) where that folder exists,
    else from the earlier run on one shared draw; `folders` says which, relative to the root."""
    from vdjax.io import read_json

    scans, folders = {}, {}
    root = folder.parents[len(Path(SPIRALS).parts) - 1]  # folder is <root>/SPIRALS
    for name in (DDN_SCAN, *SCANS):
        where = committed_folder(root, name)
        folders[name] = where.relative_to(root).as_posix()
        scans[name] = [read_json(p) for p in sorted(where.glob("*.json"))]
    return {"one_seed": read_json(folder / "results.json"), "six_seeds": read_json(folder / "six_seeds/results.json"),
            "scans": scans, "folders": folders}


def _spirals(render: Callable[[dict[str, Any]], str]) -> Table:
    return Table(SPIRALS, render, load_spirals)


def image_study_not_run() -> str:
    return (f"Not run yet: `python3 experiments/scan_max_depth_images.py --study` writes "
            f"`results/images_study4/summary.json`, committed as `{IMAGE_STUDY}`.\n")


def load_image_cap(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The image study's summary and its rerun at a higher cap (`path`)."""
    from vdjax.io import read_json

    root = path.parents[len(Path(IMAGE_CAP).parts) - 1]
    return read_json(root / IMAGE_STUDY), read_json(path)


def verdict_rule(_: Any = None) -> str:
    """The one rule every verdict table refers to, and the margins of its no-change claims."""
    from vdjax.studies.claims import RULE, margins_markdown

    return f"{RULE}\n\nThe margins, fixed in `vdjax/studies/claims.py`:\n\n{margins_markdown()}"


TABLES: dict[str, Table] = {
    "verdict-rule": Table("vdjax/studies/claims.py", verdict_rule, load=lambda path: None),
    "bench-machine": Table(BENCHMARK, lambda res: machine_line(res) + "\n"),
    "bench-cnn": Table(BENCHMARK, cnn_table),
    "bench-spirals": Table(BENCHMARK, spirals_table),
    "bench-rerun": Table(BENCHMARK, rerun_table),
    "bench-pruned": Table(BENCHMARK, pruned_table),
    "bench-targets": Table(BENCHMARK, targets_table),
    "bench-summary": Table(BENCHMARK, benchmark_summary),
    "bench-throughput": Table(THROUGHPUT, throughput_table),
    "bench-feed": Table(FEED, feed_table, missing=lambda: "Not run yet: `python3 benchmarks/trainer_feed.py --out "
                        "benchmarks/latest/feed` writes `benchmarks/latest/feed/feed.json`.\n"),
    "bench-grid-estimate": Table(GRID_ESTIMATE, lambda est: "```\n" + grid_estimate_text(est) + "```\n"),
    "bench-cnn-ideas": Table(CNN_IDEAS, cnn_ideas_table),
    "dun-toy": Table(DUN_TOY, dun_toy_table),
    "dun-uci": Table(DUN_UCI, dun_uci_table),
    "dun-uci-suite": Table(DUN_UCI_SUITE, dun_uci_suite_table),
    "dun-uci-gap": Table(DUN_UCI_SUITE, dun_uci_gap_table),
    "dun-uci-full": Table(DUN_UCI_FULL, dun_uci_full_table, load_uci_suite),
    "dun-uci-full-gap": Table(DUN_UCI_FULL, dun_uci_full_gap_table, load_uci_suite),
    "dun-uci-verdicts": Table(DUN_UCI_FULL, dun_uci_verdicts, load_uci_suite),
    "dun-uci-caps": Table(DUN_UCI_FULL, dun_uci_caps, load_uci_suite),
    "dun-shift": Table(DUN_SHIFT, dun_shift_table),
    "nas": Table(NAS_ROWS, nas_table, load_nas_rows),
    "nas-setting": Table(NAS_ROWS, nas_setting, load_nas_rows),
    "nas-costs": Table(NAS_ROWS, nas_costs, load_nas_rows),
    "nas-verdicts": Table(NAS_ROWS, nas_verdicts, load_nas_rows),
    "main-job": _spirals(lambda s: headline(s["one_seed"], s["six_seeds"])),
    "spirals-wall-times": _spirals(lambda s: wall_times(s["scans"], s["folders"])),
    "spirals-findings": _spirals(lambda s: findings_table(all_findings(s["scans"]))),
    "spirals-ddn": _spirals(lambda s: ddn_table(s["scans"][DDN_SCAN])),
    **{f"spirals-{scan.key}": _spirals(lambda s, scan=scan: scan_table(scan, s["scans"][scan.name]))
       for scan in SCANS.values()},
    "image-study": Table(IMAGE_STUDY, lambda summary: findings_markdown(findings(summary)), missing=image_study_not_run),
    "image-ldns": Table(IMAGE_STUDY, lambda summary: ldn_markdown(findings(summary)), missing=image_study_not_run),
    "image-verdicts": Table(IMAGE_STUDY, lambda summary: verdicts_markdown(findings(summary)),
                            missing=image_study_not_run),
    "image-ablation": Table(IMAGE_STUDY, ablation_markdown, missing=image_study_not_run),
    "image-cap": Table(IMAGE_CAP, lambda both: cap_markdown(*both), load_image_cap,
                       missing=lambda: "Not run yet: `python3 experiments/scan_max_depth_images.py --study "
                       "--max-epochs 150 --out results/images_study_cap150`.\n"),
    "demo-resnet-stages": Table(RESNET_STAGES, demo_markdown, missing=lambda: demo_not_run(
        "experiments/resnet_stages_fashion_mnist.py")),
    "demo-lm-fortunes": Table(LM_FORTUNES, demo_markdown, missing=lambda: demo_not_run("experiments/lm_fortunes.py")),
    "gpu-check": Table(GPU_CHECK, gpu_check_markdown, missing=gpu_check_not_run),
}
WHOLE_FILES: dict[str, Table] = {"benchmarks/latest/table.md": Table(BENCHMARK, benchmark_markdown)}


def fill(text: str, render: Callable[[str], str]) -> str:
    """`text` with the body of every marked region replaced by `render(name)`."""
    return _REGION.sub(lambda m: f"<!-- BEGIN table:{m['name']} -->\n{render(m['name'])}<!-- END table:{m['name']} -->",
                       text)


def render_documents(root: Path = ROOT, tables: dict[str, Table] = TABLES, documents: tuple[str, ...] = DOCUMENTS,
                     whole_files: dict[str, Table] = WHOLE_FILES) -> dict[str, tuple[str, str]]:
    """{document: (committed text, text rendered from the data)}; each source is read once."""
    from vdjax.io import read_json

    cache: dict[str, Any] = {}

    def render(t: Table) -> str:
        if t.missing is not None and not (root / t.source).exists():
            return t.missing()
        if t.source not in cache:
            cache[t.source] = (t.load or read_json)(root / t.source)
        return t.render(cache[t.source])

    def by_name(name: str) -> str:
        if name not in tables:
            raise KeyError(f"no table {name!r}; known: {sorted(tables)}")
        return render(tables[name])

    out = {}
    for doc in documents:
        text = (root / doc).read_text()
        out[doc] = (text, fill(text, by_name))
    for doc, t in whole_files.items():
        out[doc] = ((root / doc).read_text() if (root / doc).exists() else "", render(t))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 tools/report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 where a table differs from its data")
    p.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    args = p.parse_args(argv)
    stale = []
    for doc, (old, new) in render_documents(args.root).items():
        if old == new:
            continue
        stale.append(doc)
        if args.check:
            diff = difflib.unified_diff(old.splitlines(True), new.splitlines(True), doc, f"{doc} (rendered)")
            sys.stdout.writelines(diff)
        else:
            from vdjax.io import write_text

            write_text(args.root / doc, new)
            print(f"rendered {doc}")
    if args.check and stale:
        print(f"\nstale tables in {', '.join(stale)}: run `python3 tools/report.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
