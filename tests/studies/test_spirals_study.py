"""The spirals verdicts: hand-made records with known effects get the tests of the one rule
(recomputed here with scipy) and the verdicts they give. And what the records hold: each repeat's
own data draw (or the old shared one), and both pruning rules per seed."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import linregress, spearmanr, ttest_1samp, ttest_ind, ttest_rel

from vdjax.data import SpiralsConfig, spirals_dataset
from vdjax.nn.models import ModelConfig
from vdjax.studies import claims
from vdjax.studies import spirals_study as st
from vdjax.studies import sweeps
from vdjax.training.config import TrainConfig


def seed(d_opt, ll, pruned_ll=None, error=0.05, q=None, per_depth_error=None, epochs=1000):
    return {"d_opt": d_opt, "d_expected": d_opt + 2, "epochs": epochs, "nonfinite": False,
            "q": q if q is not None else [1.0],
            "test": {"log_lik": ll, "error": error, "per_depth_log_lik": [ll], "per_depth_error":
                     per_depth_error if per_depth_error is not None else [error]},
            "test_pruned": {"log_lik": ll if pruned_ll is None else pruned_ll, "error": error}}


def record(key, value, seeds, method="ldn", max_epochs=8000):
    return {"meta": {key: value}, "seeds": seeds, "train_config": {"method": method, "max_epochs": max_epochs},
            "data_config": {"seed": 0},
            "train_seconds": 10.0, "wall_seconds": 12.0,
            "environment": {"cpu_isa": "avx2", "jax": "0", "flax": "0", "optax": "0", "devices": 2}}


def _verdicts(rows):
    return [v.verdict if v else r.blocked for r, v in zip(rows, claims.judge(rows))]


def test_width_scan_is_judged_by_welch_t_on_argmax_q():
    # d (argmax q) falls from 11, 13 (seeds) to 2, 4: Welch t, effect -9; q one-hot at the recorded d.
    grid = st.SCANS["scan_width_spirals"].grid
    low = [seed(11, -0.5, q=np.eye(21)[11]), seed(13, -0.6, q=np.eye(21)[13]), seed(12, -0.55, q=np.eye(21)[12])]
    high = [seed(2, -0.1, q=np.eye(21)[2]), seed(4, -0.1, q=np.eye(21)[4]), seed(3, -0.12, q=np.eye(21)[3])]
    recs = [record("width", grid[0], low), record("width", grid[-1], high)]
    f = st.scan_findings(st.SCANS["scan_width_spirals"], recs)
    want = ttest_ind([2, 4, 3], [11, 13, 12], equal_var=False)
    result = f[0].claim.result
    assert result.test == "Welch t" and result.effect == pytest.approx(-9.0)
    assert result.p == pytest.approx(want.pvalue) and f[0].claim.expect == st.LESS
    assert "2 of 9 grid points" in f[0].figure and "one data draw shared" in f[0].figure
    # Both end points are there, so the depth claims are judged; the pruning claim needs every point.
    assert _verdicts(f)[:2] == ["reproduced", "reproduced"] and _verdicts(f)[2].startswith(
        "not resolved: grid incomplete (no 4, 8")


def test_a_claim_needing_a_missing_grid_point_is_shown_but_not_judged():
    recs = [record("rotation", 180, [seed(2, -0.01), seed(3, -0.01)]),
            record("rotation", 720, [seed(8, -0.1), seed(9, -0.12)])]
    f = st.scan_findings(st.SCANS["scan_spiral_complexity"], recs)
    depth, beyond, pruning = f
    assert depth.claim is None and depth.blocked == "not resolved: grid incomplete (no 1260)"
    assert beyond.blocked == "not resolved: grid incomplete (no 1260)"
    assert pruning.claim is not None and pruning.blocked.startswith("not resolved: grid incomplete")
    assert "not resolved: grid incomplete" in st.findings_table(f) and "No claim of this table is judged" in \
        st.findings_table(f)


def test_stability_over_max_depth_is_a_tost_on_the_drift_from_d_20():
    ds = st.SCANS["scan_max_depth_spirals"].grid
    rng = np.random.default_rng(1)
    # d by argmax q drifts by 0.1 per unit of D from D = 20 on (8 blocks across 20 -> 100): outside +-1.
    recs = [record("max_depth", d, [seed(5, -0.1 + 0.001 * rng.standard_normal(), q=np.eye(101)[int(5 + 0.1 * d) + k])
                                    for k in (0, 1)]) for d in ds]
    f = st.scan_findings(st.SCANS["scan_max_depth_spirals"], recs)
    d_stable, ll_stable, pruning = f
    x = np.repeat([d for d in ds if d >= 20], 2).astype(float)
    y = np.concatenate([st.per_seed(r, "d_argmax") for r in recs if r["meta"]["max_depth"] >= 20])
    fit = linregress(x, y)
    assert d_stable.claim.result.effect == pytest.approx(fit.slope * 80)
    assert d_stable.claim.result.difference.se == pytest.approx(fit.stderr * 80)
    assert d_stable.claim.result.n == (len(x),)
    assert _verdicts(f)[:2] == ["contradicted", "reproduced"]  # d drifts; the LL, within 0.05 nats, does not
    assert "95% rule" in d_stable.ours


def test_pruning_cost_is_a_tost_judged_at_the_least_favourable_grid_point():
    grid = st.SCANS["scan_spiral_complexity"].grid
    noise = [0.0, 0.001, -0.001]
    recs = [record("rotation", v, [seed(5, -0.1, -0.1 + e + (0.05 if v == 540 else 0.0)) for e in noise]) for v in grid]
    row = st.scan_findings(st.SCANS["scan_spiral_complexity"], recs)[-1]
    assert "rotation = 540" in row.ours and "95% rule (these records predate argmax q)" in row.ours
    eq = row.claim.result
    assert eq.effect == pytest.approx(0.05) and eq.margin == st.claims.PRUNING_MARGIN
    assert eq.p_outside == pytest.approx(min(1.0, len(grid) * st.stats.tost(
        st.stats.paired_t(st.per_seed(recs[2], "pruned_log_lik"), st.per_seed(recs[2], "test_log_lik")),
        0.01).p_outside))
    assert _verdicts([row]) == ["contradicted"]  # 0.05 nats at one point: outside the margin there


def test_ddn_findings_pair_the_ldn_with_each_ddn_by_seed():
    rng = np.random.default_rng(0)
    n_seeds, top = 4, 5
    q = rng.dirichlet(np.ones(top + 1), size=n_seeds)
    ddn_ll = -rng.uniform(0.0, 0.6, size=(n_seeds, top + 1))  # [seeds, depths]
    ldn = record("max_depth", top, [seed(2, -0.05, -0.01, q=list(q[i]), per_depth_error=[0.5, 0.2, 0.05] + [0.05] * 3)
                                    for i in range(n_seeds)])
    ddns = [record("depth", d, [seed(d, ddn_ll[i, d], per_depth_error=[0.5] * d + [0.05]) for i in range(n_seeds)],
                   method="ddn") for d in range(top + 1)]
    rho, pruned, fig3 = st.ddn_findings([ldn, *ddns])
    # q tracks the DDN LL: one-sample t of the per-seed Spearman correlation over depths >= 3.
    expected = [spearmanr(q[i, 3:], ddn_ll[i, 3:]).statistic for i in range(n_seeds)]
    want = ttest_1samp(expected, 0.0)
    assert rho.claim.result.effect == pytest.approx(np.mean(expected))
    assert rho.claim.result.p == pytest.approx(want.pvalue) and "over depths 3–5" in rho.ours
    everywhere = np.mean([spearmanr(q[i], ddn_ll[i]).statistic for i in range(n_seeds)])
    assert f"over all depths 0–5: {everywhere:.2f}" in rho.ours
    # The pruned LDN (-0.01) against every DDN: judged at the DDN it beats least clearly.
    tests = [ttest_rel(np.full(n_seeds, -0.01), ddn_ll[:, d]) for d in range(top + 1)]
    worst = int(np.argmin([t.statistic for t in tests]))
    assert f"least favourable depth, d = {worst}" in pruned.ours
    assert pruned.claim.result.p == pytest.approx(tests[worst].pvalue)
    # The DDN of depth 5 first reaches 90% accuracy at layer 5, the LDN at depth 2: a paired t of constants.
    assert "DDN 5.0, LDN 2.0" in fig3.ours and fig3.claim.result.effect == 3.0 and fig3.claim.result.p == 0.0


def test_stop_reasons():
    r = record("width", 2, [seed(1, 0, epochs=8000), seed(1, 0, epochs=900), {**seed(1, 0), "nonfinite": True}])
    assert st.stops(r) == "1 patience, 1 cap, 1 nonfinite"


# ---------------------------------------------------------------------------- data seeds and pruning rules

ROOT = Path(__file__).resolve().parents[2]
TINY = TrainConfig(max_epochs=20, patience=20)


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("x_train", "y_train", "x_test", "y_test"))


def test_each_repeat_draws_its_own_data_and_repeat_zero_keeps_the_old_draw():
    point = sweeps.spirals_point("p", {}, rotation=540.0)
    assert point.data_seeds == "per_repeat" and point.data_seed_of([0, 1, 2]) == [0, 1, 2]
    d0, d1, d2 = point.datasets([0, 1, 2])
    assert not np.allclose(d0.x_train, d1.x_train) and not np.allclose(d1.x_test, d2.x_test)
    # Seed 0's draw is the one every repeat shared before (data seed 0).
    assert _same(d0, spirals_dataset(SpiralsConfig(rotation=540.0, seed=0)))
    assert _same(d1, spirals_dataset(SpiralsConfig(rotation=540.0, seed=1)))
    # Shared data: every repeat on the draw of `seed`.
    shared = sweeps.spirals_point("p", {}, rotation=540.0, data_seeds="shared", seed=3)
    assert shared.data_seed_of([0, 1]) == [3, 3]
    assert _same(shared.datasets([0, 1]), spirals_dataset(SpiralsConfig(rotation=540.0, seed=3)))
    with pytest.raises(ValueError, match="data_seeds"):
        sweeps.spirals_point("p", {}, data_seeds="global")
    with pytest.raises(ValueError, match="seed"):
        SpiralsConfig(seed=None)


def test_per_repeat_records_train_and_test_each_seed_on_its_own_draw(tmp_path, monkeypatch):
    import vdjax.studies.experiment as experiment
    from vdjax.depth.metrics import predictive_metrics
    from vdjax.depth.prune import predict_log_probs

    shapes = []
    real_fit = experiment.fit

    def spy(model_config, train_config, data, seeds, options):
        shapes.append(np.shape(data[0]))
        return real_fit(model_config, train_config, data, seeds, options)

    monkeypatch.setattr(experiment, "fit", spy)
    point = sweeps.spirals_point("w=0004", {"width": 4}, width=4, max_depth=3, train=TINY)
    (rec,) = sweeps.run_grid([point], tmp_path, [0, 1], chunk_epochs=10)
    assert shapes == [(2, 200, 2)]  # one training set per seed
    assert rec["data_seeds"] == "per_repeat" and rec["data_config"]["seed"] is None
    assert [s["data_seed"] for s in rec["seeds"]] == st.data_seeds(rec) == [0, 1] and not st.shares_data(rec)
    assert json.loads((tmp_path / "w=0004.json").read_text())["seeds"][1]["data_seed"] == 1
    # Each seed's test metrics are on its own test set: recomputed there from its saved parameters.
    cfg = ModelConfig(**{**rec["model_config"], "input_shape": tuple(rec["model_config"]["input_shape"])})
    for i, s in enumerate(rec["seeds"]):
        own = sweeps.record_dataset(rec, i)
        assert _same(own, spirals_dataset(SpiralsConfig(seed=i)))
        variables, _ = sweeps.load_variables(tmp_path, "w=0004", i)
        metrics = predictive_metrics(predict_log_probs(cfg, variables, np.asarray(s["q"]), own.x_test), own.y_test)
        assert metrics["log_lik"] == pytest.approx(s["test"]["log_lik"], abs=1e-5)
        # Both pruning rules are recorded, each with the metrics of the network pruned there.
        assert s["d_argmax"] == int(np.argmax(s["q"])) and s["d_opt"] <= s["d_argmax"]
        want = experiment.pruned_metrics(cfg, variables, np.asarray(s["q"]), s["d_argmax"], own.x_test, own.y_test)
        assert s["test_pruned_argmax"]["log_lik"] == pytest.approx(want["log_lik"], abs=1e-5)
        assert s["test_pruned_argmax"]["error"] == pytest.approx(want["error"], abs=1e-6)
    assert rec["mean"]["d_argmax"] == np.mean(st.per_seed(rec, "d_argmax"))
    assert rec["mean"]["argmax_log_lik"] == pytest.approx(np.mean(st.per_seed(rec, "argmax_log_lik")))

    # Shared data, the old behaviour: one [N, 2] training set, every seed's data seed the shared one.
    shared = sweeps.spirals_point("w=0004", {"width": 4}, width=4, max_depth=3, train=TINY, data_seeds="shared")
    (old,) = sweeps.run_grid([shared], tmp_path / "shared", [0, 1], chunk_epochs=10)
    assert shapes[1] == (200, 2)
    assert old["data_seeds"] == "shared" and old["data_config"]["seed"] == 0
    assert st.data_seeds(old) == [0, 0] and st.shares_data(old)
    assert _same(sweeps.record_dataset(old, 1), spirals_dataset(SpiralsConfig()))


def test_d_argmax_and_the_95_rule_on_a_hand_posterior():
    from vdjax.depth.prune import d_opt_95
    from vdjax.studies.experiment import d_argmax

    q = np.array([0.05, 0.31, 0.32, 0.25, 0.07])  # 0.31 >= 0.95 * 0.32: the 95% rule stops at 1
    assert d_opt_95(q) == 1 and d_argmax(q) == 2
    assert d_argmax([0.2, 0.4, 0.4]) == 1  # ties: the shallowest
    # The record's per-seed fields, read as every statistic is.
    rec = record("width", 8, [{**seed(1, -0.2), "d_argmax": 2, "test_pruned_argmax": {"log_lik": -0.25, "error": 0.1}},
                              {**seed(3, -0.3), "d_argmax": 3, "test_pruned_argmax": {"log_lik": -0.3, "error": 0.2}}])
    np.testing.assert_array_equal(st.per_seed(rec, "d_argmax"), [2, 3])
    np.testing.assert_allclose(st.per_seed(rec, "argmax_log_lik"), [-0.25, -0.3])
    np.testing.assert_allclose(st.per_seed(rec, "argmax_pruning_cost"), [-0.05, 0.0])
    np.testing.assert_allclose(st.per_seed(rec, "argmax_error"), [0.1, 0.2])


def test_old_records_are_reachable_with_shared_data_seed_0_and_the_old_block_scan():
    sys.path.insert(0, str(ROOT / "experiments"))
    import _common

    args = _common.parser("doc", "scan_spiral_complexity").parse_args(
        ["--shared-data-seed", "0", "--unroll", "1"])
    old = sweeps.spirals_point("rotation=0720", {"rotation": 720}, train=_common.protocol(args),
                              **_common.point_options(args), rotation=720.0)
    committed = json.loads((ROOT / "docs/data/spirals/scan_spiral_complexity/rotation=0720.json").read_text())
    assert "data_seeds" not in committed  # from before per-repeat data
    assert old.data_seeds == "shared" and dataclasses.asdict(old.data) == committed["data_config"]
    model = {**old.model.describe(), "input_shape": list(old.model.input_shape)}
    assert {k: model[k] for k in committed["model_config"]} == committed["model_config"]
    assert _same(old.datasets([0, 1]), sweeps.record_dataset(committed, 5))  # what the old seeds all shared
    # The default: per-repeat data, the faster block scan (fully unrolled up to D = 20), in the model config.
    default = _common.point_options(_common.parser("doc", "scan_spiral_complexity").parse_args([]))
    new = sweeps.spirals_point("rotation=0720", {"rotation": 720}, **default, rotation=720.0)
    assert new.data_seeds == "per_repeat" and (new.model.unroll, new.model.remat) == (20, "auto")
    assert [sweeps.spirals_point("p", {}, max_depth=d, **default).model.unroll for d in (0, 5, 20, 25, 100)] == \
        [1, 5, 20, 1, 1]
    assert "--shared-data-seed" in _common.parser("doc", "x").format_help()
