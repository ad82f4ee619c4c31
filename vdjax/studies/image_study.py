"""An image study summarised: the paper's four image findings computed from its records.

`summarize` keeps the records of a study without their per-epoch histories (small enough to
commit) together with the timing of the pruned network at a larger max depth; `findings`
computes from such a summary, with mean and std over seeds:
  (a) pruning to d_opt costs nothing: LDN-95 against LDN-full and against the DDNs;
  (b) d_opt stays stable as the max depth D grows;
  (c) LDNs are better calibrated than DDNs (ECE of LDN-full against the DDN of the same D);
  (d) the pruned network is faster than the DDN of the same D (forward pass, same batch).
Everything a README table or figure shows is computed here from the committed summary.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from vdjax.studies.image_runs import forward_speedup
from vdjax.nn.models import ModelConfig
from vdjax.depth.prune import prune

SUMMARY_VERSION = 1


def compact(record: dict[str, Any]) -> dict[str, Any]:
    """A results record without its per-epoch history (kept: epochs, best epoch, stop reason)."""
    return {k: v for k, v in record.items() if k != "history"}


def untrained_speed(max_depth: int, d_opt: int, input_shape: tuple[int, ...], num_classes: int = 10,
                    batch: int = 512, seed: int = 0) -> dict[str, float]:
    """Forward time of a DDN of `max_depth` (its own head only) against the same network pruned to
    `d_opt` (all d_opt + 1 heads, for the marginal), on one random batch. Weights do not change
    the cost of the forward pass, so untrained parameters serve for timing."""
    config = ModelConfig("cnn", max_depth, num_classes, tuple(input_shape))
    from vdjax.nn.models import LDN

    x = np.random.default_rng(seed).normal(size=(batch, *config.input_shape)).astype(np.float32)
    variables = jax.device_get(LDN(config).init(jax.random.key(seed), x[:1]))
    q = np.full(max_depth + 1, 1.0 / (max_depth + 1))
    pruned = prune(config, variables, q, d_opt)
    return forward_speedup(config, variables, pruned.config, pruned.variables, x)


def summarize(records: list[dict[str, Any]], speed: dict[str, Any] | None = None, **about: Any) -> dict[str, Any]:
    """The committed form of a study: compact records, the large-D timing, and what it was."""
    return {"version": SUMMARY_VERSION, **about, "speed_large_depth": speed,
            "records": [compact(r) for r in sorted(records, key=lambda r: (r["method"], r["max_depth"], r["seed"]))]}


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
               window: float = 0.2) -> dict[str, float]:
    """Whether a network's q(d) had settled when its kept epoch was reached: the SGD steps up to
    and including that epoch, and the largest total-variation distance between q at the kept
    epoch and q at any of the last `window` of the epochs before it (the history's per-epoch `q`)."""
    kept = np.asarray(history[best_epoch]["q"], np.float64)
    first = best_epoch - max(1, int(np.ceil(window * (best_epoch + 1))))
    earlier = [np.asarray(h["q"], np.float64) for h in history[max(first, 0) : best_epoch]]
    change = max((0.5 * float(np.abs(q - kept).sum()) for q in earlier), default=0.0)
    return {"steps": (best_epoch + 1) * steps_per_epoch, "tv_change": change}


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
    return {
        "q_learnt": None if not deep_tv else min(deep_tv) >= Q_MOVED_TV,  # None: no D >= 10 to judge by
        "per_depth": per_depth,
        "pooled": {k: _stats(v) for k, v in pooled.items()},
        "best_ddn": {"max_depth": best_ddn, **(ddn_ll[best_ddn] if best_ddn is not None else {})},
        "d_opt_range_over_D": [float(min(deep)), float(max(deep))] if deep else None,
        "stopped": {k: stopped.count(k) for k in sorted(set(stopped))},
        "speed_large_depth": summary.get("speed_large_depth"),
        "complete": summary.get("complete", True),
        "missing": summary.get("missing", []),
    }


def write_study(summary: dict[str, Any], out) -> list:
    """Writes `out/summary.json` and draws the study's Figs 4, 9, 10 and 11 into `out`."""
    from pathlib import Path

    from vdjax.studies.image_runs import draw_image_figures
    from vdjax.io import write_json

    out = Path(out)
    path = write_json(out / "summary.json", summary)
    return [path, *draw_image_figures(records_by_dataset(summary), out)]


def records_by_dataset(summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    by_dataset: dict[str, list] = {}
    for r in summary["records"]:
        by_dataset.setdefault(r["dataset"], []).append(r)
    return by_dataset


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
        from vdjax.studies.image_runs import draw_image_figures

        for path in draw_image_figures(records_by_dataset(summary), args.figures):
            print(f"wrote {path}")
    print(json.dumps(to_jsonable(findings(summary)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


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
