"""The spirals half of the paper computed from committed sweep records: tables, and one verdict
per finding under the rule of `vdjax.studies.claims` (paired t between methods on the same
seeds, Welch t between grid points, TOST for what should not change, Holm over the table).

Every record is what `vdjax.studies.sweeps.run_grid` wrote for one grid point (six seeds trained
together, each on its own draw of data in the newer records). Depth claims are judged by argmax q,
the paper's rule for low-data regimes (Sec. 2), with the 95% rule's value beside it. Pure
functions, no I/O (`committed_folder` only says which folder holds a scan).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from scipy.stats import spearmanr

from vdjax.studies import claims, stats
from vdjax.studies.stats import GREATER, LESS, NO_CHANGE, Claim, TTest
from vdjax.training.epoch import stop_reason as network_stop_reason

if TYPE_CHECKING:
    from vdjax.studies.plots import DepthPosterior


@dataclasses.dataclass(frozen=True)
class Scan:
    """One of the paper's one-variable spirals scans: what varies, over which grid, and its figures."""

    name: str  # the experiment script and the folder of its records under REDRAWN (or, before, SPIRALS)
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
SPIRALS = "docs/data/spirals"  # the earlier scans: every repeat on one shared draw of data
REDRAWN = "docs/data/spirals_redrawn"  # the reruns: each repeat on its own draw, both pruning rules recorded
DDN_SCAN = "scan_deterministic_depth_spirals"  # an LDN of D = 20 beside a DDN of every depth 0..20
LABELS = {"d_opt": "d_opt", "test_log_lik": "test LL"}
SPIRAL_ACCURACY = 0.9  # a depth whose test accuracy reaches this computes a spiral-like function


def committed_folder(root: Path, name: str) -> Path:
    """Where the committed records of scan `name` are: its rerun (REDRAWN) where that folder
    exists, else the earlier run on one shared draw (SPIRALS). The results page and the notebook
    read the same folders."""
    redrawn = Path(root) / REDRAWN / name
    return redrawn if redrawn.is_dir() else Path(root) / SPIRALS / name


# ---------------------------------------------------------------------------- per-seed arrays


def stop_reason(seed: dict[str, Any], max_epochs: int) -> str:
    """Why one finished network stopped (`vdjax.training.epoch.stop_reason`), the epoch cap named 'cap'."""
    reason = network_stop_reason(True, seed["nonfinite"], seed["epochs"], max_epochs)
    return "cap" if reason == "max_epochs" else reason


def per_seed(record: dict[str, Any], stat: str) -> np.ndarray:
    """One statistic of every seed of a record: d_opt, d_expected, test_log_lik, test_error,
    pruned_log_lik, pruned_error, pruning_cost (pruned minus marginal LL) or epochs; in records
    since per-repeat data also argmax_log_lik, argmax_error (pruned to argmax q) and
    argmax_pruning_cost, and data_seed (`data_seeds` reads it from older ones too). d_argmax
    (argmax q) is recorded in those and read off each seed's q in older ones."""
    get = {
        "test_log_lik": lambda s: s["test"]["log_lik"],
        "test_error": lambda s: s["test"]["error"],
        "pruned_log_lik": lambda s: s["test_pruned"]["log_lik"],
        "pruned_error": lambda s: s["test_pruned"]["error"],
        "pruning_cost": lambda s: s["test_pruned"]["log_lik"] - s["test"]["log_lik"],
        "argmax_log_lik": lambda s: s["test_pruned_argmax"]["log_lik"],
        "argmax_error": lambda s: s["test_pruned_argmax"]["error"],
        "argmax_pruning_cost": lambda s: s["test_pruned_argmax"]["log_lik"] - s["test"]["log_lik"],
        "d_argmax": lambda s: s["d_argmax"] if "d_argmax" in s else int(np.argmax(s["q"])),
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
    """One row per grid point: learnt depth by both rules, marginal and pruned test metrics, work
    and time."""
    if not records:
        return f"No committed records yet: `python3 experiments/{scan.name}.py --out {REDRAWN}/{scan.name}`.\n"
    rows = []
    for r in sort_records(records, scan.key):
        argmax_ll = _pm(per_seed(r, "argmax_log_lik")) if judged_pruning([r])[0] == "argmax_log_lik" else "-"
        rows.append([str(r["meta"][scan.key]), _pm(per_seed(r, "d_argmax"), ".1f"), _pm(per_seed(r, "d_opt"), ".1f"),
                     _pm(per_seed(r, "d_expected"), ".1f"), _pm(per_seed(r, "test_log_lik")), argmax_ll,
                     _pm(per_seed(r, "pruned_log_lik")), _pm(per_seed(r, "test_error")),
                     f"{per_seed(r, 'epochs').mean():.0f}", stops(r), f"{wall_seconds(r):.0f}"])
    done = {r["meta"][scan.key] for r in records}
    missing = [v for v in scan.grid if v not in done]
    out = _grid([scan.key, "d (argmax q)", "d_opt (95%)", "expected depth", "test LL (marginal)",
                 "test LL (pruned, argmax q)", "test LL (pruned, 95%)", "test error", "epochs (mean)", "stopped by",
                 "wall s"], rows)
    out += "\n" + provenance(records, len(scan.grid))
    if missing:
        out += f"Grid points not run yet: {', '.join(map(str, missing))}.\n"
    return out


def data_draws(records: list[dict[str, Any]]) -> str:
    """Which data the repeats of `records` trained and were tested on."""
    if all(shares_data(r) for r in records):
        seeds = sorted({data_seeds(r)[0] for r in records})
        return f"every repeat on one shared data draw (data seed {', '.join(map(str, seeds))})"
    seeds = sorted({s for r in records for s in data_seeds(r)})
    return f"each repeat on its own data draw (data seeds {seeds[0]}–{seeds[-1]})"


def provenance(records: list[dict[str, Any]], grid_size: int | None = None) -> str:
    """Seeds, data draws, wall time and the machine the records come from."""
    seeds = sorted({len(r["seeds"]) for r in records})
    wall = sum(wall_seconds(r) for r in records)
    envs = {(e.get("cpu_isa", "unrecorded"), e["jax"], e["flax"], e["optax"], e["devices"])
            for e in (r["environment"] for r in records)}
    env = "; ".join(f"CPU {isa}, jax {j}, flax {f}, optax {o}, {d} XLA devices" for isa, j, f, o, d in sorted(envs))
    size = f"{len(records)} of {grid_size} grid points" if grid_size else f"{len(records)} records"
    return (f"{size}, {'/'.join(map(str, seeds))} seeds each, {data_draws(records)}, {wall / 60:.1f} min of wall "
            f"time in all. Machine: {env}.\n")


def ddn_table(records: list[dict[str, Any]]) -> str:
    """Fig 2 (left): the LDN's q(d) and per-depth test LL beside the DDN of each depth."""
    ldn, ddns = split_ddn_scan(records)
    if ldn is None or not ddns:
        return f"No committed records yet: `python3 experiments/{DDN_SCAN}.py --out {REDRAWN}/{DDN_SCAN}`.\n"
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
    pruned_stat, how = judged_pruning([ldn])
    out += (f"\nThe LDN (D = {q.shape[1] - 1}): d by argmax q {_pm(per_seed(ldn, 'd_argmax'), '.1f')}, by the 95% "
            f"rule {_pm(per_seed(ldn, 'd_opt'), '.1f')}; test LL {_pm(per_seed(ldn, 'test_log_lik'))} marginal, "
            f"{_pm(per_seed(ldn, pruned_stat))} {how}; error {_pm(per_seed(ldn, 'test_error'))}; stopped by "
            f"{stops(ldn)}.\n\n")
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

TRIVIAL_DEPTHS = 3  # depths 0-2 cannot fit a 720° spiral: their LL alone makes q and the DDN LL correlate
DEPTH_RULES = {"d_argmax": "argmax q", "d_opt": "95% rule"}  # the judged rule first (paper Sec 2: low data)
MIN_STABLE_D = 20  # below it the cap d <= D binds (at D = 5 every seed's d is 4 or 5), so stability is judged from here


def judged_pruning(records: list[dict[str, Any]]) -> tuple[str, str]:
    """The pruned test LL a claim is judged by: pruned at argmax q where every seed recorded it
    (the paper's low-data rule), else by the 95% rule (older records); and how to say which."""
    if all("test_pruned_argmax" in s for r in records for s in r["seeds"]):
        return "argmax_log_lik", "pruned at argmax q"
    return "pruned_log_lik", "pruned by the 95% rule (these records predate argmax q)"


def _means(records: list[dict[str, Any]], key: str, stat: str, spec: str) -> str:
    return ", ".join(f"{per_seed(r, stat).mean():{spec}} at {r['meta'][key]}" for r in records)


def _depths(records: list[dict[str, Any]], key: str) -> str:
    """Mean d by argmax q, with the 95% rule's beside it, at each of `records`."""
    return "; ".join(f"{DEPTH_RULES[stat]} {_means(records, key, stat, '.1f')}" for stat in DEPTH_RULES)


def _drift(records: list[dict[str, Any]], key: str, stat: str) -> TTest:
    """The change of `stat` across the grid: the least-squares slope through every seed's value,
    times the grid's span, with its t-test."""
    x = np.concatenate([np.full(len(r["seeds"]), r["meta"][key], np.float64) for r in records])
    y = np.concatenate([per_seed(r, stat) for r in records])
    span = float(x.max() - x.min())
    slope = stats.slope_t(x, y)
    return dataclasses.replace(stats.estimate_t(slope.effect * span, slope.se * span, slope.df), test=slope.test,
                               n=slope.n)


def _attempt(build: Callable[[], Any]) -> Any | None:
    """`build()`, or None where its samples are too small for the test (one seed: `stats` raises)."""
    try:
        return build()
    except ValueError:
        return None


def _row(figure: str, paper: str, ours: str, claim: Claim | None, missing: list[Any]) -> claims.Row:
    """A finding's row; a claim that needs grid points not run yet is shown but not judged."""
    blocked = (f"not resolved: grid incomplete (no {', '.join(map(str, missing))})" if missing else
               "" if claim is not None else "not resolved: too few seeds for a test")
    return claims.Row(figure, paper, ours, claim, blocked)


def ddn_scan_posterior(records: list[dict[str, Any]]) -> DepthPosterior:
    """What Fig 2 (left) draws from the deterministic-depth scan's records: the LDN's q(d) and
    single-depth test LL per seed, its marginal LL, d_opt and argmax q (seed means, rounded; argmax
    q only where the record has it), and the DDN test LL of every trained depth per seed."""
    from vdjax.studies.plots import DepthPosterior  # matplotlib only when a figure is wanted

    ldn, ddns = split_ddn_scan(records)
    mean = ldn["mean"]
    return DepthPosterior(
        np.array([s["q"] for s in ldn["seeds"]]), np.array([s["test"]["per_depth_log_lik"] for s in ldn["seeds"]]),
        mean["test_log_lik"], int(round(mean["d_opt"])),
        int(round(mean["d_argmax"])) if "d_argmax" in mean else None,
        ddn_log_lik=np.array([per_seed(r, "test_log_lik") for r in ddns]).T,  # [seeds, depths]
        ddn_depths=np.array([r["meta"]["depth"] for r in ddns]))


def ddn_findings(records: list[dict[str, Any]]) -> list[claims.Row]:
    """Fig 2 (left) and Fig 3: the LDN of D = 20 against the DDN of every depth, seed by seed (a
    seed's LDN and DDNs trained on the same draw of data)."""
    ldn, ddns = split_ddn_scan(records)
    if ldn is None or not ddns:
        return []
    top = len(ldn["seeds"][0]["q"]) - 1
    missing = [d for d in range(top + 1) if d not in {r["meta"]["depth"] for r in ddns}]
    figure = "Fig 2 (left)" + _data_note([ldn, *ddns])
    n_seeds = min(len(ldn["seeds"]), *(len(r["seeds"]) for r in ddns))
    q = np.array([s["q"] for s in ldn["seeds"]])[:n_seeds]
    depths = np.array([r["meta"]["depth"] for r in ddns])
    ddn_ll = np.array([per_seed(r, "test_log_lik")[:n_seeds] for r in ddns]).T  # [seeds, depths]
    out = []
    # Where q is large, DDNs do well: the rank correlation over depths, one value per seed.
    deep = depths >= TRIVIAL_DEPTHS
    rho = np.array([spearmanr(q[i, depths[deep]], ddn_ll[i, deep]).statistic for i in range(n_seeds)])
    rho_all = np.array([spearmanr(q[i, depths], ddn_ll[i]).statistic for i in range(n_seeds)])
    mode, best = int(np.argmax(q.mean(0))), int(depths[np.argmax(ddn_ll.mean(0))])
    check = _attempt(lambda: claims.one_sample(rho_all))
    out.append(_row(figure, "the depths to which the LDN gives most probability are those at which DDNs perform best",
                    f"rank correlation between q(d) and the DDN test LL over depths {TRIVIAL_DEPTHS}–{top}: "
                    f"{rho.mean():.2f} (the effect); as a check, not judged, over all depths 0–{top}: "
                    f"{rho_all.mean():.2f}{f' (p = {check.p:.2g})' if check else ''}; q's mode d = {mode}, best DDN "
                    f"d = {best}",
                    _attempt(lambda: Claim("rank correlation", claims.one_sample(rho), GREATER)), missing))
    # The pruned LDN against the DDN of every depth, paired by seed.
    pruned_stat, how = judged_pruning([ldn])
    pruned = per_seed(ldn, pruned_stat)[:n_seeds]
    tests = _attempt(lambda: [stats.paired_t(pruned, ddn_ll[:, j]) for j in range(len(depths))])
    claim, judged = None, ""
    if tests:
        worst, result = claims.least_favourable(tests, GREATER)
        scaled = f" (its p × {len(tests)}: a contradiction at any depth)" if result.p != tests[worst].p else ""
        better = [int(d) for d, t in zip(depths, tests) if t.p < stats.ALPHA and t.effect > 0]
        worse = [int(d) for d, t in zip(depths, tests) if t.p < stats.ALPHA and t.effect < 0]
        claim = Claim("pruned LDN beats every DDN", result, GREATER)
        judged = (f"; judged at the least favourable depth, d = {int(depths[worst])}{scaled}; each depth alone "
                  f"(p < 0.05, uncorrected): better at {_depth_list(better)}, worse at {_depth_list(worse)}")
    out.append(_row(figure, "LDNs pruned to d_opt outperform DDNs at all depths",
                    f"LDN {how}: test LL {pruned.mean():.3f} (95% rule {per_seed(ldn, 'pruned_log_lik').mean():.3f})"
                    f"{judged}", claim, missing))
    # Fig 3: where the single depths of one deep DDN and of the LDN start computing a spiral.
    deep_ddn = ddns[-1]
    ddn_first = np.array([first_spiral_depth(s["test"]["per_depth_error"]) for s in deep_ddn["seeds"]])[:n_seeds]
    ldn_first = np.array([first_spiral_depth(s["test"]["per_depth_error"]) for s in ldn["seeds"]])[:n_seeds]
    out.append(_row("Fig 3" + _data_note([ldn, deep_ddn]),
                    f"in an excessively deep DDN (D = {deep_ddn['meta']['depth']}) intermediate layers contribute "
                    "minimally and only at layer 15 does the function resemble a spiral; in the LDN the first layers "
                    "do most of the work",
                    f"first depth with test accuracy ≥ {SPIRAL_ACCURACY}: DDN {ddn_first.mean():.1f}, LDN "
                    f"{ldn_first.mean():.1f}; effect DDN − LDN",
                    _attempt(lambda: Claim("Fig 3", stats.paired_t(ddn_first, ldn_first), GREATER)), missing))
    return out


def first_spiral_depth(per_depth_error: np.ndarray) -> int:
    """The shallowest depth whose single-depth test accuracy reaches SPIRAL_ACCURACY (len if none)."""
    ok = np.flatnonzero(1 - np.asarray(per_depth_error) >= SPIRAL_ACCURACY)
    return int(ok[0]) if ok.size else len(per_depth_error)


def _depth_list(depths: list[int]) -> str:
    return "none" if not depths else "d = " + ", ".join(map(str, depths))


def _data_note(records: list[dict[str, Any]]) -> str:
    """Said of a claim whose repeats all trained on one draw of data (the older records)."""
    return " (one data draw shared by every repeat)" if all(shares_data(r) for r in records) else ""


def scan_findings(scan: Scan, records: list[dict[str, Any]]) -> list[claims.Row]:
    """The paper's statements about one scan, each with our numbers and its test; d judged by
    argmax q (the paper's low-data rule), the 95% rule's shown beside it."""
    if len(records) < 2:
        return []
    rs = sort_records(records, scan.key)
    k = scan.key
    at = {r["meta"][k]: r for r in rs}
    figure = scan.paper_figure + _data_note(rs)
    if len(rs) < len(scan.grid):
        figure += f", {len(rs)} of {len(scan.grid)} grid points"
    out = []

    def need(*values: int) -> list[int]:
        return [v for v in values if v not in at]

    def change(stat: str, a: int, b: int, expect: str) -> Claim | None:
        """`stat` at grid point b against a (Welch: different networks), b - a."""
        if a not in at or b not in at:
            return None
        return _attempt(lambda: Claim(f"{stat} {a} -> {b}", stats.welch_t(per_seed(at[b], stat), per_seed(at[a], stat)),
                                      expect))

    def present(*values: int) -> list[dict[str, Any]]:
        return [at[v] for v in values if v in at]

    lo, hi = scan.grid[0], scan.grid[-1]
    if k == "max_depth":
        judged = [v for v in scan.grid if v >= MIN_STABLE_D]
        have = present(*judged)
        for stat, what, margin, spec in (("d_argmax", "the chosen d_opt", claims.DEPTH_MARGIN, "+.2f"),
                                         ("test_log_lik", "the test log-likelihood", claims.STABLE_LL_MARGIN, "+.3f")):
            claim = None
            ours = f"fewer than 3 grid points ≥ {MIN_STABLE_D} yet"
            if len(have) >= 3:
                claim = Claim(f"{stat} stable", stats.tost(_drift(have, k, stat), margin), NO_CHANGE)
                ours = (f"drift across D = {have[0]['meta'][k]} → {have[-1]['meta'][k]} (least-squares line through "
                        f"every seed, times the span; from D = {MIN_STABLE_D}, below which d ≤ D caps the depth): "
                        f"{claim.result.effect:{spec}}")
                if stat == "d_argmax":
                    ours = f"argmax q: {ours}; 95% rule: {_drift(have, k, 'd_opt').effect:+.2f}"
            out.append(_row(figure, f"{what} remains stable as D increases", ours, claim, need(*judged)))
    elif k == "width":
        out.append(_row(figure, "increasing the width makes the learnt depth decrease rapidly",
                        _depths(present(lo, hi), k), change("d_argmax", lo, hi, LESS), need(lo, hi)))
        out.append(_row(figure, "very small widths give very deep LDNs and worse test performance",
                        f"test LL {_means(present(lo, hi), k, 'test_log_lik', '.3f')}; effect widest − narrowest",
                        change("test_log_lik", lo, hi, GREATER), need(lo, hi)))
    elif k == "rotation":
        out.append(_row(figure, "LDNs increase their depth to match the complexity of the data",
                        _depths(present(lo, hi), k), change("d_argmax", lo, hi, GREATER), need(lo, hi)))
        out.append(_row(figure, "beyond 720° of rotation test performance suffers significantly",
                        f"test LL {_means(present(720, hi), k, 'test_log_lik', '.3f')}",
                        change("test_log_lik", 720, hi, LESS), need(720, hi)))
    elif k == "n_train":
        out.append(_row(figure, "larger training sets let the LDN become deeper (up to about 500 points)",
                        _depths(present(lo, 500), k), change("d_argmax", lo, 500, GREATER), need(lo, 500)))
        after = [v for v in scan.grid if v >= 500]
        have = present(*after)
        d = np.concatenate([per_seed(r, "d_argmax") for r in have]) if have else np.zeros(0)
        claim = (Claim("around 11", stats.tost(claims.one_sample(d - 11), claims.DEPTH_MARGIN), NO_CHANGE)
                 if d.size >= 2 else None)
        d95 = np.concatenate([per_seed(r, "d_opt") for r in have]) if have else np.zeros(0)
        out.append(_row(figure, "after about 500 points d_opt oscillates around 11",
                        f"d over n_train ≥ 500, every seed: argmax q {d.mean():.2f}, 95% rule {d95.mean():.2f}; "
                        "effect argmax q − 11" if d.size else "no grid point ≥ 500 yet", claim, need(*after)))
    out.append(pruning_row(figure, rs, k, need(*scan.grid)))
    return out


def pruning_row(figure: str, records: list[dict[str, Any]], key: str, missing: list[Any]) -> claims.Row:
    """Figs 5, 6: the pruned network predicts as well as the marginal over all depths, at every
    grid point (TOST of the paired difference per point, judged at the least favourable one)."""
    stat, how = judged_pruning(records)
    paper = "predicting with the first d_opt layers gives the test performance of marginalising over all layers"
    tests = _attempt(lambda: [stats.tost(stats.paired_t(per_seed(r, stat), per_seed(r, "test_log_lik")),
                                         claims.PRUNING_MARGIN) for r in records])
    if not tests:
        return _row(figure, paper, f"{how} minus marginal test LL", None, missing)
    worst, result = claims.least_favourable(tests, NO_CHANGE)
    at = records[worst]
    beside = (f"; 95% rule there: {per_seed(at, 'pruning_cost').mean():+.2g}" if stat == "argmax_log_lik" else "")
    return _row(figure, paper, f"{how} minus marginal test LL, paired over seeds at each grid point; least favourable "
                f"point {key} = {at['meta'][key]}: {result.effect:+.2g}{beside}",
                Claim("pruning costs nothing", result, NO_CHANGE), missing)


def findings_table(findings: list[claims.Row]) -> str:
    if not findings:
        return "No finding can be computed yet: the scans' records are not committed.\n"
    return claims.table(findings)


def all_findings(by_scan: dict[str, list[dict[str, Any]]]) -> list[claims.Row]:
    out = ddn_findings(by_scan.get(DDN_SCAN, []))
    for scan in SCANS.values():
        out += scan_findings(scan, by_scan.get(scan.name, []))
    return out


def wall_times(by_scan: dict[str, list[dict[str, Any]]], folders: dict[str, str]) -> str:
    """Per scan: the folder its tables render from, its data draws, grid points and wall time."""
    rows = []
    for name in (DDN_SCAN, *SCANS):
        recs = by_scan.get(name, [])
        size = 22 if name == DDN_SCAN else len(SCANS[name].grid)
        wall = sum(wall_seconds(r) for r in recs)
        rows.append([f"`experiments/{name}.py`", f"`{folders.get(name, '-')}`", data_draws(recs) if recs else "-",
                     f"{len(recs)} of {size}", f"{wall / 60:.1f}" if recs else "-"])
    return _grid(["scan", "records", "data", "grid points committed", "wall time, min"], rows).replace(
        "---:|---:|---:|", "---|---|---|", 1)
