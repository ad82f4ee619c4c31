"""The image study's findings, computed from a hand-built summary whose answers are known."""

import pytest

from vdjax.studies.image_study import compact, findings, findings_markdown, summarize


def _metrics(ll, err, ece):
    return {"log_lik": ll, "error": err, "ece": ece}


def _ldn(d, seed, d_opt, full, pruned, speedup=None, d_expected=None):
    q = [0.9] + [0.1 / d] * d if d else [1.0]  # far from uniform, fallen by the deepest depth
    r = {"dataset": "toy", "method": "ldn", "max_depth": d, "seed": seed, "d_opt": d_opt,
         "d_expected": d_opt + 1 if d_expected is None else d_expected, "q": q,
         "ldn_full": _metrics(*full), "ldn_95": _metrics(*pruned), "ldn_expected": _metrics(*pruned),
         "epochs": 10 + seed, "best_epoch": 9, "n_train": 6400, "train_config": {"batch_size": 32},
         "stopped": "patience", "history": [{"epoch": e, "q": q} for e in range(10 + seed)]}
    if speedup is not None:
        r["speed"] = {"speedup": speedup}
    return r


def _ddn(d, seed, ll, err, ece):
    return {"dataset": "toy", "method": "ddn", "max_depth": d, "seed": seed, "test": _metrics(ll, err, ece),
            "epochs": 12, "stopped": "max_epochs" if d == 0 else "patience", "history": []}


def test_findings_from_a_known_summary():
    records = [
        _ddn(0, 0, -1.0, 0.4, 0.05), _ddn(0, 1, -1.2, 0.5, 0.07),
        _ddn(4, 0, -0.5, 0.2, 0.10), _ddn(4, 1, -0.7, 0.3, 0.12),
        _ldn(0, 0, 0, (-1.1, 0.4, 0.04), (-1.1, 0.4, 0.04)), _ldn(0, 1, 0, (-1.1, 0.4, 0.04), (-1.1, 0.4, 0.04)),
        _ldn(4, 0, 2, (-0.60, 0.25, 0.02), (-0.62, 0.26, 0.03), 0.4),
        _ldn(4, 1, 3, (-0.60, 0.25, 0.04), (-0.64, 0.27, 0.05), 0.2),
    ]
    summary = summarize(records, {"ddn_depth": 50, "pruned_depth": 3, "batch": 8, "ddn_seconds": 1.0,
                                  "pruned_seconds": 0.25, "speedup": 0.75}, dataset="toy")
    assert all("history" not in r for r in summary["records"]) and compact(records[0]) == {
        k: v for k, v in records[0].items() if k != "history"}  # a DDN keeps no per-epoch q
    assert compact(records[-1])["q_history"] == [records[-1]["q"]] * 11
    f = findings(summary)
    d4 = f["per_depth"][1]
    assert d4["max_depth"] == 4
    assert d4["d_opt"] == {"mean": 2.5, "std": 0.5, "n": 2}
    # (a) LDN-95 - LDN-full: -0.02 and -0.04; LDN-95 - DDN-4: -0.12 and +0.06.
    assert d4["pruned_minus_full"]["mean"] == pytest.approx(-0.03)
    assert d4["pruned_minus_ddn"]["mean"] == pytest.approx(-0.03) and d4["pruned_minus_ddn"]["std"] == pytest.approx(0.09)
    # (c) DDN ECE - LDN-full ECE: 0.08 and 0.08.
    assert d4["ece_ddn_minus_ldn"]["mean"] == pytest.approx(0.08) and d4["ece_ddn_minus_ldn"]["std"] == pytest.approx(0)
    # (d) per-D speed-ups, and pooled values only over D > 0.
    assert d4["speedup"]["mean"] == pytest.approx(0.3) and f["per_depth"][0]["speedup"]["n"] == 0
    assert f["pooled"]["pruned_minus_full"]["n"] == 2
    assert f["best_ddn"]["max_depth"] == 4 and f["best_ddn"]["mean"] == pytest.approx(-0.6)
    assert f["d_opt_range_over_D"] == [2.5, 2.5] and f["stopped"] == {"max_epochs": 2, "patience": 6}
    text = findings_markdown(f)
    assert "| 4 | 2.5 ± 0.5 |" in text and "**75% faster**" in text and "30% ± 10%" in text
    assert f["per_depth"][0]["ddn_log_lik"]["mean"] == pytest.approx(-1.1)


def test_q_movement_by_hand():
    """Entropy fraction and total-variation distance from uniform, and the study flagged as not
    having learnt when q is near uniform at D >= 10."""
    import numpy as np

    from vdjax.studies.image_study import q_movement

    m = q_movement([0.25, 0.25, 0.25, 0.25])
    assert abs(m["entropy_fraction"] - 1.0) < 1e-12 and m["tv_from_uniform"] == 0.0
    m = q_movement([0.7, 0.1, 0.1, 0.1])
    h = -(0.7 * np.log(0.7) + 3 * 0.1 * np.log(0.1))
    assert abs(m["entropy_fraction"] - h / np.log(4)) < 1e-12 and abs(m["tv_from_uniform"] - 0.45) < 1e-12
    assert q_movement([1.0, 0.0])["entropy_fraction"] == 0.0


def test_a_study_whose_q_stayed_uniform_says_so_and_draws_no_verdict():
    flat = [{**_ldn(10, s, 6, (-0.6, 0.2, 0.03), (-0.6, 0.2, 0.03)), "q": [1 / 11] * 11} for s in (0, 1)]
    f = findings(summarize(flat + [_ddn(10, s, -0.5, 0.2, 0.04) for s in (0, 1)], None, dataset="toy"))
    assert f["q_learnt"] is False and f["per_depth"][0]["tv_from_uniform"]["mean"] == 0.0
    assert findings_markdown(f).startswith("**q(d) stayed near uniform**")
    learnt = [{**r, "q": [0.5] + [0.05] * 10} for r in flat]
    f = findings(summarize(learnt + [_ddn(10, s, -0.5, 0.2, 0.04) for s in (0, 1)], None, dataset="toy"))
    assert f["q_learnt"] is True and not findings_markdown(f).startswith("**q(d) stayed")


def test_q_settling_is_the_largest_change_over_the_last_fifth_before_the_kept_epoch():
    from vdjax.studies.image_study import q_settling

    # 10 epochs, kept epoch 9: the window is epochs 7 and 8 (ceil(0.2 * 10) = 2 epochs before it).
    qs = [[1.0, 0.0]] * 7 + [[0.6, 0.4], [0.55, 0.45], [0.5, 0.5]]
    history = [{"q": q} for q in qs]
    got = q_settling(history, best_epoch=9, steps_per_epoch=15)
    assert got["steps"] == 150
    assert got["tv_change"] == pytest.approx(0.1)  # |0.6 - 0.5| (epoch 7), not epoch 6's 0.5
    assert q_settling(history, best_epoch=0, steps_per_epoch=15) == {"steps": 15, "tv_change": 0.0}


def test_q_plateau_marks_a_posterior_that_has_not_fallen_by_the_deepest_depth():
    from vdjax.studies.image_study import q_plateau

    assert q_plateau([0.1, 0.6, 0.2, 0.1]) is None  # falls below half its maximum by d = 3
    assert q_plateau([0.05, 0.14, 0.3, 0.25, 0.26]) == 2  # >= 0.15 (half of 0.3) from d = 2 on
    assert q_plateau([0.1, 0.1, 0.8]) == 2  # the mode at the deepest depth: more depth was wanted
    assert q_plateau([1.0]) is None


def _study(full_dddn=(-0.60, -0.62), pruned=(-0.61, -0.62), ddn=(-0.70, -0.71), ece=((0.02, 0.03), (0.06, 0.05)),
           speed=(0.5, 0.52), expected=((4, 4), (9, 10)), q_deep=None):
    """LDN and DDN at D = 10 and 20, seeds 0 and 1, with chosen effects."""
    records = []
    for i, d in enumerate((10, 20)):
        for s in (0, 1):
            r = _ldn(d, s, 3, (full_dddn[s], 0.2, ece[0][s]), (pruned[s], 0.2, 0.03), speed[s], expected[i][s])
            if q_deep is not None and d == 20:
                r["q"] = q_deep
            records += [r, _ddn(d, s, ddn[s], 0.25, ece[1][s])]
    return records


def test_verdicts_follow_the_rule_on_known_effects():
    from vdjax.studies.image_study import findings, verdicts, verdicts_markdown

    f = findings(summarize(_study(), None, dataset="toy"))
    assert f["unsettled"] == [] and f["q_learnt"] is True
    a_ddn, a_full, b, c, d = (v["verdict"] for v in verdicts(f))
    # (a) LDN-95 - DDN: +0.09 and +0.09 -> reproduced; LDN-95 - full: -0.01 and 0.00 -> mean -0.005,
    # std 0.005: within twice its spread -> not resolved.
    assert a_ddn == "reproduced" and a_full == "not resolved at this scale"
    # (b) expected depth grows 5 and 6, d_opt 0 and 0: difference 5.5 +- 0.5 -> reproduced.
    assert b == "reproduced"
    # (c) DDN ECE - LDN ECE: 0.04 and 0.02 -> 0.03 +- 0.01 -> reproduced; (d) 51% +- 1% -> reproduced.
    assert c == "reproduced" and d == "reproduced"
    # The other way round beyond twice the spread: not reproduced.
    f = findings(summarize(_study(ddn=(-0.50, -0.51)), None, dataset="toy"))
    assert [v["verdict"] for v in verdicts(f)][0] == "not reproduced"
    assert "| (a) |" in verdicts_markdown(f) and "Rule:" in verdicts_markdown(f)


def test_an_unidentified_d_opt_leaves_b_unresolved():
    from vdjax.studies.image_study import findings, verdicts

    flat_tail = [0.01] * 5 + [0.06] * 16  # q flat over d = 5..20: the 95% rule cuts a plateau
    f = findings(summarize(_study(q_deep=flat_tail), None, dataset="toy"))
    b = [v for v in verdicts(f) if v["claim"] == "(b)"][0]
    assert b["verdict"] == "not resolved at this scale" and "not identified" in b["ours"]
    assert [g["plateau_start"] for g in f["ldns"] if g["max_depth"] == 20] == [5, 5]


def test_an_ldn_below_the_bar_stops_every_verdict():
    """Too few SGD steps before the kept epoch, or a q that still moved over the last fifth of
    the epochs before it, and the study draws no verdict and says which networks failed."""
    from vdjax.studies.image_study import findings, findings_markdown, ldn_diagnostics, settled, verdicts_markdown

    records = _study()
    short = records[0]  # D = 10 seed 0: 10 epochs of 200 steps, kept epoch 9 -> 2000 steps
    assert ldn_diagnostics(compact(short))["steps"] == 2000 and settled(ldn_diagnostics(compact(short)))
    moving = dict(records[2], history=[{"q": [1 / 11] * 11}] * 8 + [{"q": records[2]["q"]}] * 3)
    g = ldn_diagnostics(compact(moving))  # window: epochs 7 and 8 (ceil(0.2 * 10) = 2 before epoch 9)
    assert g["tv_change"] > 0.02 and not settled(g)
    f = findings(summarize([moving] + records[1:2] + records[3:], None, dataset="toy"))
    assert f["unsettled"] == ["D=10 seed 1"]
    assert verdicts_markdown(f).startswith("No verdicts: LDNs that did not settle: D=10 seed 1")
    assert "**Not trained to the study's bar**" in findings_markdown(f)
    few = dict(records[0], best_epoch=4)  # 5 epochs x 200 steps = 1000 < 2000
    assert not settled(ldn_diagnostics(compact(few)))


def test_ablation_changes_are_paired_by_seed():
    from vdjax.studies.image_study import ablation_findings, ablation_markdown

    base = _study()
    variant = [dict(r, ldn_full=_metrics(r["ldn_full"]["log_lik"] + 0.1 * (1 + r["seed"]), 0.2, 0.01),
                    d_opt=r["d_opt"] + 1) for r in base if r["method"] == "ldn" and r["max_depth"] == 10]
    summary = summarize(base, None, {"head_norm=shared": {"changes": {"head_norm": "shared"}, "records": variant}},
                        dataset="toy")
    (row,) = ablation_findings(summary)
    assert row["method"] == "ldn" and row["max_depth"] == [10] and row["n"] == 2
    assert row["log_lik_change"]["mean"] == pytest.approx(0.15) and row["log_lik_change"]["std"] == pytest.approx(0.05)
    assert row["d_opt_change"] == {"mean": 1.0, "std": 0.0, "n": 2}
    text = ablation_markdown(summary)
    assert "| head_norm=shared | LDN-full | 10 |" in text
    # The error stays 0.2 (no change); ECE 0.02 / 0.03 -> 0.01: -0.015 +- 0.005, beyond twice its spread.
    assert "head_norm=shared: LDN test LL 0.150 ± 0.050, LDN ECE -0.015 ± 0.005, LDN d_opt 1.0 ± 0.0." in text


def test_validation_log_lik_and_its_standard_error_by_hand():
    import numpy as np

    from vdjax.studies.image_runs import validation_log_lik

    logits = np.log(np.array([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]],      # depth 0
                              [[0.7, 0.3], [0.6, 0.4], [0.1, 0.9]]]))    # depth 1
    labels = np.array([0, 0, 1])
    q = np.array([0.25, 0.75])
    p = 0.25 * np.array([0.5, 0.9, 0.8]) + 0.75 * np.array([0.7, 0.6, 0.9])
    got = validation_log_lik(logits, labels, q)
    assert got["n"] == 3 and got["log_lik"] == pytest.approx(np.log(p).mean())
    assert got["log_lik_se"] == pytest.approx(np.log(p).std(ddof=1) / np.sqrt(3))
    ddn = validation_log_lik(logits, labels, None)  # a DDN: its own (last) head
    assert ddn["log_lik"] == pytest.approx(np.log([0.7, 0.6, 0.9]).mean())
