"""The committed tables are what their committed data render to; the renderer fills only marked
regions; and the verdict tables' tests, recomputed here with scipy from the committed JSON."""

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import report  # noqa: E402  (repository tooling, not part of the package)


def test_committed_tables_match_what_their_data_render():
    for doc, (committed, rendered) in report.render_documents().items():
        assert committed == rendered, f"{doc} is stale: run `python3 tools/report.py`"


def test_fill_replaces_only_the_marked_regions():
    text = ("a 1.02x\n<!-- BEGIN table:x -->\nold\n<!-- END table:x -->\nb\n"
            "<!-- BEGIN table:y -->\n<!-- END table:y -->\n")
    out = report.fill(text, lambda name: f"new {name}\n")
    assert out == ("a 1.02x\n<!-- BEGIN table:x -->\nnew x\n<!-- END table:x -->\nb\n"
                   "<!-- BEGIN table:y -->\nnew y\n<!-- END table:y -->\n")
    assert report.fill(out, lambda name: f"new {name}\n") == out


def test_check_fails_on_a_stale_table_and_rendering_fixes_it(tmp_path, capsys):
    sources = {t.source for t in (*report.TABLES.values(), *report.WHOLE_FILES.values())} | {report.REDRAWN}
    optional = {t.source for t in report.TABLES.values() if t.missing is not None}
    for rel in (*report.DOCUMENTS, *report.WHOLE_FILES, *sources):
        if rel in optional and not (report.ROOT / rel).exists():
            continue  # a result not measured yet renders as such
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if (report.ROOT / rel).is_dir():  # a folder of records (the spirals scans)
            shutil.copytree(report.ROOT / rel, tmp_path / rel, ignore=shutil.ignore_patterns("*.msgpack", "*.png"))
        else:
            shutil.copy(report.ROOT / rel, tmp_path / rel)
    results = tmp_path / "benchmarks/RESULTS.md"
    text = results.read_text()
    pruned = json.loads((tmp_path / report.BENCHMARK).read_text())["pruned"]
    headline = f"**{pruned['vdjax_vs_ideal']:.2f}x**"
    assert headline in text
    results.write_text(text.replace(headline, f"**{pruned['vdjax_vs_ideal'] - 0.3:.2f}x**"))  # a hand-edited headline
    assert report.main(["--check", "--root", str(tmp_path)]) == 1
    assert f"-| {pruned['max_depth']} | {pruned['d_opt']} | " in capsys.readouterr().out
    assert report.main(["--root", str(tmp_path)]) == 0
    assert results.read_text() == text
    assert report.main(["--check", "--root", str(tmp_path)]) == 0


def test_unknown_table_names_are_errors(tmp_path):
    (tmp_path / "doc.md").write_text("<!-- BEGIN table:nope -->\n<!-- END table:nope -->\n")
    with pytest.raises(KeyError, match="nope"):
        report.render_documents(tmp_path, documents=("doc.md",), whole_files={})


BENCH = {
    "machine": "m", "command": "c", "batch": 8, "shape": [8, 8, 1], "infer_batch": 16,
    "cnn": [{"max_depth": 2, "vdjax_compile_s": 2.0, "vdjax_step_s": 0.5, "vdjax_ex_s": 16.0},
            {"max_depth": 4, "vdjax_compile_s": 3.0, "vdjax_step_s": 1.0, "vdjax_ex_s": 8.0}],
    "spirals": {"seeds": 2, "max_depth": 4, "vdjax_s": 6.0, "vdjax_s_no_compile": 4.0, "vdjax_epochs": [1000, 2000],
                "torch_s": 60.0, "torch_epochs": [3000, 3000], "speedup": 10.0},
    "pruned": {"max_depth": 4, "d_opt": 1, "ideal_ratio": 0.4, "vdjax_full_s": 1.0, "vdjax_pruned_s": 0.5,
               "vdjax_ratio": 0.5, "vdjax_vs_ideal": 1.25},
}


def test_spirals_rows_divide_out_unequal_work():
    # 6 s for 3000 seed-epochs (2 ms each) against 60 s for 6000 (10 ms each): 5x per seed-epoch, not 10x.
    line = report.spirals_table(BENCH).splitlines()[4]
    assert line == "| 6.0 | 4.0 | 60.0 | 10.0x | 3000 | 6000 | 2.00 | 10.00 | 5.0x |"
    assert "5.0x per seed-epoch" in report.targets_table(BENCH)
    assert "Equal work" not in report.spirals_table(BENCH)


def test_spirals_equal_work_rows_render_when_measured():
    res = {**BENCH, "spirals_fixed_epochs": [
        {"seeds": 1, "max_epochs": 1000, "vdjax_s": 4.0, "vdjax_s_no_compile": 1.6, "torch_s": 15.0},
        {"seeds": 6, "max_epochs": 1000, "vdjax_s": 9.0, "vdjax_s_no_compile": 6.0}]}
    text = report.spirals_table(res)
    assert "| 1 | 1000 | 4.0 | 1.6 | 15.0 | 3.8x | 9.4x | 1.60 | 15.00 |" in text
    assert "| 6 | 1000 | 9.0 | 6.0 | - | - | - | 6.00 | - |" in text


def test_runs_without_pytorch_leave_its_columns_empty():
    md = report.benchmark_markdown(BENCH)
    assert "| 2 | 16.0 | - | - | 0.500 | - | 2.00 |" in md and "D=4 / D=2: **1.50x**" in md
    assert "| 4 | 1 | 16 | 0.400 | 0.500 (500 / 1000 ms) | **1.25x** | - |" in md
    assert "| pruned inference within 15% of ideal | **not met**: 1.25x ideal |" in md


def _nas_row(strategy, seed, grads, forwards, seconds, compile_seconds):
    cost = {"forward_passes": forwards, "gradient_evaluations": grads, "hessian_vector_products": 0,
            "seconds": seconds, "compile_seconds": compile_seconds, "seconds_no_compile": seconds - compile_seconds}
    return {"dataset": "spirals", "strategy": strategy, "seed": seed, "max_depth": 3, "chosen_depth": 2,
            "search_steps": 0 if strategy in ("ldn", "grid") else 100, "total": cost,
            "test": {"log_lik": -0.1, "error": 0.05, "ece": 0.01}}


def test_nas_costs_are_means_over_seeds_of_the_counted_passes():
    rows = [_nas_row("ldn", 0, 100, 0, 3.0, 2.0), _nas_row("ldn", 1, 300, 0, 5.0, 2.0),
            _nas_row("grid", 0, 2000, 4, 30.0, 20.0), _nas_row("darts1", 0, 400, 100, 8.0, 6.0)]
    assert report.nas_costs(rows) == (
        "- spirals: the LDN 200 gradient evaluations, 4 s (2 s without compiling); the other strategies "
        "400–2000 gradient evaluations and 4–100 forward passes, 8–30 s (2–10 s without compiling); the grid "
        "search alone 2000 gradient evaluations, 30 s (10 s without compiling).\n")
    assert report.nas_setting(rows) == "Committed run: spirals: max_depth 3, 2 seeds, 100 search steps.\n"


# ---------------------------------------------------------------------------- verdict tables by hand

def _page(doc: str) -> str:
    return (report.ROOT / doc).read_text()


def _cells(effect: float, lo: float, hi: float, n: str, p: float) -> str:
    """The cells `stats.cells` writes for a test: effect, 95% CI, n (in table order, test first)."""
    f = lambda x: format(x + 0.0, ".3g")  # noqa: E731
    return f"| {n} | {f(effect)} | [{f(lo)}, {f(hi)}] |", format(p + 0.0, ".2g")


def _row(doc: str, start: str, contains: str = "") -> str:
    (line,) = [row for row in _page(doc).splitlines() if row.startswith(start) and contains in row]
    return line


def _ci(diff: np.ndarray) -> tuple[float, float]:
    half = sps.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
    return diff.mean() - half, diff.mean() + half


def test_the_spirals_complexity_verdict_is_welch_t_on_the_committed_records():
    from vdjax.studies.spirals_study import SCANS

    folders = report.load_spirals(report.ROOT / report.SPIRALS)["folders"]
    folder = report.ROOT / folders["scan_spiral_complexity"]
    d = {v: [s["d_argmax"] if "d_argmax" in s else int(np.argmax(s["q"])) for s in
             json.loads((folder / f"rotation={v:04d}.json").read_text())["seeds"]]
         for v in (SCANS["scan_spiral_complexity"].grid[0], SCANS["scan_spiral_complexity"].grid[-1])}
    (lo, a), (hi, b) = sorted(d.items())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one grid point's seeds may agree exactly
        want = sps.ttest_ind(b, a, equal_var=False)
    ci = want.confidence_interval()
    cells, p = _cells(np.mean(b) - np.mean(a), ci.low, ci.high, f"{len(b)}+{len(a)}", want.pvalue)
    line = _row("docs/results/spirals.md", "| Fig 6 (left), Fig 7", "LDNs increase their depth")
    assert "| Welch t " + cells in line and f"| – | {p} |" in line


def test_the_fig3_verdict_is_a_paired_t_by_seed_on_the_committed_records():
    from vdjax.studies.spirals_study import first_spiral_depth

    folders = report.load_spirals(report.ROOT / report.SPIRALS)["folders"]
    folder = report.ROOT / folders["scan_deterministic_depth_spirals"]
    ldn = json.loads(next(folder.glob("ldn_*.json")).read_text())
    ddn = json.loads(sorted(folder.glob("ddn_*.json"))[-1].read_text())
    first = lambda r: np.array([first_spiral_depth(s["test"]["per_depth_error"]) for s in r["seeds"]])  # noqa: E731
    diff = first(ddn) - first(ldn)
    want = sps.ttest_rel(first(ddn), first(ldn))
    cells, p = _cells(diff.mean(), *_ci(diff), str(len(diff)), want.pvalue)
    line = _row("README.md", "| Fig 3")
    assert "| paired t " + cells in line and f"| – | {p} |" in line


def test_the_uci_gap_verdict_is_a_paired_t_over_the_committed_splits():
    rows = json.loads((report.ROOT / report.DUN_UCI_FULL / "uci_boston.json").read_text())["gap"]["per_split"]
    full = np.array([r["test"]["ldn_full"]["log_lik"] for r in rows])
    mfvi = np.array([r["test"]["mfvi"]["log_lik"] for r in rows])
    want = sps.ttest_rel(full, mfvi)
    cells, p = _cells((full - mfvi).mean(), *_ci(full - mfvi), str(len(rows)), want.pvalue)
    text = _page("docs/results/dun.md")
    table = text.split("the full LDN (every depth, DUN's predictor) minus mean-field VI")[1]
    (line,) = [r for r in table.splitlines() if r.startswith("| boston |")][:1]
    assert "| paired t " + cells in line and f"| – | {p} |" in line


def test_the_nas_verdict_pairs_the_ldn_with_each_strategy_by_seed():
    rows = report.load_nas_rows(report.ROOT / report.NAS_ROWS)
    ll = {(r["strategy"], r["seed"]): r["test"]["log_lik"] for r in rows}
    seeds = sorted(s for k, s in ll if k == "darts2")
    ldn, darts = np.array([ll["ldn", s] for s in seeds]), np.array([ll["darts2", s] for s in seeds])
    want = sps.ttest_rel(ldn, darts)
    cells, p = _cells((ldn - darts).mean(), *_ci(ldn - darts), str(len(seeds)), want.pvalue)
    line = _row("docs/results/nas.md", "| spirals: darts2 |")
    assert "| paired t " + cells in line and f"| – | {p} |" in line


def test_the_image_calibration_test_is_a_paired_t_over_the_committed_seeds():
    summary = json.loads((report.ROOT / report.IMAGE_STUDY).read_text())
    recs = summary["records"]
    d = max(r["max_depth"] for r in recs)
    ece = {(r["method"], r["seed"]): (r["ldn_full"] if r["method"] == "ldn" else r["test"])["ece"]
           for r in recs if r["max_depth"] == d}
    seeds = sorted(s for m, s in ece if m == "ldn")
    ddn, ldn = np.array([ece["ddn", s] for s in seeds]), np.array([ece["ldn", s] for s in seeds])
    want = sps.ttest_rel(ddn, ldn)
    cells, p = _cells((ddn - ldn).mean(), *_ci(ddn - ldn), str(len(seeds)), want.pvalue)
    line = _row("docs/results/images.md", f"| (c) D = {d} |")
    assert "| paired t " + cells in line and f"| – | {p} |" in line


def test_the_rule_states_every_margin_once():
    from vdjax.studies import claims

    text = _page("README.md")
    assert text.count(claims.RULE) == 1
    for value, unit, _, why in claims.MARGINS:
        assert f"| ±{value:g} {unit} |" in text and why in text
    for doc in ("docs/results/spirals.md", "docs/results/images.md", "docs/results/dun.md", "docs/results/nas.md"):
        assert 'the rule: README, "How a verdict is reached"' in _page(doc)


def test_spirals_render_from_the_redrawn_folder_where_it_exists(tmp_path):
    old, new = tmp_path / "docs/data/spirals", tmp_path / "docs/data/spirals_redrawn"
    (old / "six_seeds").mkdir(parents=True)
    for path in ("results.json", "six_seeds/results.json"):
        (old / path).write_text("{}")
    (old / "scan_width_spirals").mkdir()
    (old / "scan_width_spirals" / "width=0002.json").write_text(json.dumps({"from": "old"}))
    (new / "scan_data_amount").mkdir(parents=True)
    (new / "scan_data_amount" / "n_train=0050.json").write_text(json.dumps({"from": "new"}))
    (old / "scan_data_amount").mkdir()
    (old / "scan_data_amount" / "n_train=0050.json").write_text(json.dumps({"from": "old"}))
    got = report.load_spirals(old)
    assert got["folders"]["scan_data_amount"] == "docs/data/spirals_redrawn/scan_data_amount"
    assert got["folders"]["scan_width_spirals"] == "docs/data/spirals/scan_width_spirals"
    assert got["scans"]["scan_data_amount"] == [{"from": "new"}] and got["scans"]["scan_width_spirals"] == [{"from": "old"}]
