"""An image study summarised: the paper's four image findings computed from its records.

`summarize` keeps the records of a study without their per-epoch histories, but with each LDN's
q(d) at every epoch (small enough to commit), and the records of its ablation variants;
`findings` computes from such a summary, with mean and std over seeds:
  (a) pruning to d_opt costs nothing: LDN-95 against LDN-full and against the DDNs;
  (b) the 95% rule's d_opt saturates as the max depth D grows, while the expected depth grows;
  (c) LDNs are better calibrated than DDNs (ECE of LDN-full against the DDN of the same D);
  (d) the pruned network is faster than the DDN of the same D (forward pass, trained weights).
Before any of that, whether the networks learnt: each LDN's SGD steps before its kept epoch,
how much its q(d) still changed over the last fifth of those epochs, how far q moved from
uniform, and whether q has fallen by the deepest depth (where it has not, the 95% rule picks a
depth off a plateau and d_opt is not identified). `verdicts` applies one rule to (a)-(d).
Everything a README table or figure shows is computed here from the committed summary.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from vdjax.studies import claims, stats
from vdjax.studies.stats import GREATER, NO_CHANGE, Claim, TTest

SUMMARY_VERSION = 2
MIN_STEPS = 2000  # SGD steps an LDN at D >= SETTLED_FROM must take before its kept epoch
MAX_TV_CHANGE = 0.02  # the most q(d) may still change (total variation) over the last fifth of those epochs
SETTLED_FROM = 10  # the max depths whose LDNs must meet both
PLATEAU_LEVEL = 0.5  # q(D) at least this fraction of max q: q has not fallen by the deepest depth


def compact(record: dict[str, Any]) -> dict[str, Any]:
    """A results record without its per-epoch history (kept: epochs, best epoch, stop reason, each
    epoch's learning rate, `lr_history`, and for an LDN its q(d) at every epoch, `q_history`, from
    which `q_settling` is checked)."""
    out = {k: v for k, v in record.items() if k != "history"}
    if record.get("history") and "lr" in record["history"][0]:
        out["lr_history"] = [h["lr"] for h in record["history"]]
    if record.get("method") == "ldn" and record.get("history") and "q" in record["history"][0]:
        out["q_history"] = [h["q"] for h in record["history"]]
    return out


def lr_history(record: dict[str, Any]) -> list[float]:
    """The learning rate of each epoch a network ran (0-based, as `q_history`): the record's
    `lr_history` (a summary's record) or its history's `lr` (a results file), else, for records
    written before either existed, its `train_config`'s schedule for its method and epochs."""
    if "lr_history" in record:
        return [float(v) for v in record["lr_history"]]
    if record.get("history") and "lr" in record["history"][0]:
        return [float(h["lr"]) for h in record["history"]]
    import dataclasses

    from vdjax.training.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in record["train_config"].items() if k in names}
    config = TrainConfig(**{**saved, "method": record["method"]})
    return [config.epoch_learning_rate(e) for e in range(int(record["epochs"]))]


def epochs_after_lr_change(record: dict[str, Any], window: int = 1) -> list[int]:
    """The epochs (0-based, as `q_history`) that are among the first `window` run at a new learning
    rate: for every epoch c whose rate differs from epoch c-1's, epochs c .. c+window-1 (those that
    ran). Epoch c is the first whose SGD steps took the new rate, so `q_history[c]` is the first q
    it moved. Empty for a network whose rate never changed (the study's LDNs)."""
    lrs = lr_history(record)
    changes = [c for c in range(1, len(lrs)) if not math.isclose(lrs[c], lrs[c - 1], rel_tol=1e-6)]
    return sorted({e for c in changes for e in range(c, min(c + window, len(lrs)))})


def _sorted(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [compact(r) for r in sorted(records, key=lambda r: (r["method"], r["max_depth"], r["seed"]))]


def summarize(records: list[dict[str, Any]], speed: dict[str, Any] | None = None,
              ablation: dict[str, dict[str, Any]] | None = None, **about: Any) -> dict[str, Any]:
    """The committed form of a study: compact records, an optional large-D timing, what it was,
    and its ablation: {variant name: {"changes": what differs from the study, "records": [...]}}."""
    return {"version": SUMMARY_VERSION, **about, "speed_large_depth": speed, "records": _sorted(records),
            "ablation": {name: {"changes": v["changes"], "records": _sorted(v["records"])}
                         for name, v in (ablation or {}).items()}}


def _stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)} if v.size else \
        {"mean": float("nan"), "std": float("nan"), "n": 0}


Q_MOVED_TV = 0.15  # total-variation distance from uniform below which q(d) has not left its start


def q_movement(q) -> dict[str, float]:
    """How far a posterior over depths moved from its uniform start: its entropy as a fraction of
    log(D+1) (1 = uniform) and its total-variation distance from uniform (0 = uniform)."""
    q = np.asarray(q, np.float64)
    if q.size < 2:
        return {"entropy_fraction": 0.0, "tv_from_uniform": 0.0}
    h = -float(np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)))
    return {"entropy_fraction": h / float(np.log(q.size)), "tv_from_uniform": 0.5 * float(np.abs(q - 1 / q.size).sum())}


def q_settling(history: list[dict[str, Any]], best_epoch: int, steps_per_epoch: int,
               window: float = 0.2, excluded: Sequence[int] = ()) -> dict[str, Any]:
    """Whether a network's q(d) had settled when its kept epoch was reached: the SGD steps up to
    and including that epoch, and the largest total-variation distance between q at the epoch it
    is judged at and q at any of the last `window` of the epochs before that one (the history's
    per-epoch `q`). Epochs in `excluded` (run after a change of learning rate) are left out: a
    smaller rate moves q less whether or not q has converged, so q is judged at the last epoch
    before them, `judged_at` (None, with no change, when every epoch up to the kept one is out)."""
    skip = set(excluded)
    end = next((e for e in range(best_epoch, -1, -1) if e not in skip), None)
    steps = (best_epoch + 1) * steps_per_epoch
    if end is None:
        return {"steps": steps, "tv_change": None, "judged_at": None}
    judged = np.asarray(history[end]["q"], np.float64)
    first = end - max(1, int(np.ceil(window * (end + 1))))
    earlier = [np.asarray(history[e]["q"], np.float64) for e in range(max(first, 0), end) if e not in skip]
    change = max((0.5 * float(np.abs(q - judged).sum()) for q in earlier), default=0.0)
    return {"steps": steps, "tv_change": change, "judged_at": end}


def q_plateau(q, level: float = PLATEAU_LEVEL) -> int | None:
    """Where q(d) has not fallen by the deepest depth (q(D) >= level * max q), the first depth of
    the plateau that reaches D (every q(d) from there on >= level * max q); else None. On such a
    plateau the 95% rule (the shallowest depth with q(d) >= 0.95 max q) picks whichever depth of
    it the noise in q lifts first, so d_opt is not identified."""
    q = np.asarray(q, np.float64)
    top = float(q.max()) if q.size else 0.0
    if q.size < 2 or q[-1] < level * top:
        return None
    start = q.size - 1
    while start > 0 and q[start - 1] >= level * top:
        start -= 1
    return int(start)


def steps_per_epoch(record: dict[str, Any]) -> int:
    """SGD steps in one epoch of a record's network (`Batching`: ceil(N / batch) batches)."""
    return math.ceil(record["n_train"] / record["train_config"]["batch_size"])


def ldn_diagnostics(record: dict[str, Any]) -> dict[str, Any]:
    """Whether one LDN learnt: its steps before the kept epoch, its q's change over the last fifth
    of those epochs that ran before any change of learning rate (None without a per-epoch q), how
    far q moved from uniform, and the plateau."""
    history = record.get("q_history")
    # Every epoch from a change of rate on is left out, not a few: the lower rate slows q for good.
    after_change = epochs_after_lr_change(record, window=int(record["epochs"]))
    settling = (q_settling([{"q": q} for q in history], record["best_epoch"], steps_per_epoch(record),
                           excluded=after_change) if history else
                {"steps": (record["best_epoch"] + 1) * steps_per_epoch(record), "tv_change": None, "judged_at": None})
    plateau = q_plateau(record["q"])
    return {"max_depth": record["max_depth"], "seed": record["seed"], "best_epoch": record["best_epoch"],
            "epochs": record["epochs"], "patience_spent": patience_ran_out(record), **settling,
            "lr_changed": bool(after_change), **q_movement(record["q"]),
            "d_opt": record["d_opt"], "d_expected": record["d_expected"], "plateau_start": plateau,
            "identified": plateau is None or record["max_depth"] == 0,
            "validation_se": record.get("validation", {}).get("log_lik_se")}


def patience_ran_out(record: dict[str, Any]) -> bool | None:
    """Whether early stopping's patience had run out by the record's last epoch (even where the
    cap was reached at that same epoch): then a higher epoch cap keeps the same epoch. None for a
    record without its stopping settings."""
    from vdjax.training.config import patience_spent

    train = record.get("train_config", {})
    if "patience" not in train:
        return None
    since_best = record["epochs"] - 1 - record["best_epoch"]
    return bool(patience_spent(since_best, train["patience"], train.get("patience_rule", "reached")))


def settled(diagnostic: dict[str, Any]) -> bool:
    """The study's bar for a trained LDN (only max depths >= SETTLED_FROM are held to it)."""
    if diagnostic["max_depth"] < SETTLED_FROM:
        return True
    change = diagnostic["tv_change"]
    return diagnostic["steps"] >= MIN_STEPS and change is not None and change <= MAX_TV_CHANGE


def findings(summary: dict[str, Any]) -> dict[str, Any]:
    """(a)-(d) per max depth D (mean/std over seeds), and pooled over the depths D > 0."""
    recs = summary["records"]
    ldn = {(r["max_depth"], r["seed"]): r for r in recs if r["method"] == "ldn"}
    ddn = {(r["max_depth"], r["seed"]): r["test"] for r in recs if r["method"] == "ddn"}
    depths = sorted({d for d, _ in ldn})
    per_depth, pooled = [], {k: [] for k in ("pruned_minus_full", "pruned_minus_ddn", "ece_ddn_minus_ldn",
                                             "pruned_err_minus_ddn")}
    for d in depths:
        pairs = [(ldn[k], ddn.get(k)) for k in sorted(ldn) if k[0] == d]
        row: dict[str, Any] = {"max_depth": d}
        row["d_opt"] = _stats([a["d_opt"] for a, _ in pairs])
        moved = [q_movement(a["q"]) for a, _ in pairs]
        row["entropy_fraction"] = _stats([m["entropy_fraction"] for m in moved])
        row["tv_from_uniform"] = _stats([m["tv_from_uniform"] for m in moved])
        row["d_expected"] = _stats([a["d_expected"] for a, _ in pairs])
        diag = [ldn_diagnostics(a) for a, _ in pairs]
        row["steps"] = _stats([g["steps"] for g in diag])
        row["tv_change"] = _stats([g["tv_change"] for g in diag if g["tv_change"] is not None])
        row["identified"] = sum(g["identified"] for g in diag)
        diffs = {"pruned_minus_full": [a["ldn_95"]["log_lik"] - a["ldn_full"]["log_lik"] for a, _ in pairs],
                 "pruned_minus_ddn": [a["ldn_95"]["log_lik"] - b["log_lik"] for a, b in pairs if b],
                 "pruned_err_minus_ddn": [a["ldn_95"]["error"] - b["error"] for a, b in pairs if b],
                 "ece_ddn_minus_ldn": [b["ece"] - a["ldn_full"]["ece"] for a, b in pairs if b]}
        for key in ("ldn_full", "ldn_95"):
            for m in ("log_lik", "error", "ece"):
                row[f"{key}_{m}"] = _stats([a[key][m] for a, _ in pairs])
        for m in ("log_lik", "error", "ece"):
            row[f"ddn_{m}"] = _stats([b[m] for _, b in pairs if b])
        row["speedup"] = _stats([a["speed"]["speedup"] for a, _ in pairs if "speed" in a])
        row["epochs"] = _stats([a["epochs"] for a, _ in pairs])
        row["seeds"] = {**diffs, "speedup": [a["speed"]["speedup"] for a, _ in pairs if "speed" in a],
                        "speedup_expected": [a["speed_expected"]["speedup"] for a, _ in pairs if "speed_expected" in a]}
        row["n_ldns"] = len(diag)
        for k, v in diffs.items():
            row[k] = _stats(v)
            if d > 0:
                pooled[k] += v
        per_depth.append(row)
    ddn_depths = sorted({d for d, _ in ddn})
    ddn_ll = {d: _stats([v["log_lik"] for (dd, _), v in ddn.items() if dd == d]) for d in ddn_depths}
    best_ddn = max(ddn_depths, key=lambda d: ddn_ll[d]["mean"]) if ddn_depths else None
    stopped = [r["stopped"] for r in recs]
    deep = [row["d_opt"]["mean"] for row in per_depth if row["max_depth"] > 0]
    deep_tv = [row["tv_from_uniform"]["mean"] for row in per_depth if row["max_depth"] >= 10]
    diagnostics = [ldn_diagnostics(r) for r in recs if r["method"] == "ldn"]
    return {
        "q_learnt": None if not deep_tv else min(deep_tv) >= Q_MOVED_TV,  # None: no D >= 10 to judge by
        "ldns": diagnostics,
        "unsettled": [f"D={g['max_depth']} seed {g['seed']}" for g in diagnostics if not settled(g)],
        "growth": growth_over_depth(ldn),
        "per_depth": per_depth,
        "pooled": {k: _stats(v) for k, v in pooled.items()},
        "best_ddn": {"max_depth": best_ddn, **(ddn_ll[best_ddn] if best_ddn is not None else {})},
        "d_opt_range_over_D": [float(min(deep)), float(max(deep))] if deep else None,
        "stopped": {k: stopped.count(k) for k in sorted(set(stopped))},
        "speed_large_depth": summary.get("speed_large_depth"),
        "complete": summary.get("complete", True),
        "missing": summary.get("missing", []),
    }


NOT_LEARNT = "no verdict (not learnt)"
UNIDENTIFIED = "not resolved: d_opt not identified"


def _test(values: list[float], test) -> Any:
    """`test` on per-seed values, or None where fewer than two seeds give one."""
    return test(np.asarray(values, np.float64)) if len(values) >= 2 else None


def _paired(differences: np.ndarray) -> TTest:
    """The paired t-test of per-seed differences a - b (the same as `paired_t(a, b)`)."""
    return stats.paired_t(differences, np.zeros_like(differences))


def _row(figure: str, paper: str, ours: str, result: Any, expect: str, blocked: str = "") -> claims.Row:
    claim = Claim(figure, result, expect) if result is not None else None
    return claims.Row(figure, paper, ours, claim, blocked or ("" if claim else "not resolved: fewer than 2 seeds"))


def _values(values: list[float], digits: int, scale: float = 1.0, unit: str = "") -> str:
    return ", ".join(f"{scale * v:+.{digits}f}{unit}" for v in values) or "none"


def not_learnt(f: dict[str, Any]) -> str:
    """Why the study's networks do not carry a verdict ('' where they do)."""
    if f.get("q_learnt") is False:
        return "q(d) stayed near uniform"
    if f["unsettled"]:
        return "q(d) had not settled: " + ", ".join(f["unsettled"])
    return ""


def verdicts(f: dict[str, Any]) -> list[claims.Row]:
    """(a)-(d) at every max depth D >= SETTLED_FROM, each tested by the one rule over its seeds
    (`vdjax.studies.claims`). A study whose LDNs did not learn shows the tests with no verdict;
    where d_opt is not identified at a D, (b) and (d) get none there."""
    rows = [r for r in f["per_depth"] if r["max_depth"] >= SETTLED_FROM]
    gate = NOT_LEARNT if not_learnt(f) else ""
    out = []
    for r in rows:
        d, v = r["max_depth"], r["seeds"]
        at = f"D = {d}"
        out.append(_row(f"(a) {at}", "pruned to d_opt, an LDN outperforms the DDN of the same max depth (Fig 9, rows "
                        "2 and 4)", f"LDN-95 − DDN-D test LL per seed: {_values(v['pruned_minus_ddn'], 3)}",
                        _test(v["pruned_minus_ddn"], _paired), GREATER, gate))
        out.append(_row(f"(a) {at}", "pruning to d_opt costs no predictive performance (Sec 3.2)",
                        f"LDN-95 − LDN-full test LL per seed: {_values(v['pruned_minus_full'], 4)}",
                        _test(v["pruned_minus_full"], lambda x: stats.tost(_paired(x), claims.PRUNING_MARGIN)),
                        NO_CHANGE, gate))
        out.append(_row(f"(c) {at}", "LDNs are better calibrated than DDNs on Fashion-MNIST (Fig 10)",
                        f"ECE of DDN-D − ECE of LDN-full per seed: {_values(v['ece_ddn_minus_ldn'], 3)}",
                        _test(v["ece_ddn_minus_ldn"], _paired), GREATER, gate))
        expected = (f"; at the expected depth: {_values(v['speedup_expected'], 0, 100, '%')}" if v["speedup_expected"]
                    else "; at the expected depth: not timed in these records")
        unidentified = r["identified"] < r["n_ldns"]
        out.append(_row(f"(d) {at}", "pruned LDNs run the forward pass faster than DDNs of the same max depth, more so "
                        "as D grows (41% at D = 50 on Fashion-MNIST, Fig 11)",
                        f"forward-time reduction at d_opt per seed: {_values(v['speedup'], 0, 100, '%')}{expected}",
                        _test(v["speedup"], claims.one_sample), GREATER,
                        gate or (UNIDENTIFIED if unidentified else "")))
    growth = f.get("growth")
    if growth is not None:
        unidentified = UNIDENTIFIED + f" at D = {growth['to']}" if growth["unidentified"] else ""
        out.append(_row(f"(b) D = {growth['from']} → {growth['to']}", "the 95% rule's d_opt saturates as D grows "
                        "while the expected depth grows (App D, Fig 9 row 1)",
                        f"per seed, growth of the expected depth {_values(growth['seeds']['d_expected'], 0)} against "
                        f"growth of d_opt {_values(growth['seeds']['d_opt'], 0)}; effect: their difference",
                        _test(growth["seeds"]["difference"], _paired), GREATER, gate or unidentified))
    return out


def growth_over_depth(ldn: dict[tuple[int, int], dict[str, Any]]) -> dict[str, Any] | None:
    """(b): per seed, the change of d_opt and of the expected depth from the smallest to the largest
    max depth >= SETTLED_FROM, and expected-depth growth minus d_opt growth (the claim's effect)."""
    depths = sorted({d for d, _ in ldn if d >= SETTLED_FROM})
    if len(depths) < 2:
        return None
    lo, hi = depths[0], depths[-1]
    seeds = sorted(s for d, s in ldn if d == hi and (lo, s) in ldn)
    g95 = [ldn[hi, s]["d_opt"] - ldn[lo, s]["d_opt"] for s in seeds]
    gexp = [ldn[hi, s]["d_expected"] - ldn[lo, s]["d_expected"] for s in seeds]
    diff = [e - o for e, o in zip(gexp, g95)]
    return {"from": lo, "to": hi, "d_opt": _stats(g95), "d_expected": _stats(gexp), "difference": _stats(diff),
            "seeds": {"d_opt": g95, "d_expected": gexp, "difference": diff},
            "unidentified": sum(q_plateau(ldn[hi, s]["q"]) is not None for s in seeds)}


def verdicts_markdown(f: dict[str, Any]) -> str:
    """The verdict table, or why there is none."""
    rows = verdicts(f)
    if not rows:
        return f"No verdicts: no max depth D ≥ {SETTLED_FROM} in this study.\n"
    why = not_learnt(f)
    head = (f"**No verdict: the LDNs did not learn** ({why}; the bar is in the table of LDNs). The tests are shown "
            "for what they measure, not as findings.\n\n" if why else "")
    return head + claims.table(rows)


def _q_change(diagnostic: dict[str, Any]) -> str:
    """A table cell: q's change before the epoch it is judged at, and that epoch."""
    if diagnostic["tv_change"] is None:
        return "–"
    return f"{diagnostic['tv_change']:.3f} ({diagnostic['judged_at']})"


def ldn_markdown(f: dict[str, Any]) -> str:
    """One row per LDN: whether it trained and settled, how far q moved, and whether d_opt is identified."""
    lines = [f"Bar for D ≥ {SETTLED_FROM}: at least {MIN_STEPS} SGD steps before the kept epoch and a q(d) change "
             f"of at most {MAX_TV_CHANGE} (total variation) over the last 20% of the epochs before it, counting only "
             "epochs run before any change of learning rate (a smaller rate moves q less whether or not it has "
             "converged, so a network whose rate dropped is judged at the last epoch before the drop). "
             f"d_opt is not identified where q has not fallen below {PLATEAU_LEVEL:g} × its maximum by the "
             "deepest depth: on a plateau reaching D the 95% rule (the shallowest d with q(d) ≥ 0.95 max q) "
             "picks whichever of its depths the noise in q lifts first.", "",
             "| D | seed | kept epoch / epochs | patience ran out | SGD steps to kept | q change, last 20% (judged at "
             "epoch) | H/H_max | TV from uniform "
             "| d_opt | expected depth | plateau from | validation LL s.e. |",
             "|---:|---:|---|---|---:|---|---|---|---:|---:|---|---|"]
    for g in f["ldns"]:
        change = _q_change(g)
        flag = "" if settled(g) else " (below the bar)"
        se = "–" if g["validation_se"] is None else f"{g['validation_se']:.3f}"
        plateau = "–" if g["plateau_start"] is None or g["max_depth"] == 0 else f"d = {g['plateau_start']}: not identified"
        spent = {True: "yes", False: "no", None: "–"}[g["patience_spent"]]
        lines.append(f"| {g['max_depth']} | {g['seed']} | {g['best_epoch']} / {g['epochs']} | {spent} | {g['steps']} | "
                     f"{change}{flag} | {g['entropy_fraction']:.2f} | {g['tv_from_uniform']:.2f} | {g['d_opt']} | "
                     f"{g['d_expected']} | {plateau} | {se} |")
    return "\n".join(lines) + "\n"


def cap_markdown(base: dict[str, Any], higher: dict[str, Any]) -> str:
    """The study's LDNs again at a higher epoch cap (`higher`, a summary of the same study run with
    a larger `--max-epochs`) against the study (`base`): per LDN trained in both, the kept epoch, q's
    change before it, its test log-likelihood, and whether it met the bar at the higher cap."""
    def ldns(summary):
        return {(r["max_depth"], r["seed"]): r for r in summary["records"] if r["method"] == "ldn"}

    def cap(records):
        return "/".join(str(c) for c in sorted({r["train_config"]["max_epochs"] for r in records}))

    low, high = ldns(base), ldns(higher)
    both = sorted(set(low) & set(high))
    if not both:
        return "No LDN of the study is trained at a higher cap yet.\n"
    low_cap, high_cap = cap([low[k] for k in both]), cap([high[k] for k in both])
    lines = [f"`{higher.get('command', '')}` (cap {high_cap}) against the study (cap {low_cap}):", "",
             f"| D | seed | kept epoch / epochs, cap {low_cap} | cap {high_cap} | q change (judged at), cap {low_cap} "
             f"| cap {high_cap} | LDN-full test LL, cap {low_cap} | cap {high_cap} | met the bar at cap {high_cap} |",
             "|---:|---:|---|---|---|---|---:|---:|---|"]
    moved, held, met = 0, 0, 0
    for key in both:
        a, b = low[key], high[key]
        ga, gb = ldn_diagnostics(a), ldn_diagnostics(b)
        moved += a["best_epoch"] != b["best_epoch"]
        bar = "–" if key[0] < SETTLED_FROM else ("yes" if settled(gb) else "no")  # shallower LDNs are not held to it
        held, met = held + (bar != "–"), met + (bar == "yes")
        change = [_q_change(g) for g in (ga, gb)]
        lines.append(f"| {key[0]} | {key[1]} | {a['best_epoch']} / {a['epochs']} | {b['best_epoch']} / {b['epochs']} | "
                     f"{change[0]} | {change[1]} | {a['ldn_full']['log_lik']:.4f} | {b['ldn_full']['log_lik']:.4f} | "
                     f"{bar} |")
    rest: dict[int, list[int]] = {}
    for d, seed in sorted(set(low) - set(high)):
        rest.setdefault(d, []).append(seed)
    lines += ["", f"The kept epoch moved for {moved} of the {len(both)} LDNs trained at both caps; {met} of the {held} "
                  f"held to the bar (D ≥ {SETTLED_FROM}) met it at cap {high_cap}."
              + (f" Not trained at cap {high_cap} yet: " + "; ".join(
                  f"D = {d} (seed{'s' if len(v) > 1 else ''} {', '.join(map(str, v))})" for d, v in rest.items()) + "."
                 if rest else "")]
    return "\n".join(lines) + "\n"


def ablation_findings(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each ablation variant against the study's own networks of the same max depth and seeds:
    per method, LL / error / ECE (and d_opt for the LDN), and the paired change, variant − study."""
    base = {(r["method"], r["max_depth"], r["seed"]): r for r in summary["records"]}
    out = []
    for name, variant in summary.get("ablation", {}).items():
        for method in ("ldn", "ddn"):
            recs = [r for r in variant["records"] if r["method"] == method]
            pairs = [(r, base.get((method, r["max_depth"], r["seed"]))) for r in recs]
            pairs = [(r, b) for r, b in pairs if b is not None]
            if not pairs:
                continue
            row: dict[str, Any] = {"variant": name, "changes": variant["changes"], "method": method,
                                   "max_depth": sorted({r["max_depth"] for r, _ in pairs}), "n": len(pairs)}
            for m in ("log_lik", "error", "ece"):
                pick = (lambda r: r["ldn_full"][m]) if method == "ldn" else (lambda r: r["test"][m])
                row[m] = _stats([pick(r) for r, _ in pairs])
                row[f"{m}_changes"] = [pick(r) - pick(b) for r, b in pairs]
                row[f"{m}_change"] = _stats(row[f"{m}_changes"])
            if method == "ldn":
                row["d_opt"] = _stats([r["d_opt"] for r, _ in pairs])
                row["d_opt_changes"] = [r["d_opt"] - b["d_opt"] for r, b in pairs]
                row["d_opt_change"] = _stats(row["d_opt_changes"])
                row["pruned_log_lik_change"] = _stats([r["ldn_95"]["log_lik"] - b["ldn_95"]["log_lik"] for r, b in pairs])
            out.append(row)
    return out


def ablation_markdown(summary: dict[str, Any]) -> str:
    """The ablation table: each variant's networks and their paired change from the study's."""
    rows = ablation_findings(summary)
    if not rows:
        return "No ablation in this summary.\n"
    lines = ["| variant | network | D | test LL | change | test error | change | ECE | change | d_opt | change |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d_opt = (f"{_pm(r['d_opt'], 1)} | {_pm(r['d_opt_change'], 1)}" if "d_opt" in r else "– | –")
        lines.append(f"| {r['variant']} | {'LDN-full' if r['method'] == 'ldn' else 'DDN-D'} | "
                     f"{', '.join(map(str, r['max_depth']))} | {_pm(r['log_lik'])} | {_pm(r['log_lik_change'])} | "
                     f"{_pm(r['error'])} | {_pm(r['error_change'])} | {_pm(r['ece'])} | {_pm(r['ece_change'])} | "
                     f"{d_opt} |")
    metrics = (("log_lik", "test LL"), ("error", "error"), ("ece", "ECE"), ("d_opt", "d_opt"))
    tests = [(r["variant"], f"{'LDN' if r['method'] == 'ldn' else 'DDN'} {word}", _paired(np.asarray(c, np.float64)))
             for r in rows for m, word in metrics if len(c := r.get(f"{m}_changes", [])) >= 2]
    adjusted = stats.holm([t.p for _, _, t in tests]) if tests else []
    found: dict[str, list[str]] = {}
    for (name, what, t), p in zip(tests, adjusted):
        if p < stats.ALPHA:
            found.setdefault(name, []).append(f"{what} {t.effect:+.3g} (95% CI [{t.ci95[0]:.3g}, {t.ci95[1]:.3g}], "
                                              f"Holm p {p:.2g})")
    lines += ["", f"Changes significant under the rule (paired t over seeds, Holm over the {len(tests)} changes of "
              "this table): " + "; ".join(f"{name}: {', '.join(found.get(name, [])) or 'none'}"
                                          for name in summary["ablation"]) + "."]
    return "\n".join(lines) + "\n"


def write_study(summary: dict[str, Any], out) -> list:
    """Writes `out/summary.json` and draws the study's Figs 4, 9, 10 and 11 into `out`."""
    from pathlib import Path

    from vdjax.io import write_json

    out = Path(out)
    path = write_json(out / "summary.json", summary)
    return [path, *study_figures(summary, out)]


def study_figures(summary: dict[str, Any], out) -> list:
    """The study's Figs 4, 9, 10 and 11 drawn into `out`; Fig 4 says so where the q(d) it shows
    (the LDNs at the deepest D) did not meet the bar."""
    from vdjax.studies.image_runs import draw_image_figures

    by_dataset = records_by_dataset(summary)
    return draw_image_figures(by_dataset, out, {name: note for name, rs in by_dataset.items()
                                                if (note := unsettled_note(rs))})


def unsettled_note(records: list[dict[str, Any]]) -> str:
    """'' if every LDN at the deepest max depth of `records` met the bar, else a line naming those
    that did not."""
    ldn = [r for r in records if r["method"] == "ldn"]
    if not ldn:
        return ""
    deepest = max(r["max_depth"] for r in ldn)
    below = [r["seed"] for r in ldn if r["max_depth"] == deepest and not settled(ldn_diagnostics(r))]
    if not below:
        return ""
    return (f"q(d) not settled (below the study's bar) for seed{'s' if len(below) > 1 else ''} "
            f"{', '.join(map(str, sorted(below)))}: not a finding")


def records_by_dataset(summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    by_dataset: dict[str, list] = {}
    for r in summary["records"]:
        by_dataset.setdefault(r["dataset"], []).append(r)
    return by_dataset




def _pm(s: dict[str, float], digits: int = 3, scale: float = 1.0) -> str:
    return "–" if not s or s.get("n", 0) == 0 else f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"


def findings_markdown(f: dict[str, Any]) -> str:
    """The README's table of a study: per max depth D, mean ± std over seeds."""
    lines = [] if f.get("q_learnt") is not False else [
        "**q(d) stayed near uniform**: at D ≥ 10 its total-variation distance from uniform is below "
        f"{Q_MOVED_TV} and its entropy within a few percent of log(D+1) (columns H/H_max and TV), so "
        "the networks had not learnt a posterior over depth. This study does not test the paper's image "
        "findings; no verdict is drawn from it.",
        "",
    ]
    if f.get("unsettled") and f.get("q_learnt") is not False:
        lines += [f"**Not trained to the study's bar** ({MIN_STEPS} SGD steps before the kept epoch and a q(d) "
                  f"change of at most {MAX_TV_CHANGE} over the last 20% of its epochs before any change of learning "
                  f"rate, at D ≥ {SETTLED_FROM}): {', '.join(f['unsettled'])}. No verdict is drawn from this study.",
                  ""]
    lines += [
        "| D | d_opt | H/H_max | TV | LDN-full LL | LDN-95 LL | DDN-D LL | LDN-95 − LDN-full LL | LDN-95 − DDN-D LL "
        "| LDN-95 err | DDN-D err | LDN-full ECE | DDN-D ECE | pruned vs DDN-D forward | epochs |",
        "|---:|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in f["per_depth"]:
        lines.append(
            f"| {r['max_depth']} | {_pm(r['d_opt'], 1)} | {_pm(r['entropy_fraction'], 2)} "
            f"| {_pm(r['tv_from_uniform'], 2)} | {_pm(r['ldn_full_log_lik'])} | {_pm(r['ldn_95_log_lik'])} "
            f"| {_pm(r['ddn_log_lik'])} | {_pm(r['pruned_minus_full'])} | {_pm(r['pruned_minus_ddn'])} "
            f"| {_pm(r['ldn_95_error'])} | {_pm(r['ddn_error'])} | {_pm(r['ldn_full_ece'])} | {_pm(r['ddn_ece'])} "
            f"| {_pm(r['speedup'], 0, 100).replace(' ± ', '% ± ') + '%' if r['speedup']['n'] else '–'} "
            f"| {_pm(r['epochs'], 0)} |")
    p, b = f["pooled"], f["best_ddn"]
    lines += [
        "",
        f"Pooled over D > 0 (mean ± std over depths and seeds): LDN-95 − LDN-full log-likelihood "
        f"{_pm(p['pruned_minus_full'])}; LDN-95 − DDN-D {_pm(p['pruned_minus_ddn'])} (error "
        f"{_pm(p['pruned_err_minus_ddn'])}); ECE of DDN-D − LDN-full {_pm(p['ece_ddn_minus_ldn'])}. "
        f"Best DDN by test log-likelihood: D = {b['max_depth']} ({_pm(b)}). "
        f"d_opt (mean over seeds) ranges over {f['d_opt_range_over_D']} across D > 0. "
        f"Stop reasons: {', '.join(f'{k} {v}' for k, v in f['stopped'].items())}.",
    ]
    if not f["complete"]:
        lines += ["", f"**Partial:** {len(f['missing'])} networks of the study are not trained yet "
                      f"({', '.join(f['missing'])})."]
    s = f.get("speed_large_depth")
    if s:
        source = f" (the mean d_opt of the LDNs at D = {s['d_opt_from_D']})" if "d_opt_from_D" in s else ""
        lines += ["", f"Forward pass at D = {s['ddn_depth']} (batch {s['batch']}, untrained weights): DDN "
                      f"{1000 * s['ddn_seconds']:.0f} ms, pruned to d_opt = {s['pruned_depth']}{source} "
                      f"{1000 * s['pruned_seconds']:.0f} ms: **{100 * s['speedup']:.0f}% faster**."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """`python3 -m vdjax.studies.image_study SUMMARY [--figures DIR]`: the findings of a committed summary
    as JSON, and its figures redrawn into DIR."""
    import argparse
    import json

    from vdjax.io import read_json, to_jsonable

    p = argparse.ArgumentParser(prog="python3 -m vdjax.studies.image_study", description=main.__doc__)
    p.add_argument("summary", help="a summary.json written by an image study")
    p.add_argument("--figures", default=None, help="directory to draw the study's figures into")
    args = p.parse_args(argv)
    summary = read_json(args.summary)
    if args.figures:
        for path in study_figures(summary, args.figures):
            print(f"wrote {path}")
    print(json.dumps(to_jsonable(findings(summary)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
