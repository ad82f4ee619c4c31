"""Verdict tables: the tests built from the one rule (one-sample, no worse than, least favourable
point of a grid) against scipy and by hand, and the table's cells, columns and Holm note."""

import numpy as np
import pytest
from scipy import stats as sps

from vdjax.studies import claims, stats
from vdjax.studies.stats import GREATER, LESS, NO_CHANGE, Claim


def test_one_sample_is_scipys_one_sample_t():
    x = [0.3, 0.1, 0.4, 0.2, 0.25]
    r = claims.one_sample(x)
    want = sps.ttest_1samp(x, 0.0)
    assert r.test == "one-sample t" and r.n == (5,) and r.df == 4
    assert (r.t, r.p) == pytest.approx((want.statistic, want.pvalue))
    ci = want.confidence_interval()
    assert r.ci95 == pytest.approx((ci.low, ci.high))


def test_not_worse_shifts_the_difference_by_the_margin():
    a, b = np.array([1.0, 1.2, 0.9, 1.1]), np.array([1.05, 1.25, 1.0, 1.1])  # a - b: mean -0.05
    raw = stats.paired_t(a, b)
    shifted = claims.not_worse(raw, 0.1)
    want = sps.ttest_1samp(a - b + 0.1, 0.0)
    assert shifted.effect == pytest.approx(0.05) and shifted.p == pytest.approx(want.pvalue)
    assert (shifted.test, shifted.n, shifted.se) == (raw.test, raw.n, raw.se)


def test_a_grid_claim_is_judged_at_its_least_favourable_point():
    # Three points, all clearly positive but one only weakly: the claim "greater everywhere" rests on it.
    strong, weak = stats.estimate_t(5.0, 1.0, 10), stats.estimate_t(2.5, 1.0, 10)
    i, r = claims.least_favourable([strong, weak, strong], GREATER)
    assert i == 1 and r is weak  # in the claim's direction: no correction (intersection-union)
    # One point against the claim: the contradiction's p is multiplied by the number of points.
    against = stats.estimate_t(-2.5, 1.0, 10)
    i, r = claims.least_favourable([strong, against, strong], GREATER)
    assert i == 1 and r.p == pytest.approx(min(1.0, 3 * against.p)) and r.effect == against.effect
    assert claims.least_favourable([against, strong], LESS)[0] == 1
    # No-change claims: the largest TOST p; the outside-margin p, the smallest times k.
    eqs = [stats.tost(stats.estimate_t(e, 0.01, 20), 0.1) for e in (0.0, 0.05, 0.2)]
    i, r = claims.least_favourable(eqs, NO_CHANGE)
    assert i == 2 and r.p == eqs[2].p and r.p_outside == pytest.approx(min(1.0, 3 * eqs[2].p_outside))


def test_table_cells_columns_and_holm_note():
    t = stats.estimate_t(0.3, 0.1, 5, n=6)
    eq = stats.tost(stats.estimate_t(0.001, 0.002, 5, n=6), 0.01)
    rows = [claims.Row("Fig 1", "A beats B", "0.3 on average", Claim("a", t, GREATER)),
            claims.Row("Fig 2", "pruning costs nothing", "-", Claim("b", eq, NO_CHANGE)),
            claims.Row("Fig 3", "needs more points", "-", Claim("c", t, GREATER), blocked="not resolved: grid incomplete")]
    text = claims.table(rows)
    lines = text.splitlines()
    assert lines[0].startswith("| figure | the paper | ours | test | n | effect | 95% CI | margin (90% CI) | p |")
    v = claims.judge(rows)
    assert v[2] is None and [x.p_holm for x in v[:2]] == pytest.approx(list(stats.holm([t.p, eq.p])))
    assert f"| t on an estimate | 6 | 0.3 | [{t.ci95[0]:.3g}, {t.ci95[1]:.3g}] | – | {t.p:.2g} | – |" in lines[2]
    assert "| TOST on t on an estimate | 6 | 0.001 |" in lines[3] and f"±0.01 ([{eq.ci90[0]:.3g}, " in lines[3]
    assert f"| {eq.p:.2g} / {eq.p_outside:.2g} |" in lines[3] and lines[3].endswith("| **reproduced** |")
    assert lines[4].endswith("| – | **not resolved: grid incomplete** |")
    assert "Holm-corrected over the 2 judged claims of this table; 1 shown without a verdict" in text
    assert claims.tally(rows) == {"reproduced": 2, "not resolved: grid incomplete": 1}
    # A row with no test at all, and columns empty in every row left out.
    bare = claims.table([claims.Row("boston", "", "", Claim("x", t, GREATER)),
                         claims.Row("yacht", "", "", None, blocked="not resolved: too few seeds")], first="set")
    assert bare.splitlines()[0].startswith("| set | test | n |")
    assert bare.splitlines()[3] == "| yacht | – | – | – | – | – | – | – | – | **not resolved: too few seeds** |"


def test_every_margin_has_its_reason_and_the_rule_names_the_vocabulary():
    md = claims.margins_markdown()
    assert md.count("\n| ±") == len(claims.MARGINS) == 4
    for word in ("**reproduced**", "**contradicted**", "**not resolved**", "Holm", "TOST", "Welch", "paired"):
        assert word in claims.RULE
