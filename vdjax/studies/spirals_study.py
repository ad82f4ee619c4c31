"""The spirals half of the paper computed from committed sweep records: tables, and one verdict
per finding that follows from the spread over seeds.

Every record is what `vdjax.studies.sweeps.run_grid` wrote for one grid point (six seeds trained
together). The rule for a verdict is the same everywhere: an effect is *reproduced* only where
it is larger than its seed-to-seed spread (the standard deviation over seeds; for a difference
between two grid points, their spreads added in quadrature; for a difference within one seed,
the standard deviation of the paired differences). A claim that something stays the same is
reproduced where its drift across the grid is within the spread. Pure functions, no I/O.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vdjax.training.epoch import stop_reason as network_stop_reason

REPRODUCED, PARTLY, NOT_REPRODUCED = "reproduced", "partly", "not reproduced"


@dataclasses.dataclass(frozen=True)
class Scan:
    """One of the paper's one-variable spirals scans: what varies, over which grid, and its figures."""

    name: str  # the experiment script and the folder of its records under docs/data/spirals/
    key: str  # the swept variable, as recorded in each record's `meta`
    grid: tuple[int, ...]
    quick_grid: tuple[int, ...]
    xlabel: str
    figure: str
    paper_figure: str
    log_x: bool = False
    functions_figure: str | None = None


SCANS: dict[str, Scan] = {s.name: s for s in (
    Scan("scan_max_depth_spirals", "max_depth", tuple(range(5, 101, 5)), (5, 10, 20), "maximum depth D",
         "fig2_max_depth.png", "Fig 2 (right)"),
    Scan("scan_width_spirals", "width", (2, 4, 8, 16, 32, 64, 128, 256, 512), (2, 16, 128), "width",
         "fig5_width.png", "Fig 5", log_x=True),
    Scan("scan_data_amount", "n_train", (50, 100, 200, 300, 400, 500, 750, 1000, 1500, 2000), (50, 200, 1000),
         "number of training points", "fig6_data_amount.png", "Fig 6 (right), Fig 8", log_x=True,
         functions_figure="fig8_functions_by_data.png"),
    Scan("scan_spiral_complexity", "rotation", (180, 360, 540, 720, 900, 1080, 1260), (180, 720, 1080),
         "rotation (degrees)", "fig6_complexity.png", "Fig 6 (left), Fig 7",
         functions_figure="fig7_functions_by_rotation.png"),
)}
DDN_SCAN = "scan_deterministic_depth_spirals"  # an LDN of D = 20 beside a DDN of every depth 0..20
LABELS = {"d_opt": "d_opt", "test_log_lik": "test LL"}
SPIRAL_ACCURACY = 0.9  # a depth whose test accuracy reaches this computes a spiral-like function


# ---------------------------------------------------------------------------- per-seed arrays


def stop_reason(seed: dict[str, Any], max_epochs: int) -> str:
    """Why one finished network stopped (`vdjax.training.epoch.stop_reason`), the epoch cap named 'cap'."""
    reason = network_stop_reason(True, seed["nonfinite"], seed["epochs"], max_epochs)
    return "cap" if reason == "max_epochs" else reason


def per_seed(record: dict[str, Any], stat: str) -> np.ndarray:
    """One statistic of every seed of a record: d_opt, d_expected, test_log_lik, test_error,
    pruned_log_lik, pruned_error, pruning_cost (pruned minus marginal LL) or epochs; in records
    since per-repeat data also d_argmax (argmax q), argmax_log_lik, argmax_error (pruned to
    d_argmax) and argmax_pruning_cost, and data_seed (`data_seeds` reads it from older ones too)."""
    get = {
        "test_log_lik": lambda s: s["test"]["log_lik"],
        "test_error": lambda s: s["test"]["error"],
        "pruned_log_lik": lambda s: s["test_pruned"]["log_lik"],
        "pruned_error": lambda s: s["test_pruned"]["error"],
        "pruning_cost": lambda s: s["test_pruned"]["log_lik"] - s["test"]["log_lik"],
        "argmax_log_lik": lambda s: s["test_pruned_argmax"]["log_lik"],
        "argmax_error": lambda s: s["test_pruned_argmax"]["error"],
        "argmax_pruning_cost": lambda s: s["test_pruned_argmax"]["log_lik"] - s["test"]["log_lik"],
    }.get(stat, lambda s: s[stat])
    return np.array([get(s) for s in record["seeds"]], np.float64)


def data_seeds(record: dict[str, Any]) -> list[int]:
    """The data seed of every seed of a record: its own `data_seed` where recorded, else (records
    from before per-repeat data, every seed on one draw) the record's `data_config.seed`."""
    return [int(s["data_seed"]) if s.get("data_seed") is not None else int(record["data_config"]["seed"])
            for s in record["seeds"]]


def shares_data(record: dict[str, Any]) -> bool:
    """Whether every seed of a record trained and was tested on the same draw."""
    return len(set(data_seeds(record))) == 1


def mean_std(values: np.ndarray) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std())


def _pm(values: np.ndarray, spec: str = ".3f") -> str:
    m, s = mean_std(values)
    return f"{m:{spec}} ± {s:{spec}}"


def _grid(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---:|" * len(header),
                      *("| " + " | ".join(r) + " |" for r in rows)]) + "\n"


def sort_records(records: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: r["meta"][key])


def stops(record: dict[str, Any]) -> str:
    """'6 patience' or '4 patience, 2 cap': how the seeds of a record stopped."""
    reasons = [stop_reason(s, record["train_config"]["max_epochs"]) for s in record["seeds"]]
    return ", ".join(f"{reasons.count(r)} {r}" for r in ("patience", "cap", "nonfinite") if r in reasons)


# ---------------------------------------------------------------------------- tables


def wall_seconds(record: dict[str, Any]) -> float:
    """A grid point's wall time. Its training time counts every launch that resumed it; a record
    whose `wall_seconds` counted only its last launch is shown at least at that training time."""
    return max(record.get("wall_seconds", 0.0), record["train_seconds"])


def scan_table(scan: Scan, records: list[dict[str, Any]]) -> str:
    """One row per grid point: learnt depth, marginal and pruned test metrics, work and time."""
    if not records:
        return f"No committed records yet: `python3 experiments/{scan.name}.py --out docs/data/spirals/{scan.name}`.\n"
    rows = []
    for r in sort_records(records, scan.key):
        rows.append([str(r["meta"][scan.key]), _pm(per_seed(r, "d_opt"), ".1f"), _pm(per_seed(r, "d_expected"), ".1f"),
                     _pm(per_seed(r, "test_log_lik")), _pm(per_seed(r, "pruned_log_lik")),
                     _pm(per_seed(r, "test_error")), f"{per_seed(r, 'epochs').mean():.0f}", stops(r),
                     f"{wall_seconds(r):.0f}"])
    done = {r["meta"][scan.key] for r in records}
    missing = [v for v in scan.grid if v not in done]
    out = _grid([scan.key, "d_opt (95%)", "expected depth", "test LL (marginal)", "test LL (pruned)", "test error",
                 "epochs (mean)", "stopped by", "wall s"], rows)
    out += "\n" + provenance(records, len(scan.grid))
    if missing:
        out += f"Grid points not run yet: {', '.join(map(str, missing))}.\n"
    return out


def provenance(records: list[dict[str, Any]], grid_size: int | None = None) -> str:
    """Seeds, wall time and the machine the records come from."""
    seeds = sorted({len(r["seeds"]) for r in records})
    wall = sum(wall_seconds(r) for r in records)
    envs = {(e.get("cpu_isa", "unrecorded"), e["jax"], e["flax"], e["optax"], e["devices"])
            for e in (r["environment"] for r in records)}
    env = "; ".join(f"CPU {isa}, jax {j}, flax {f}, optax {o}, {d} XLA devices" for isa, j, f, o, d in sorted(envs))
    size = f"{len(records)} of {grid_size} grid points" if grid_size else f"{len(records)} records"
    return (f"{size}, {'/'.join(map(str, seeds))} seeds each, {wall / 60:.1f} min of wall time in all. "
            f"Machine: {env}.\n")


def ddn_table(records: list[dict[str, Any]]) -> str:
    """Fig 2 (left): the LDN's q(d) and per-depth test LL beside the DDN of each depth."""
    ldn, ddns = split_ddn_scan(records)
    if ldn is None or not ddns:
        return f"No committed records yet: `python3 experiments/{DDN_SCAN}.py --out docs/data/spirals/{DDN_SCAN}`.\n"
    q = np.array([s["q"] for s in ldn["seeds"]])
    ldn_ll = np.array([s["test"]["per_depth_log_lik"] for s in ldn["seeds"]])
    by_depth = {r["meta"]["depth"]: r for r in ddns}
    rows = []
    for d in range(q.shape[1]):
        r = by_depth.get(d)
        rows.append([str(d), _pm(q[:, d]), _pm(ldn_ll[:, d]),
                     _pm(per_seed(r, "test_log_lik")) if r else "-", _pm(per_seed(r, "test_error")) if r else "-",
                     stops(r) if r else "not run"])
    out = _grid(["depth d", "LDN q(d)", "LDN test LL at d", "DDN of depth d: test LL", "DDN test error",
                 "DDN stopped by"], rows)
    out += (f"\nThe LDN (D = {q.shape[1] - 1}): d_opt {_pm(per_seed(ldn, 'd_opt'), '.1f')}, test LL "
            f"{_pm(per_seed(ldn, 'test_log_lik'))} marginal and {_pm(per_seed(ldn, 'pruned_log_lik'))} pruned, "
            f"error {_pm(per_seed(ldn, 'test_error'))}; stopped by {stops(ldn)}.\n\n")
    return out + provenance(records, q.shape[1] + 1)


def split_ddn_scan(records: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the LDN record, the DDN records by depth) of the deterministic-depth scan."""
    ldn = next((r for r in records if r["train_config"]["method"] == "ldn"), None)
    return ldn, sorted((r for r in records if r["train_config"]["method"] == "ddn"), key=lambda r: r["meta"]["depth"])


def headline(one_seed: dict[str, Any], six_seeds: dict[str, Any]) -> str:
    """What the main job printed for seed 0, and the range over six seeds of the same command."""
    from vdjax.studies.experiment import depth_verdict

    s = one_seed["seeds"][0]
    rng = lambda stat, spec: "{:{s}} to {:{s}}".format(*_minmax(six_seeds, stat), s=spec)  # noqa: E731
    env = one_seed["environment"]
    return (f"`python3 -m vdjax spirals` printed, on a CPU with {env.get('cpu_isa', 'an unrecorded instruction set')} "
            f"(jax {env['jax']}), for seed {s['seed']}:\n\n```\n"
            + depth_verdict(s["d_opt"], s["d_expected"], s["test"], s["test_pruned"]) + "```\n\n"
            f"Over seeds {', '.join(str(x['seed']) for x in six_seeds['seeds'])} "
            "(`python3 -m vdjax spirals --seeds 0 1 2 3 4 5`):\n\n"
            + _grid(["", "min to max over 6 seeds"], [
                ["d_opt (95% rule)", rng("d_opt", "d")], ["expected depth", rng("d_expected", "d")],
                ["test accuracy, marginal", "{:.4f} to {:.4f}".format(*(1 - np.array(_minmax(six_seeds, "test_error")))[::-1])],
                ["test log-likelihood, marginal", rng("test_log_lik", ".4f")],
                ["test log-likelihood, pruned minus marginal", rng("pruning_cost", "+.4f")]]))


def _minmax(record: dict[str, Any], stat: str) -> tuple:
    v = per_seed(record, stat)
    if stat in ("d_opt", "d_expected"):
        return int(v.min()), int(v.max())
    return float(v.min()), float(v.max())


def headline_band(six_seeds: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Where a new run of the main job must land for the method to be intact: a broken method
    (a flat q, an untrained network, pruning that loses the function) falls outside, while a
    new CPU's different floats (one more draw from the seed distribution) do not.

    d_opt within the six seeds' range +- 2, accuracy at least their minimum - 0.03, test LL at
    least their minimum - 0.1, and pruning costing at most their worst cost + 0.05 nats."""
    d_lo, d_hi = _minmax(six_seeds, "d_opt")
    return {"d_opt": (d_lo - 2, d_hi + 2),
            "accuracy": (1 - _minmax(six_seeds, "test_error")[1] - 0.03, 1.0),
            "test_log_lik": (_minmax(six_seeds, "test_log_lik")[0] - 0.1, 0.0),
            "pruning_cost": (_minmax(six_seeds, "pruning_cost")[0] - 0.05, np.inf)}


# ---------------------------------------------------------------------------- findings


@dataclasses.dataclass(frozen=True)
class Finding:
    figure: str
    paper: str  # what the paper says
    ours: str  # our numbers, with their spread
    verdict: str


def larger_than_spread(effect: float, spread: float) -> str:
    """The one rule: an effect in the claimed direction larger than its spread is reproduced;
    one in the opposite direction larger than its spread is not; anything else is not resolved."""
    if effect > spread:
        return REPRODUCED
    return NOT_REPRODUCED if effect < -spread else f"{NOT_REPRODUCED} (within the seed spread)"


def stays_within_spread(drift: float, spread: float) -> str:
    return REPRODUCED if abs(drift) <= spread else NOT_REPRODUCED


def _difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean difference of two grid points' seeds and its spread (their stds in quadrature)."""
    return float(a.mean() - b.mean()), float(np.hypot(a.std(), b.std()))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = (np.argsort(np.argsort(v)).astype(np.float64) for v in (x, y))
    return float(np.corrcoef(rx, ry)[0, 1])


def first_spiral_depth(per_depth_error: np.ndarray) -> int:
    """The shallowest depth whose single-depth test accuracy reaches SPIRAL_ACCURACY (len if none)."""
    ok = np.flatnonzero(1 - np.asarray(per_depth_error) >= SPIRAL_ACCURACY)
    return int(ok[0]) if ok.size else len(per_depth_error)


def ddn_findings(records: list[dict[str, Any]]) -> list[Finding]:
    ldn, ddns = split_ddn_scan(records)
    if ldn is None or not ddns:
        return []
    n_seeds = min(len(ldn["seeds"]), *(len(r["seeds"]) for r in ddns))
    q = np.array([s["q"] for s in ldn["seeds"]])[:n_seeds]
    depths = [r["meta"]["depth"] for r in ddns]
    ddn_ll = np.array([per_seed(r, "test_log_lik")[:n_seeds] for r in ddns]).T  # [seeds, depths]
    out = []
    # Fig 2 left: where q is large, DDNs do well (rank correlation over depths, one value per seed).
    rho = np.array([_spearman(q[i, depths], ddn_ll[i]) for i in range(n_seeds)])
    mode, best = int(np.argmax(q.mean(0))), depths[int(np.argmax(ddn_ll.mean(0)))]
    m, s = mean_std(rho)
    out.append(Finding("Fig 2 (left)", "the depths to which the LDN gives most probability are those at which DDNs "
                       "perform best",
                       f"rank correlation over depths between q(d) and the DDN test LL {m:.2f} ± {s:.2f}; q's mode "
                       f"d = {mode}, best DDN d = {best}", larger_than_spread(m, s)))
    # Fig 2 left: the pruned LDN against the DDN of every depth, paired by seed.
    pruned = per_seed(ldn, "pruned_log_lik")[:n_seeds]
    diff = pruned[:, None] - ddn_ll
    dm, ds = diff.mean(0), diff.std(0)
    better = [d for d, a, b in zip(depths, dm, ds) if a > b]
    worse = [d for d, a, b in zip(depths, dm, ds) if a < -b]
    level = [d for d in depths if d not in better and d not in worse]
    verdict = REPRODUCED if len(better) == len(depths) else PARTLY if better else NOT_REPRODUCED
    out.append(Finding("Fig 2 (left)", "LDNs pruned to d_opt outperform DDNs at all depths",
                       f"pruned LDN test LL {_pm(pruned)}; better than the DDN (by more than the paired spread) at "
                       f"{_depth_list(better)}, level at {_depth_list(level)}, worse at {_depth_list(worse)}", verdict))
    # Fig 3: where the single depths of one deep DDN and of the LDN start computing a spiral.
    deep = ddns[-1]
    ddn_first = np.array([first_spiral_depth(s["test"]["per_depth_error"]) for s in deep["seeds"]])
    ldn_first = np.array([first_spiral_depth(s["test"]["per_depth_error"]) for s in ldn["seeds"]])
    e, sp = _difference(ddn_first, ldn_first)
    out.append(Finding("Fig 3", f"in an excessively deep DDN (D = {deep['meta']['depth']}) intermediate layers "
                       "contribute minimally and only at layer 15 does the function resemble a spiral; in the LDN the "
                       "first layers do most of the work",
                       f"first depth with test accuracy ≥ {SPIRAL_ACCURACY}: DDN {_pm(ddn_first, '.1f')}, LDN "
                       f"{_pm(ldn_first, '.1f')} (difference {e:.1f} ± {sp:.1f})", larger_than_spread(e, sp)))
    return out


def _depth_list(depths: list[int]) -> str:
    return "none" if not depths else "d = " + ", ".join(map(str, depths))


def _drift(records: list[dict[str, Any]], key: str, stat: str) -> tuple[float, float]:
    """The change of `stat` across the grid (least-squares line through every seed, times the
    grid's span) and the mean seed spread of the grid points."""
    x = np.concatenate([np.full(len(r["seeds"]), r["meta"][key], np.float64) for r in records])
    y = np.concatenate([per_seed(r, stat) for r in records])
    slope = np.polyfit(x, y, 1)[0]
    return float(slope * (x.max() - x.min())), float(np.mean([per_seed(r, stat).std() for r in records]))


def scan_findings(scan: Scan, records: list[dict[str, Any]]) -> list[Finding]:
    """The paper's statements about one scan, each with our numbers and verdict."""
    if len(records) < 2:
        return []
    rs = sort_records(records, scan.key)
    k = scan.key
    if len(rs) < len(scan.grid):  # a scan still running: its verdicts rest on the points it has
        scan = dataclasses.replace(scan, paper_figure=f"{scan.paper_figure}, {len(rs)} of {len(scan.grid)} grid points")
    at = {r["meta"][k]: r for r in rs}
    lo, hi = rs[0], rs[-1]
    span = f"{k} {lo['meta'][k]} → {hi['meta'][k]}"
    out = []

    def change(stat: str, a: dict, b: dict, sign: int = 1) -> tuple[float, float, str]:
        """`stat` at grid points a then b; the effect is sign * (b - a), the claimed direction positive."""
        e, s = _difference(per_seed(b, stat), per_seed(a, stat))
        return sign * e, s, (f"{LABELS[stat]} {_pm(per_seed(a, stat), '.2f')} at {a['meta'][k]}, "
                             f"{_pm(per_seed(b, stat), '.2f')} at {b['meta'][k]} (change {e:+.2f} ± {s:.2f})")

    if k == "max_depth":
        for stat, what in (("d_opt", "the chosen d_opt"), ("test_log_lik", "the test log-likelihood")):
            drift, spread = _drift(rs, k, stat)
            out.append(Finding(scan.paper_figure, f"{what} remains stable as D increases",
                               f"drift across {span}: {drift:+.3f} (least-squares line over all seeds); mean seed "
                               f"spread {spread:.3f}", stays_within_spread(drift, spread)))
    elif k == "width":
        e, s, text = change("d_opt", lo, hi, sign=-1)
        out.append(Finding(scan.paper_figure, "increasing the width makes the learnt depth decrease rapidly", text,
                           larger_than_spread(e, s)))
        best = max(rs, key=lambda r: per_seed(r, "test_log_lik").mean())
        e, s, text = change("test_log_lik", lo, best)
        out.append(Finding(scan.paper_figure, "very small widths give very deep LDNs and worse test performance",
                           text, larger_than_spread(e, s)))
    elif k == "rotation":
        e, s, text = change("d_opt", lo, hi)
        out.append(Finding(scan.paper_figure, "LDNs increase their depth to match the complexity of the data", text,
                           larger_than_spread(e, s)))
        if 720 in at and hi["meta"][k] > 720:
            e, s, text = change("test_log_lik", at[720], hi, sign=-1)
            out.append(Finding(scan.paper_figure, "beyond 720° of rotation test performance suffers significantly",
                               text, larger_than_spread(e, s)))
    elif k == "n_train":
        ref = at.get(500, rs[len(rs) // 2])
        e, s, text = change("d_opt", lo, ref)
        out.append(Finding(scan.paper_figure, "larger training sets let the LDN become deeper (up to about 500 points)",
                           text, larger_than_spread(e, s)))
        after = [r for r in rs if r["meta"][k] >= ref["meta"][k]]
        d = np.concatenate([per_seed(r, "d_opt") for r in after])
        spread = float(np.mean([per_seed(r, "d_opt").std() for r in after]))
        out.append(Finding(scan.paper_figure, f"after about {ref['meta'][k]} points d_opt oscillates around 11",
                           f"d_opt over {k} ≥ {ref['meta'][k]}: {d.mean():.1f} (mean seed spread {spread:.1f})",
                           stays_within_spread(d.mean() - 11, spread)))
    # Figs 5, 6: the pruned network predicts as well as the marginal over all depths.
    costs = [(r["meta"][k], *mean_std(per_seed(r, "pruning_cost"))) for r in rs]
    worst = min(costs, key=lambda c: c[1])
    beyond = [v for v, m, s in costs if m < -s]
    out.append(Finding(scan.paper_figure, "predicting with the first d_opt layers gives the test performance of "
                       "marginalising over all layers",
                       f"pruned minus marginal test LL: worst {worst[1]:+.3f} ± {worst[2]:.3f} at {k} = {worst[0]}; "
                       f"lower by more than the spread at {', '.join(map(str, beyond)) or 'no grid point'}",
                       REPRODUCED if not beyond else PARTLY if len(beyond) < len(rs) else NOT_REPRODUCED))
    return out


def findings_table(findings: list[Finding]) -> str:
    if not findings:
        return "No finding can be computed yet: the scans' records are not committed.\n"
    return _grid(["figure", "the paper", "ours (mean ± std over seeds)", "verdict"],
                 [[f.figure, f.paper, f.ours, f"**{f.verdict}**"] for f in findings]).replace("---:|", "---|")


def all_findings(by_scan: dict[str, list[dict[str, Any]]]) -> list[Finding]:
    out = ddn_findings(by_scan.get(DDN_SCAN, []))
    for scan in SCANS.values():
        out += scan_findings(scan, by_scan.get(scan.name, []))
    return out


def wall_times(by_scan: dict[str, list[dict[str, Any]]]) -> str:
    rows = []
    for name in (DDN_SCAN, *SCANS):
        recs = by_scan.get(name, [])
        size = 22 if name == DDN_SCAN else len(SCANS[name].grid)
        wall = sum(wall_seconds(r) for r in recs)
        rows.append([f"`experiments/{name}.py`", f"{len(recs)} of {size}", f"{wall / 60:.1f}" if recs else "-"])
    return _grid(["scan", "grid points committed", "wall time, min"], rows).replace("---:|", "---|", 1)
