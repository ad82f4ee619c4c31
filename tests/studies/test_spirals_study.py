"""The spirals verdicts follow from the spread over seeds: hand-made records with a known
effect and spread get the verdict the rule gives. And what the records hold: each repeat's own
data draw (or the old shared one), and both pruning rules per seed."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from vdjax.data import SpiralsConfig, spirals_dataset
from vdjax.nn.models import ModelConfig
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
