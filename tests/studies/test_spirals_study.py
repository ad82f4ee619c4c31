"""The spirals verdicts follow from the spread over seeds: hand-made records with a known
effect and spread get the verdict the rule gives."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from vdjax.studies import spirals_study as st


def seed(d_opt, ll, pruned_ll=None, error=0.05, q=None, per_depth_error=None, epochs=1000):
    return {"d_opt": d_opt, "d_expected": d_opt + 2, "epochs": epochs, "nonfinite": False,
            "q": q if q is not None else [1.0],
            "test": {"log_lik": ll, "error": error, "per_depth_log_lik": [ll], "per_depth_error":
                     per_depth_error if per_depth_error is not None else [error]},
            "test_pruned": {"log_lik": ll if pruned_ll is None else pruned_ll, "error": error}}


def record(key, value, seeds, method="ldn", max_epochs=8000):
    return {"meta": {key: value}, "seeds": seeds, "train_config": {"method": method, "max_epochs": max_epochs},
            "train_seconds": 10.0, "wall_seconds": 12.0,
            "environment": {"cpu_isa": "avx2", "jax": "0", "flax": "0", "optax": "0", "devices": 2}}


def test_the_rule_compares_the_effect_with_its_spread():
    assert st.larger_than_spread(0.3, 0.2) == st.REPRODUCED
    assert st.larger_than_spread(-0.3, 0.2) == st.NOT_REPRODUCED
    assert st.larger_than_spread(0.1, 0.2).startswith(st.NOT_REPRODUCED + " (within")
    assert st.stays_within_spread(-0.1, 0.2) == st.REPRODUCED and st.stays_within_spread(0.3, 0.2) == st.NOT_REPRODUCED


def test_width_scan_verdicts_follow_the_seed_spread():
    # d_opt falls from 12 (seeds 11, 13: std 1) to 3 (seeds 2, 4: std 1): change 9, spread sqrt(2).
    clear = [record("width", 2, [seed(11, -0.5), seed(13, -0.6)]), record("width", 512, [seed(2, -0.1), seed(4, -0.1)])]
    f = st.scan_findings(st.SCANS["scan_width_spirals"], clear)
    assert f[0].verdict == st.REPRODUCED and "change -9.00 ± 1.41" in f[0].ours
    # The same means with seeds spread by 10: within the spread.
    noisy = [record("width", 2, [seed(2, -0.5), seed(22, -0.6)]), record("width", 512, [seed(-7, -0.1), seed(13, -0.1)])]
    assert st.scan_findings(st.SCANS["scan_width_spirals"], noisy)[0].verdict.startswith(st.NOT_REPRODUCED + " (within")


def test_stability_over_max_depth_uses_the_least_squares_drift():
    ds, d_opts = [10, 20, 30], [(6, 8), (7, 9), (8, 10)]  # slope 0.1 per unit of D, span 20: drift 2; spread 1
    recs = [record("max_depth", d, [seed(a, -0.1), seed(b, -0.2)]) for d, (a, b) in zip(ds, d_opts)]
    drift, spread = st._drift(recs, "max_depth", "d_opt")
    assert drift == pytest.approx(2.0) and spread == pytest.approx(1.0)
    f = st.scan_findings(st.SCANS["scan_max_depth_spirals"], recs)
    assert f[0].verdict == st.NOT_REPRODUCED and f[1].verdict == st.REPRODUCED  # d_opt drifts, the LL does not


def test_pruning_cost_counts_points_below_their_spread():
    recs = [record("rotation", 180, [seed(2, -0.1, -0.3), seed(2, -0.1, -0.31)]),
            record("rotation", 720, [seed(8, -0.1, -0.1), seed(8, -0.1, -0.12)])]
    f = st.scan_findings(st.SCANS["scan_spiral_complexity"], recs)[-1]
    assert f.verdict == st.PARTLY and "lower by more than the spread at 180" in f.ours


def test_ddn_findings_pair_the_ldn_with_each_ddn_by_seed():
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(4), size=2)
    ddn_ll = np.array([[-0.6, -0.3, -0.1, -0.2], [-0.6, -0.2, -0.1, -0.3]])  # [seeds, depths]
    ldn = record("max_depth", 3, [seed(2, -0.05, -0.05, q=list(q[i]), per_depth_error=[0.5, 0.2, 0.05, 0.05])
                                  for i in range(2)])
    ddns = [record("depth", d, [seed(d, ddn_ll[i, d], per_depth_error=[0.5] * d + [0.05]) for i in range(2)],
                   method="ddn") for d in range(4)]
    rho, pruned, fig3 = st.ddn_findings([ldn, *ddns])
    expected = [spearmanr(q[i], ddn_ll[i]).statistic for i in range(2)]
    assert f"{np.mean(expected):.2f} ± {np.std(expected):.2f}" in rho.ours
    # The pruned LDN (-0.05) beats every DDN in both seeds, by more than the paired spread.
    assert pruned.verdict == st.REPRODUCED and "worse at none" in pruned.ours
    # The DDN of depth 3 first reaches 90% accuracy at layer 3, the LDN at depth 2.
    assert "DDN 3.0 ± 0.0, LDN 2.0 ± 0.0" in fig3.ours and fig3.verdict == st.REPRODUCED


def test_stop_reasons():
    r = record("width", 2, [seed(1, 0, epochs=8000), seed(1, 0, epochs=900), {**seed(1, 0), "nonfinite": True}])
    assert st.stops(r) == "1 patience, 1 cap, 1 nonfinite"
