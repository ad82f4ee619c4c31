"""The studies' statistics rule: t-tests against R's textbook values, TOST and the outside-margin test
from their definitions and their interval forms, Holm by hand, the verdict vocabulary, and what
degenerate inputs give."""

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from vdjax.studies import stats as st

# Student (1908) / Cushny & Peebles: extra hours of sleep for the same 10 patients (R's `sleep`).
DRUG1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
DRUG2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def with_p(p, df=30.0, sign=1.0):
    """A t-test result whose two-sided p is `p` (se 1, so the effect is the t statistic)."""
    return st.estimate_t(sign * sps.t.isf(p / 2, df), 1.0, df)


def test_paired_t_matches_r_on_the_sleep_data():
    # R: t.test(extra ~ group, data = sleep, paired = TRUE)
    r = st.paired_t(DRUG1, DRUG2)
    assert r.test == "paired t" and r.n == (10,) and r.df == 9
    assert r.effect == pytest.approx(-1.58)
    assert r.t == pytest.approx(-4.0621, abs=5e-5)
    assert r.p == pytest.approx(0.002833, abs=5e-7)
    assert r.ci95 == pytest.approx((-2.4598858, -0.7001142), abs=5e-8)
    # The 90% CI sits inside the 95% one, about the same centre.
    assert r.ci95[0] < r.ci90[0] < r.effect < r.ci90[1] < r.ci95[1]
    assert np.mean(r.ci90) == pytest.approx(r.effect)
    # scipy's own paired test agrees.
    ref = sps.ttest_rel(DRUG1, DRUG2)
    assert (r.t, r.p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)


def test_welch_t_matches_r_on_the_sleep_data_unpaired():
    # R: t.test(extra ~ group, data = sleep)  (Welch by default)
    r = st.welch_t(DRUG1, DRUG2)
    assert r.test == "Welch t" and r.n == (10, 10)
    assert r.effect == pytest.approx(-1.58)
    assert r.t == pytest.approx(-1.8608, abs=5e-5)
    assert r.df == pytest.approx(17.776, abs=5e-4)
    assert r.p == pytest.approx(0.07939, abs=5e-6)
    assert r.ci95 == pytest.approx((-3.3654832, 0.2054832), abs=5e-8)
    ref = sps.ttest_ind(DRUG1, DRUG2, equal_var=False)
    assert (r.t, r.p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)


def test_welch_df_on_unequal_samples_by_hand():
    # a: n 3, var 1 -> 1/3; b: n 5, var 2.5 -> 1/2. df = (5/6)^2 / ((1/3)^2/2 + (1/2)^2/4) = 100/17.
    r = st.welch_t([1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0, 4.0])
    assert r.effect == pytest.approx(0.0) and r.se == pytest.approx(np.sqrt(5 / 6))
    assert r.df == pytest.approx(100 / 17) and r.n == (3, 5)


def test_effect_is_a_minus_b_for_both_tests():
    for test in (st.paired_t, st.welch_t):
        ab, ba = test(DRUG1, DRUG2), test(DRUG2, DRUG1)
        assert ab.effect < 0 < ba.effect
        assert ba.ci95 == pytest.approx((-ab.ci95[1], -ab.ci95[0]))
        assert ba.p == pytest.approx(ab.p)


def test_slope_t_by_hand():
    # x 0..3, y 1 3 2 5: Sxx 5, Sxy 5.5 -> slope 1.1; residuals -0.1 0.8 -1.3 0.6, SS 2.7, df 2,
    # s^2 1.35, se = sqrt(1.35 / 5).
    r = st.slope_t([0, 1, 2, 3], [1, 3, 2, 5])
    assert r.effect == pytest.approx(1.1) and r.se == pytest.approx(np.sqrt(0.27))
    assert r.df == 2 and r.n == (4,)
    assert r.p == pytest.approx(2 * sps.t.sf(1.1 / np.sqrt(0.27), 2))
    assert r.p == pytest.approx(sps.linregress([0, 1, 2, 3], [1, 3, 2, 5]).pvalue)


def test_estimate_t_by_hand():
    r = st.estimate_t(0.5, 0.25, 8, n=10)
    assert r.t == 2.0 and r.n == (10,) and st.estimate_t(0.5, 0.25, 8).n == ()
    assert r.p == pytest.approx(2 * sps.t.sf(2.0, 8))
    q = sps.t.ppf(0.975, 8)
    assert r.ci95 == pytest.approx((0.5 - q * 0.25, 0.5 + q * 0.25))


def test_paired_tost_by_hand():
    # differences 0.1 -0.2 0.3 0 0.05: mean 0.05, squared deviations sum 0.13, var 0.0325, n 5.
    a = np.array([1.1, 0.8, 1.3, 1.0, 1.05])
    b = np.ones(5)
    se = np.sqrt(0.0325 / 5)
    e = st.tost(st.paired_t(a, b), 0.5)
    assert e.effect == pytest.approx(0.05) and e.difference.se == pytest.approx(se)
    p_lower = sps.t.sf((0.05 + 0.5) / se, 4)  # H0: mean <= -0.5
    p_upper = sps.t.cdf((0.05 - 0.5) / se, 4)  # H0: mean >= +0.5
    assert (e.p_lower, e.p_upper) == pytest.approx((p_lower, p_upper))
    assert e.p == pytest.approx(max(p_lower, p_upper)) and e.p == pytest.approx(p_upper)
    # The same two one-sided tests, as scipy runs them on shifted differences.
    d = a - b
    assert e.p_lower == pytest.approx(sps.ttest_1samp(d + 0.5, 0, alternative="greater").pvalue)
    assert e.p_upper == pytest.approx(sps.ttest_1samp(d - 0.5, 0, alternative="less").pvalue)


def test_welch_tost_is_two_shifted_one_sided_welch_tests():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.1, 1.0, 12), rng.normal(0.0, 2.0, 7)
    m = 1.5
    e = st.tost(st.welch_t(a, b), m)
    lower = sps.ttest_ind(a + m, b, equal_var=False, alternative="greater").pvalue
    upper = sps.ttest_ind(a - m, b, equal_var=False, alternative="less").pvalue
    assert (e.p_lower, e.p_upper, e.p) == pytest.approx((lower, upper, max(lower, upper)))


CASES = list(itertools.product([-1.3, -0.4, 0.0, 0.2, 0.9, 2.5], [0.05, 0.3, 1.0], [2, 9, 60], [0.5, 1.0]))


def test_tost_is_significant_exactly_when_the_90ci_is_inside_the_margin():
    outcomes = set()
    for effect, se, df, m in CASES:
        e = st.tost(st.estimate_t(effect, se, df), m)
        inside = -m < e.ci90[0] and e.ci90[1] < m
        assert (e.p < st.ALPHA) == inside, (effect, se, df, m)
        outcomes.add(inside)
    assert outcomes == {True, False}


def test_outside_margin_is_significant_exactly_when_the_95ci_excludes_the_margin():
    outcomes = set()
    for effect, se, df, m in CASES:
        e = st.tost(st.estimate_t(effect, se, df), m)
        outside = e.ci95[0] > m or e.ci95[1] < -m
        assert (e.p_outside < st.ALPHA) == outside, (effect, se, df, m)
        assert not (e.p < st.ALPHA and e.p_outside < st.ALPHA)  # the two outcomes exclude each other
        outcomes.add(outside)
    assert outcomes == {True, False}
    # A vanishing margin makes it the plain two-sided test.
    r = st.paired_t(DRUG1, DRUG2)
    assert st.tost(r, 1e-12).p_outside == pytest.approx(r.p)


def test_holm_by_hand():
    # sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06.
    assert st.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert st.holm([0.3, 0.02, 0.9]) == pytest.approx([0.6, 0.06, 0.9])
    assert st.holm([0.01, 0.01]) == pytest.approx([0.02, 0.02])
    assert st.holm([0.4, 0.45, 0.5]) == pytest.approx([1.0, 1.0, 1.0])  # capped
    assert st.holm([0.2]) == pytest.approx([0.2]) and st.holm([]).size == 0


def test_holm_is_monotone_at_least_the_raw_p_and_at_most_one():
    rng = np.random.default_rng(1)
    for _ in range(50):
        p = rng.uniform(0, 1, rng.integers(1, 12)) ** 3
        adj = st.holm(p)
        order = np.argsort(p)
        assert np.all(np.diff(adj[order]) >= 0)
        assert np.all(adj >= p) and np.all(adj <= 1)
        assert np.all(adj <= np.minimum(1, p * p.size) + 1e-15)  # never worse than Bonferroni


def test_holm_rejects_bad_p_values():
    for bad in ([0.1, np.nan], [-0.1], [1.5], [[0.1, 0.2]]):
        with pytest.raises(ValueError):
            st.holm(bad)


def verdict_of(claim):
    return st.verdicts([claim])[0].verdict


def test_directional_verdicts():
    up, down, flat = with_p(0.01), with_p(0.01, sign=-1), with_p(0.3)
    assert verdict_of(st.Claim("A > B", up, st.GREATER)) == st.REPRODUCED
    assert verdict_of(st.Claim("A > B", down, st.GREATER)) == st.CONTRADICTED
    assert verdict_of(st.Claim("A > B", flat, st.GREATER)) == st.NOT_RESOLVED
    assert verdict_of(st.Claim("A < B", down, st.LESS)) == st.REPRODUCED
    assert verdict_of(st.Claim("A < B", up, st.LESS)) == st.CONTRADICTED
    # The sleep data: drug 2 adds more sleep than drug 1, significantly when paired, not unpaired.
    assert verdict_of(st.Claim("drug 2 > drug 1", st.paired_t(DRUG2, DRUG1), st.GREATER)) == st.REPRODUCED
    assert verdict_of(st.Claim("drug 2 > drug 1", st.welch_t(DRUG2, DRUG1), st.GREATER)) == st.NOT_RESOLVED


def test_no_change_verdicts():
    m = 0.5
    within = st.tost(st.estimate_t(0.05, 0.1, 20), m)  # 90% CI about [-0.12, 0.22]
    beyond = st.tost(st.estimate_t(-1.2, 0.1, 20), m)  # 95% CI about [-1.41, -0.99], below -m
    straddles = st.tost(st.estimate_t(0.55, 0.2, 20), m)  # CI over +m: neither
    unsure = st.tost(st.estimate_t(0.0, 1.0, 20), m)  # too wide to say anything
    assert verdict_of(st.Claim("stable", within, st.NO_CHANGE)) == st.REPRODUCED
    assert verdict_of(st.Claim("stable", beyond, st.NO_CHANGE)) == st.CONTRADICTED
    assert verdict_of(st.Claim("stable", straddles, st.NO_CHANGE)) == st.NOT_RESOLVED
    assert verdict_of(st.Claim("stable", unsure, st.NO_CHANGE)) == st.NOT_RESOLVED
    v = st.verdicts([st.Claim("stable", within, st.NO_CHANGE), st.Claim("stable", beyond, st.NO_CHANGE)])
    assert [x.test for x in v] == ["TOST", "outside margin"]
    assert v[0].p == within.p and v[1].p == beyond.p_outside
    # Significantly different from 0 but inside the margin is still "no change" within the margin.
    small = st.tost(st.estimate_t(0.1, 0.02, 20), m)
    assert small.difference.p < st.ALPHA and verdict_of(st.Claim("stable", small, st.NO_CHANGE)) == st.REPRODUCED


def test_holm_turns_a_reproduced_cell_into_not_resolved():
    claims = [st.Claim(f"c{i}", with_p(p), st.GREATER) for i, p in enumerate([0.03, 0.02, 0.04])]
    assert all(verdict_of(c) == st.REPRODUCED for c in claims)  # each alone
    table = st.verdicts(claims)
    assert [v.verdict for v in table] == [st.NOT_RESOLVED] * 3
    assert [v.p_holm for v in table] == pytest.approx([0.06, 0.06, 0.06])
    assert [v.p for v in table] == pytest.approx([0.03, 0.02, 0.04])
    # A no-change claim in the same table is corrected with the others.
    within = st.tost(st.estimate_t(0.0, 0.5 / sps.norm.ppf(0.98), 1e6), 0.5)  # TOST p ~ 0.02
    assert verdict_of(st.Claim("stable", within, st.NO_CHANGE)) == st.REPRODUCED
    mixed = st.verdicts([st.Claim("stable", within, st.NO_CHANGE)] + claims)
    assert mixed[0].verdict == st.NOT_RESOLVED and mixed[0].p_holm == pytest.approx(0.08, abs=1e-5)
    assert st.verdicts([]) == []


def test_claims_check_their_kind():
    r = st.paired_t(DRUG1, DRUG2)
    with pytest.raises(TypeError):
        st.Claim("x", r, st.NO_CHANGE)
    with pytest.raises(TypeError):
        st.Claim("x", st.tost(r, 1.0), st.GREATER)
    with pytest.raises(ValueError):
        st.Claim("x", r, ">")


def test_degenerate_inputs_raise():
    with pytest.raises(ValueError, match="at least 2"):
        st.paired_t([1.0], [2.0])
    with pytest.raises(ValueError, match="at least 2"):
        st.welch_t([1.0, 2.0], [3.0])
    with pytest.raises(ValueError, match="at least 3"):
        st.slope_t([0, 1], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        st.paired_t([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        st.welch_t([1.0, 2.0], [1.0, np.inf])
    with pytest.raises(ValueError, match="differ in length"):
        st.paired_t([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        st.paired_t([[1.0, 2.0]], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="constant"):
        st.slope_t([1, 1, 1], [0, 1, 2])
    for bad in (0.0, -1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="margin"):
            st.tost(st.paired_t(DRUG1, DRUG2), bad)
    for bad in ((0.1, -1.0, 5), (0.1, 1.0, 0), (np.nan, 1.0, 5), (0.1, 1.0, np.inf)):
        with pytest.raises(ValueError):
            st.estimate_t(*bad)


def test_zero_variance():
    # Identical numbers: no difference, p = 1, CI [0, 0].
    same = st.paired_t([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    assert (same.effect, same.t, same.p, same.ci95, same.ci90) == (0.0, 0.0, 1.0, (0.0, 0.0), (0.0, 0.0))
    # Every pair differs by the same 0.5: certain, p = 0, CI [0.5, 0.5].
    shifted = st.paired_t([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])
    assert shifted.p == 0.0 and shifted.t == np.inf and shifted.ci95 == (0.5, 0.5)
    assert st.paired_t([1.0, 2.0, 3.0], [1.5, 2.5, 3.5]).t == -np.inf
    # Two constant samples (Welch), equal or not.
    assert st.welch_t([2.0, 2.0], [2.0, 2.0, 2.0]).p == 1.0
    w = st.welch_t([2.0, 2.0], [1.0, 1.0, 1.0])
    assert w.p == 0.0 and w.ci95 == (1.0, 1.0)
    # Constant samples have exactly zero variance even where np.var leaves rounding residue (0.1 x 3).
    assert np.var([0.1] * 3, ddof=1) > 0
    assert st.welch_t([0.1] * 3, [0.1] * 3).p == 1.0 and st.welch_t([0.3] * 3, [0.1] * 3).se == 0.0
    # One constant sample: the df are the other's n - 1.
    assert st.welch_t([2.0, 2.0, 2.0], [0.0, 1.0, 2.0, 3.0]).df == pytest.approx(3.0)
    # Points exactly on a line.
    assert st.slope_t([0, 1, 2], [1, 3, 5]).p == 0.0 and st.slope_t([0, 1, 2], [4, 4, 4]).p == 1.0
    # TOST with se = 0 is decided by the effect alone.
    assert (st.tost(shifted, 1.0).p, st.tost(shifted, 1.0).p_outside) == (0.0, 1.0)
    assert (st.tost(shifted, 0.2).p, st.tost(shifted, 0.2).p_outside) == (1.0, 0.0)
    assert (st.tost(shifted, 0.5).p, st.tost(shifted, 0.5).p_outside) == (1.0, 1.0)  # on the margin
    assert st.tost(same, 0.1).p == 0.0


def test_cells():
    r = st.paired_t(DRUG1, DRUG2)
    assert st.cells(r) == {"effect": "-1.58", "95% CI": "[-2.46, -0.7]", "n": "10", "p": "0.0028"}
    assert st.cells(r, fmt=".5g", p_fmt=".3e")["95% CI"] == "[-2.4599, -0.70011]"
    assert st.cells(r, fmt=".5g", p_fmt=".3e")["p"] == "2.833e-03"
    assert st.cells(st.welch_t(DRUG1, DRUG2))["n"] == "10+10"
    assert st.cells(st.estimate_t(-0.0, 1.0, 5), fmt=".2f")["effect"] == "0.00"  # no "-0" from a signed zero
    e = st.tost(r, 3.0)
    row = st.cells(e)
    assert list(row) == ["effect", "95% CI", "90% CI", "margin", "n", "p"]
    assert row["90% CI"] == "[-2.29, -0.867]" and row["margin"] == "±3" and row["p"] == format(e.p, ".2g")
    table = st.verdicts([st.Claim("drug 2 > drug 1", st.paired_t(DRUG2, DRUG1), st.GREATER),
                         st.Claim("same", e, st.NO_CHANGE)])
    # The TOST p (0.0027) is the table's smallest: Holm doubles it, and the t-test's 0.0028 takes that.
    assert st.cells(table[0]) == {"effect": "1.58", "95% CI": "[0.7, 2.46]", "n": "10", "p": "0.0028",
                                  "Holm p": "0.0053", "test": "t", "verdict": "reproduced"}
    assert st.cells(table[1])["test"] == "TOST" and st.cells(table[1])["verdict"] == "reproduced"
