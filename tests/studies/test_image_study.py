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
    assert q_settling(history, best_epoch=0, steps_per_epoch=15) == {"steps": 15, "tv_change": 0.0, "judged_at": 0}
    # Epochs 8 and 9 ran after a change of learning rate: q is judged at epoch 7, against epochs 5 and 6.
    got = q_settling(history, best_epoch=9, steps_per_epoch=15, excluded=[8, 9])
    assert got == {"steps": 150, "tv_change": pytest.approx(0.4), "judged_at": 7}
    assert q_settling(history, best_epoch=1, steps_per_epoch=15, excluded=[0, 1])["tv_change"] is None


def test_an_ldn_whose_rate_dropped_is_judged_on_the_epochs_before_the_drop():
    """q moves until the drop at epoch 5, then barely (the rate is ten times smaller): settled by
    the last fifth of its epochs, not by the epochs before the drop."""
    from vdjax.studies.image_study import epochs_after_lr_change, ldn_diagnostics, settled

    moving = [[0.9 - 0.1 * e, 0.1 + 0.1 * e] for e in range(5)] + [[0.5 - 0.001 * e, 0.5 + 0.001 * e] for e in range(10)]
    base = {**_ldn(10, 0, 3, (-0.6, 0.2, 0.02), (-0.6, 0.2, 0.02)), "epochs": 15, "best_epoch": 14,
            "history": [{"epoch": e, "q": q} for e, q in enumerate(moving)]}
    base["train_config"] = {"batch_size": 32, "learning_rate": 0.1, "lr_drop_epoch": 5, "lr_drop_factor": 0.1,
                            "lr_drop_methods": ["ldn", "ddn"]}
    assert epochs_after_lr_change(compact(base), window=15) == list(range(5, 15))
    g = ldn_diagnostics(compact(base))
    assert g["judged_at"] == 4 and g["tv_change"] == pytest.approx(0.1) and g["lr_changed"] and not settled(g)
    # The same history at a constant rate (the DDN-only drop of the reference): judged at the kept epoch.
    constant = dict(base, train_config={**base["train_config"], "lr_drop_methods": ["ddn"]})
    g = ldn_diagnostics(compact(constant))
    assert g["judged_at"] == 14 and g["tv_change"] == pytest.approx(0.003) and settled(g)
    # A record that stores each epoch's rate is read by it.
    recorded = dict(base, history=[{**h, "lr": 0.1} for h in base["history"]])
    assert ldn_diagnostics(compact(recorded))["judged_at"] == 14


def test_fig4_names_the_seeds_whose_q_had_not_settled(tmp_path, monkeypatch):
    """The q(d) figure of the deepest D says which LDNs missed the bar; with all settled it says nothing."""
    from vdjax.studies.image_study import study_figures, unsettled_note

    moving = [[0.9 - 0.05 * e, 0.1 + 0.05 * e] for e in range(15)]  # 0.05 per epoch to the end
    still = [[0.5, 0.5]] * 15
    ldns = [{**_ldn(10, s, 1, (-0.6, 0.2, 0.02), (-0.6, 0.2, 0.02)), "epochs": 15, "best_epoch": 14,
             "n_train": 32 * 200, "per_depth": {"log_lik": [-0.6] * 11}, "history": [{"epoch": e, "q": q} for e, q in enumerate(qs)]}
            for s, qs in ((0, moving), (1, still), (2, moving))]
    assert unsettled_note([compact(r) for r in ldns]) == (
        "q(d) not settled (below the study's bar) for seeds 0, 2: not a finding")
    assert unsettled_note([compact(ldns[1])]) == ""
    assert unsettled_note([compact(_ddn(10, 0, -0.5, 0.2, 0.04))]) == ""
    shallow = {**ldns[0], "max_depth": 4, "q": [0.9, 0.025, 0.025, 0.025, 0.025]}  # D < 10 is not held to it
    assert unsettled_note([compact(shallow)]) == ""
    summary = summarize(ldns + [_ddn(10, s, -0.5, 0.2, 0.04) for s in range(3)], None, dataset="toy")
    from vdjax.studies import plots

    titles = []
    draw = plots.plot_depth_posterior
    monkeypatch.setattr(plots, "plot_depth_posterior", lambda p, path, title: titles.append(title) or draw(p, path, title))
    paths = study_figures(summary, tmp_path)
    assert tmp_path / "fig4_posterior_toy.png" in paths and (tmp_path / "fig4_posterior_toy.png").stat().st_size > 0
    assert titles[0].endswith("\nq(d) not settled (below the study's bar) for seeds 0, 2: not a finding")


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


def _judged(rows):
    from vdjax.studies import claims

    return {f"{r.figure}: {r.paper[:12]}": (v.verdict if v else r.blocked) for r, v in zip(rows, claims.judge(rows))}


def test_verdicts_are_the_rule_s_tests_over_seeds():
    from scipy import stats as sps

    from vdjax.studies.image_study import findings, verdicts, verdicts_markdown

    f = findings(summarize(_study(ece=((0.02, 0.03), (0.07, 0.05)), speed=(0.5, 0.6)), None, dataset="toy"))
    assert f["unsettled"] == [] and f["q_learnt"] is True
    rows = verdicts(f)
    by = {f"{r.figure}: {r.paper[:12]}": r for r in rows}
    # (c) at D = 10: DDN ECE - LDN-full ECE per seed, 0.05 and 0.02: the paired t of scipy.
    c = by["(c) D = 10: LDNs are bet"].claim.result
    want = sps.ttest_rel([0.07, 0.05], [0.02, 0.03])
    assert c.test == "paired t" and c.n == (2,) and (c.t, c.p) == pytest.approx((want.statistic, want.pvalue))
    # (d) at D = 20: speed-ups 50% and 60%, the one-sample t.
    d = by["(d) D = 20: pruned LDNs "].claim.result
    assert d.test == "one-sample t" and d.p == pytest.approx(sps.ttest_1samp([0.5, 0.6], 0.0).pvalue)
    # (a) pruning cost -0.01 and 0.00 against +-0.01 nats: TOST.
    a = by["(a) D = 10: pruning to d"].claim.result
    assert a.margin == 0.01 and a.effect == pytest.approx(-0.005)
    words = _judged(rows)
    # LDN-95 - DDN is +0.09 on both seeds (no spread): reproduced at every D, under Holm.
    assert words["(a) D = 10: pruned to d_"] == words["(a) D = 20: pruned to d_"] == "reproduced"
    assert words["(c) D = 10: LDNs are bet"] == "not resolved"  # p about 0.2 with 1 df
    text = verdicts_markdown(f)
    assert "| (b) D = 10 → 20 |" in text and "Holm-corrected over the 9 judged claims" in text
    # The other way round, and as clear: contradicted.
    f = findings(summarize(_study(ddn=(-0.50, -0.51)), None, dataset="toy"))
    assert _judged(verdicts(f))["(a) D = 10: pruned to d_"] == "contradicted"


def test_an_unidentified_d_opt_leaves_b_and_d_without_a_verdict_there():
    from vdjax.studies.image_study import findings, verdicts

    flat_tail = [0.01] * 5 + [0.06] * 16  # q flat over d = 5..20: the 95% rule cuts a plateau
    f = findings(summarize(_study(q_deep=flat_tail), None, dataset="toy"))
    words = _judged(verdicts(f))
    assert words["(b) D = 10 → 20: the 95% rule"] == "not resolved: d_opt not identified at D = 20"
    assert words["(d) D = 20: pruned LDNs "] == "not resolved: d_opt not identified"
    assert words["(d) D = 10: pruned LDNs "] in ("reproduced", "not resolved")
    assert [g["plateau_start"] for g in f["ldns"] if g["max_depth"] == 20] == [5, 5]


def test_an_ldn_below_the_bar_stops_every_verdict():
    """Too few SGD steps before the kept epoch, or a q that still moved over the last fifth of
    the epochs before it, and the study draws no verdict, says which networks failed, and shows
    its tests as such."""
    from vdjax.studies.image_study import findings, findings_markdown, ldn_diagnostics, settled, verdicts, verdicts_markdown

    records = _study()
    short = records[0]  # D = 10 seed 0: 10 epochs of 200 steps, kept epoch 9 -> 2000 steps
    assert ldn_diagnostics(compact(short))["steps"] == 2000 and settled(ldn_diagnostics(compact(short)))
    moving = dict(records[2], history=[{"q": [1 / 11] * 11}] * 8 + [{"q": records[2]["q"]}] * 3)
    g = ldn_diagnostics(compact(moving))  # window: epochs 7 and 8 (ceil(0.2 * 10) = 2 before epoch 9)
    assert g["tv_change"] > 0.02 and not settled(g)
    f = findings(summarize([moving] + records[1:2] + records[3:], None, dataset="toy"))
    assert f["unsettled"] == ["D=10 seed 1"]
    assert verdicts_markdown(f).startswith("**No verdict: the LDNs did not learn** (q(d) had not settled: D=10 seed 1")
    assert set(_judged(verdicts(f)).values()) == {"no verdict (not learnt)"}
    assert "No claim of this table is judged" in verdicts_markdown(f)
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
    # Paired t over the 2 seeds, Holm over the table's 4 changes: only d_opt's (+1 on both seeds, no
    # spread) is significant; the LL (+0.1, +0.2) and ECE (-0.01, -0.02) changes are not, with 1 df.
    assert ("Holm over the 4 changes of this table): head_norm=shared: LDN d_opt +1 (95% CI [1, 1], Holm p 0)."
            in text)


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


def test_epochs_after_a_change_of_learning_rate():
    """`epochs_after_lr_change`: the first `window` epochs at each new rate, read from a results
    file's history `lr`, a summary's `lr_history` (`compact` keeps it), or, for records written
    before either, the record's train_config for its method (the earlier study: both rates
    dropped after epoch 15; the reference's: the DDN's only)."""
    from vdjax.studies.image_study import epochs_after_lr_change, lr_history

    ddn = {"method": "ddn", "epochs": 7, "history": [{"epoch": e, "lr": 0.1 if e < 3 else 0.01} for e in range(7)]}
    assert epochs_after_lr_change(ddn) == [3] and epochs_after_lr_change(ddn, window=2) == [3, 4]
    assert compact(ddn)["lr_history"] == [0.1] * 3 + [0.01] * 4
    assert epochs_after_lr_change(compact(ddn), window=10) == [3, 4, 5, 6]  # only epochs that ran
    ldn = {"method": "ldn", "epochs": 5, "history": [{"epoch": e, "lr": 0.1, "q": [1.0]} for e in range(5)]}
    assert epochs_after_lr_change(ldn, window=3) == [] and compact(ldn)["lr_history"] == [0.1] * 5
    old = {"train_config": {"learning_rate": 0.1, "batch_size": 64, "lr_drop_epoch": 15, "lr_drop_factor": 0.1,
                            "lr_drop_methods": ["ldn", "ddn"], "no_longer_a_field": 1}, "epochs": 18}
    assert lr_history({**old, "method": "ldn"}) == pytest.approx([0.1] * 15 + [0.01] * 3)
    assert epochs_after_lr_change({**old, "method": "ldn"}, window=2) == [15, 16]
    reference = {**old, "train_config": {**old["train_config"], "lr_drop_methods": ["ddn"]}}
    assert epochs_after_lr_change({**reference, "method": "ldn"}) == []
    assert epochs_after_lr_change({**reference, "method": "ddn"}) == [15]


def test_patience_ran_out_marks_the_ldns_a_higher_cap_cannot_change():
    """The reference's rule stops after 0-based epoch i once i - best > patience: 60 epochs with the
    best at 28 spend a patience of 30 at the cap itself (59 - 28 = 31), the best at 29 does not."""
    from vdjax.studies.image_study import ldn_diagnostics, ldn_markdown, patience_ran_out

    def rec(best, rule="exceeded"):
        return {"epochs": 60, "best_epoch": best, "train_config": {"patience": 30, "patience_rule": rule}}

    assert patience_ran_out(rec(28)) is True and patience_ran_out(rec(29)) is False
    assert patience_ran_out(rec(29, "reached")) is True and patience_ran_out(rec(30, "reached")) is False
    assert patience_ran_out({"epochs": 60, "best_epoch": 0}) is None
    ldn = {**_ldn(10, 0, 3, (-0.6, 0.2, 0.02), (-0.6, 0.2, 0.02)), "epochs": 60, "best_epoch": 28,
           "train_config": {"batch_size": 32, "patience": 30, "patience_rule": "exceeded"},
           "history": [{"epoch": e, "q": [0.9] + [0.01] * 10} for e in range(60)]}
    g = ldn_diagnostics(compact(ldn))
    assert g["patience_spent"] is True
    assert "| 10 | 0 | 28 / 60 | yes |" in ldn_markdown({"ldns": [g]})


def test_the_higher_cap_table_compares_the_ldns_trained_at_both_caps():
    """Per LDN in both summaries: kept epochs, q's change before them, test LL and the bar at the
    higher cap; depths only the study trained are named, and a moved epoch is counted."""
    from vdjax.studies.image_study import cap_markdown

    def ldn(d, seed, best, epochs, cap, moving):
        qs = [[0.9 - 0.05 * e, 0.1 + 0.05 * e] if moving else [0.5, 0.5] for e in range(epochs)]
        return {**_ldn(d, seed, 1, (-0.6 - best / 1000, 0.2, 0.02), (-0.6, 0.2, 0.02)), "epochs": epochs,
                "best_epoch": best, "n_train": 32 * 200, "history": [{"epoch": e, "q": q} for e, q in enumerate(qs)],
                "train_config": {"batch_size": 32, "max_epochs": cap, "patience": 5}}

    base = summarize([ldn(10, 0, 8, 15, 15, True), ldn(10, 1, 12, 15, 15, True), ldn(20, 0, 9, 15, 15, True)], None,
                     dataset="toy")
    higher = summarize([ldn(10, 0, 8, 14, 40, True), ldn(10, 1, 30, 36, 40, False)], None, dataset="toy",
                       command="python3 experiments/scan_max_depth_images.py --study --max-epochs 40")
    text = cap_markdown(base, higher)
    assert text.startswith("`python3 experiments/scan_max_depth_images.py --study --max-epochs 40` (cap 40) "
                           "against the study (cap 15):")
    assert "| 10 | 0 | 8 / 15 | 8 / 14 | 0.100 (8) | 0.100 (8) | -0.6080 | -0.6080 | no |" in text
    assert "| 10 | 1 | 12 / 15 | 30 / 36 | 0.150 (12) | 0.000 (30) | -0.6120 | -0.6300 | yes |" in text
    assert "moved for 1 of the 2 LDNs trained at both caps; 1 of the 2 held to the bar (D ≥ 10) met it at " \
           "cap 40. Not trained at cap 40 yet: D = 20 (seed 0)." in text
    shallow = summarize([ldn(5, 0, 8, 15, 15, True)], None, dataset="toy")
    text = cap_markdown(shallow, summarize([ldn(5, 0, 8, 15, 40, True)], None, dataset="toy"))
    assert text.rstrip().endswith("0 of the 0 held to the bar (D ≥ 10) met it at cap 40.") and "| – |" in text
    assert cap_markdown(base, summarize([], None, dataset="toy")).startswith("No LDN")
