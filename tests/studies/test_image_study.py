"""The image study's findings, computed from a hand-built summary whose answers are known."""

import pytest

from vdjax.studies.image_study import compact, findings, findings_markdown, summarize


def _metrics(ll, err, ece):
    return {"log_lik": ll, "error": err, "ece": ece}


def _ldn(d, seed, d_opt, full, pruned, speedup=None):
    q = [0.1 / d] * d + [0.9] if d else [1.0]  # far from uniform
    r = {"dataset": "toy", "method": "ldn", "max_depth": d, "seed": seed, "d_opt": d_opt, "d_expected": d_opt + 1, "q": q,
         "ldn_full": _metrics(*full), "ldn_95": _metrics(*pruned), "ldn_expected": _metrics(*pruned),
         "epochs": 10 + seed, "stopped": "patience", "history": [{"epoch": 0}]}
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
        k: v for k, v in records[0].items() if k != "history"}
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
