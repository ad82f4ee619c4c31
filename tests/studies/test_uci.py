"""The UCI benchmark suite: the committed data and its gap splits, the MFVI baseline (its KL, the
local reparameterisation, that it learns), several splits in one program, and the quick suite
end to end on the committed data with all five methods."""

import importlib.util
import lzma
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from vdjax.baselines.dun import mfvi_predictive, regression_metrics
from vdjax.data.images import DataNotFoundError
from vdjax.data.regression import UCI_SETS, load_uci_benchmark, toy_dataset, uci_benchmark_dirs, uci_root, uci_splits
from vdjax.io import read_json
from vdjax.nn.mfvi import MFVILinear, gaussian_kl, preactivation_moments, softplus_std, weight_kl
from vdjax.nn import models
from vdjax.nn.models import LDN, ModelConfig
from vdjax.training.checkpoints import config_key
from vdjax.training.config import RunOptions, TrainConfig
from vdjax.training.runner import fit
from vdjax.training.step import init_state, make_optimizer
from vdjax.studies.uci_benchmark import SUITE_METHODS, mean_ranks

ROOT = Path(__file__).resolve().parents[2]


def _raw(path: Path) -> np.ndarray:
    with lzma.open(path.with_name(path.name + ".xz"), "rt") as f:
        return np.loadtxt(f, ndmin=1)


# ---------------------------------------------------------------------------- data


def test_the_committed_archive_has_every_set_and_split():
    assert uci_root() == ROOT / "data" / "uci"
    standard = {n: len(uci_splits(uci_benchmark_dirs(n)[1])) for n in UCI_SETS}
    gap = {n: len(uci_splits(uci_benchmark_dirs(n, gap=True)[1])) for n in UCI_SETS}
    assert standard == {**{n: 20 for n in UCI_SETS}, "protein": 5}
    d = load_uci_benchmark("yacht", 3)
    assert d.name == "yacht_split3" and d.n_train == 277 and d.x_test.shape == (31, 6)
    assert gap["boston"] == 13 and gap["yacht"] == 6  # one per input feature
    assert all(gap[n] == load_uci_benchmark(n, 0).input_shape[0] for n in ("boston", "energy", "yacht"))


def test_unknown_set_and_missing_archive_name_where_they_looked(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match="'nope'.*boston, concrete"):
        load_uci_benchmark("nope")
    monkeypatch.setenv("VDJAX_UCI_DIR", str(tmp_path))
    with pytest.raises(DataNotFoundError, match=f"no directory {tmp_path}/standard/yacht/data.*VDJAX_UCI_DIR"):
        load_uci_benchmark("yacht")


def test_a_gap_split_tests_on_exactly_the_held_out_middle_third():
    data_dir, gap_dir = uci_benchmark_dirs("boston", gap=True)
    table = _raw(data_dir / "data.txt")
    features = _raw(data_dir / "index_features.txt").astype(int)
    k = 5
    test = _raw(gap_dir / f"index_test_{k}.txt").astype(int)
    train = _raw(gap_dir / f"index_train_{k}.txt").astype(int)
    n = len(table)
    assert np.intersect1d(train, test).size == 0 and np.union1d(train, test).size == n
    v = table[:, features[k]]
    lo, hi = v[test].min(), v[test].max()
    assert not np.any((v[train] > lo) & (v[train] < hi))  # no training input inside the gap
    assert len(test) in (n // 3, n // 3 + 1) and min(np.sum(v[train] <= lo), np.sum(v[train] >= hi)) > n // 4
    d = load_uci_benchmark("boston", k, gap=True)
    raw_train = table[train][:, features]
    want = (table[test][:, features] - raw_train.mean(0)) / raw_train.std(0)
    np.testing.assert_allclose(d.x_test, want, rtol=1e-5, atol=1e-5)  # the loaded test rows are those rows


# ---------------------------------------------------------------------------- MFVI


def test_weight_kl_matches_a_hand_computation():
    m, rho = np.array([[0.5, -1.0], [0.0, 2.0]]), np.array([[-1.0, 0.3], [0.0, -2.0]])
    mb, rhob = np.array([0.1, -0.2]), np.array([0.5, -0.5])
    prior = 1.5
    params = {"input": {"kernel": m, "kernel_rho": rho, "bias": mb, "bias_rho": rhob},
              "blocks": {"scan": {"Dense": {"kernel": m[None].repeat(3, 0), "kernel_rho": rho[None].repeat(3, 0),
                                            "bias": mb[None].repeat(3, 0), "bias_rho": rhob[None].repeat(3, 0)}}},
              "point": {"kernel": np.ones((4, 4))}}  # a point-weight layer has no KL
    # KL(q || p) = cross-entropy H(q, p) - entropy H(q), per element, for q = N(m, s^2), p = N(0, prior^2).
    def hand(mean, r):
        s = np.log1p(np.exp(r))
        cross = 0.5 * np.log(2 * np.pi * prior**2) + (s**2 + mean**2) / (2 * prior**2)
        return float(np.sum(cross - norm(mean, s).entropy()))
    one = hand(m, rho) + hand(mb, rhob)
    np.testing.assert_allclose(float(weight_kl(params, prior)), 4 * one, rtol=1e-5)
    np.testing.assert_allclose(float(gaussian_kl(jnp.zeros(3), jnp.full(3, prior), prior)), 0.0, atol=1e-6)


def test_local_reparameterisation_has_the_analytic_preactivation_moments():
    x = jnp.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    layer = MFVILinear(2, sample=True)
    v = layer.init(jax.random.key(0), x)
    p = v["params"]
    mean, var = preactivation_moments(x, p["kernel"], softplus_std(p["kernel_rho"]), p["bias"],
                                      softplus_std(p["bias_rho"]))
    sk, sb = np.log1p(np.exp(np.asarray(p["kernel_rho"]))), np.log1p(np.exp(np.asarray(p["bias_rho"])))
    hand_mean = np.asarray(x) @ np.asarray(p["kernel"]) + np.asarray(p["bias"])
    hand_var = (np.asarray(x) ** 2) @ sk**2 + sb**2
    np.testing.assert_allclose(mean, hand_mean, rtol=1e-5)
    np.testing.assert_allclose(var, hand_var, rtol=1e-5)
    n = 40000  # Monte Carlo over independent draws: each row of the batch gets its own
    draws = layer.apply(v, jnp.repeat(x, n, axis=0), rngs={"weights": jax.random.key(1)}).reshape(2, n, 2)
    se = np.sqrt(hand_var / n)
    assert np.all(np.abs(np.asarray(draws.mean(1)) - hand_mean) < 5 * se)
    np.testing.assert_allclose(np.asarray(draws.var(1)), hand_var, rtol=0.05)
    np.testing.assert_array_equal(MFVILinear(2).apply(v, x), mean)  # not sampling: the posterior mean


def test_mfvi_config_run_id_and_checks():
    plain = ModelConfig("mlp", 2, 1, (1,), likelihood="gaussian")
    # Run ids name the MFVI fields only when set (every other network's checkpoints keep their ids).
    assert "weights" not in config_key(plain)
    assert "weights='mfvi', prior_std=0.5" in config_key(plain.replace(weights="mfvi", prior_std=0.5))
    with pytest.raises(ValueError, match="MLP without dropout"):
        plain.replace(weights="mfvi", dropout_rate=0.1)
    with pytest.raises(ValueError, match="prior_std"):
        plain.replace(weights="mfvi", prior_std=0.0)


def test_the_mfvi_preset_is_a_network_whose_blocks_and_depths_draw_their_own_noise():
    cfg = ModelConfig("mlp", 4, 1, (1,), width=1, likelihood="gaussian", weights="mfvi")
    net = cfg.to_network()
    assert net == models.mlp(4, 1, (1,), width=1, likelihood="gaussian", weights="mfvi")
    assert net.rng_stream == cfg.rng_stream == "weights" and isinstance(net.stem, MFVILinear)
    assert cfg.replace(weights="point").to_network().rng_stream is None
    v = LDN(net).init(jax.random.key(0), jnp.zeros((1, 1)))
    params, x = v["params"], jnp.ones((3, 1))
    block = params["blocks"]["scan"]["MFVIMLPBlock_0"]

    def layer(p, kernel, bias, bias_std):  # x -> kernel x + bias, noise of std bias_std on it
        rho = float(np.log(np.expm1(bias_std))) if bias_std else -30.0
        return {"kernel": jnp.full_like(p["kernel"], kernel), "kernel_rho": jnp.full_like(p["kernel_rho"], -30.0),
                "bias": jnp.full_like(p["bias"], bias), "bias_rho": jnp.full_like(p["bias_rho"], rho)}

    def outputs(block_std, head_std, sample):  # [D + 1, B]: a_d = a_(d-1) + BN(1 + noise_d), head a_d + noise
        p = {"input": layer(params["input"], 1.0, 0.0, 0.0),
             "blocks": {"scan": {"MFVIMLPBlock_0": {**block, "MFVILinear_0": layer(block["MFVILinear_0"], 0.0, 1.0,
                                                                                   block_std)}}},
             "head": {"MFVILinear_0": layer(params["head"]["MFVILinear_0"], 1.0, 0.0, head_std)}}
        out = LDN(net).apply({**v, "params": p}, x, sample_weights=sample, rngs={"weights": jax.random.key(1)})
        return np.asarray(out)[..., 0]

    mean = outputs(0.0, 0.0, False)
    np.testing.assert_allclose(np.diff(mean, axis=0), np.diff(mean, axis=0)[:1].repeat(4, 0), rtol=1e-6)
    assert np.std(np.diff(outputs(0.1, 0.0, True), axis=0), axis=0).min() > 1e-3  # every block its own draw
    assert np.std(outputs(0.0, 0.1, True) - mean, axis=0).min() > 1e-3  # every depth's head its own draw
    np.testing.assert_allclose(outputs(0.1, 0.1, False), mean, rtol=1e-6)  # not sampling: the posterior means
    # The prediction path takes the preset or its Network alike.
    state = init_state(jax.random.key(0), cfg, make_optimizer(TrainConfig(), 1))
    a, b = (mfvi_predictive(m, state, np.ones((5, 1), np.float32), jax.random.key(2), n_samples=3).outputs
            for m in (cfg, net))
    np.testing.assert_array_equal(a, b)


def test_mfvi_trains_to_a_better_log_likelihood_than_at_init():
    data, _ = toy_dataset("gap", seed=0)
    cfg = ModelConfig("mlp", 2, 1, (1,), width=16, likelihood="gaussian", weights="mfvi")
    tc = TrainConfig(learning_rate=0.005, momentum=0.9, batch_size=128, max_epochs=25, patience=25, stop_on="val",
                     prior_decay=1.0)
    result = fit(cfg, tc, data, [("ddn", 0)], RunOptions(log=lambda s: None)).best_state(0)
    start = init_state(jax.random.key(0), cfg, make_optimizer(tc, 1))
    assert start.rng is not None and "kernel_rho" in start.params["model"]["input"]
    key = jax.random.key(5)
    ll = [regression_metrics(mfvi_predictive(cfg, s, data.x_test, key), data.y_test, data.target_scale)["log_lik"]
          for s in (start, result)]
    assert np.isfinite(ll).all() and ll[1] > ll[0] + 0.3, ll
    pred = mfvi_predictive(cfg, result, data.x_test, key, n_samples=6)
    assert pred.outputs.shape == (6, len(data.x_test), 1) and np.std(pred.outputs, axis=0).mean() > 1e-4


def test_several_splits_train_as_one_program_each_on_its_own_data():
    sets = [load_uci_benchmark("yacht", k) for k in (0, 1)]
    cfg = ModelConfig("mlp", 1, 1, sets[0].input_shape, width=8, likelihood="gaussian")
    tc = TrainConfig(learning_rate=0.005, momentum=0.9, batch_size=128, max_epochs=2, patience=5, stop_on="val",
                     prior_decay=1.0)
    quiet = RunOptions(log=lambda s: None)
    together = fit(cfg, tc, sets, [[("ddn", 0)], [("ddn", 0)]], quiet)
    alone = fit(cfg, tc, sets[1], [("ddn", 0)], quiet)
    first, second = together.index("ddn", 0, 0), together.index("ddn", 0, 1)
    assert together.data_of == [0, 1] and together.summary(second)["networks_in_program"] == 2
    # Split 1 in the program of two trains as it does alone (same seed, data and order), to rounding.
    np.testing.assert_allclose([h["val_loss"] for h in together.histories[second]],
                               [h["val_loss"] for h in alone.histories[0]], rtol=1e-4)
    assert together.histories[first][0]["val_loss"] != together.histories[second][0]["val_loss"]
    with pytest.raises(ValueError, match="equal sizes"):
        fit(cfg, tc, [sets[0], load_uci_benchmark("yacht", 0, gap=True)], [[("ddn", 0)]] * 2)


def test_mean_rank_is_duns():
    s = {"a": {m: {"log_lik_mean": v} for m, v in zip(SUITE_METHODS, (-1.0, -2.0, -0.5, -3.0, -2.0))},
         "b": {m: {"log_lik_mean": v} for m, v in zip(SUITE_METHODS, (-1.0, -2.0, -3.0, -4.0, -5.0))}}
    assert mean_ranks(s) == {"ldn": 1.5, "ddn": 2.75, "ensemble": 2.0, "dropout": 4.5, "mfvi": 4.25}


# ---------------------------------------------------------------------------- the suite


def _script():
    spec = importlib.util.spec_from_file_location("regression_uci", ROOT / "experiments" / "regression_uci.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.one_stack
def test_the_quick_suite_runs_every_method_on_the_committed_data(tmp_path):
    script = _script()
    assert script.main(["--quick", "--sets", "yacht", "--splits", "1", "--max-epochs", "3", "--no-progress",
                        "--out", str(tmp_path)]) == 0
    res, summary = read_json(tmp_path / "uci_yacht.json"), read_json(tmp_path / "summary.json")
    assert res["suite"]["tuned"] is False and res["suite"]["hyperparameters"]["max_epochs"] == 3
    for kind in ("standard", "gap"):
        row = res[kind]["per_split"][0]
        assert set(SUITE_METHODS) <= set(row["test"])
        for m in SUITE_METHODS:
            assert np.isfinite(row["test"][m]["log_lik"]) and row["test"][m]["rmse"] > 0
        assert row["cost_vs_ddn"]["mfvi"] > 0 and row["cost_vs_ddn"]["ensemble"] > 0
        assert row["training"]["mfvi"]["epochs"] <= 3
        ranks = summary[kind]["mean_rank"]
        assert set(ranks) == set(SUITE_METHODS) and all(1 <= r <= 5 for r in ranks.values())
        assert sum(ranks.values()) == pytest.approx(15.0)  # one set: a permutation of 1..5 (ties averaged)
    gap = res["gap"]["per_split"][0]
    _, gap_dir = uci_benchmark_dirs("yacht", gap=True)
    assert gap["n_test"] == len(_raw(gap_dir / "index_test_0.txt"))  # evaluated on the held-out gap only
    assert res["standard"]["per_split"][0]["n_test"] == 31


def test_the_suite_rejects_bad_input_in_one_line(capsys):
    from vdjax.cli import validate

    script = _script()
    assert validate.run_main(script.main, ["--sets", "nope"], prog="regression_uci.py") == 2
    assert "unknown set 'nope'" in capsys.readouterr().err


def _suite_set(ldn, ens, mfvi, dropout, pruned=None, cost_ldn=1.0, cost_ens=5.0):
    """A per-set record whose splits have these test LLs (lists, one value per split); the pruned
    LDN's are `pruned` (default: the full LDN's)."""
    pruned = ldn if pruned is None else pruned
    rows = [{"test": {"ldn": {"log_lik": p}, "ldn_full": {"log_lik": a}, "ensemble": {"log_lik": b},
                      "mfvi": {"log_lik": c}, "dropout": {"log_lik": d}}}
            for p, a, b, c, d in zip(pruned, ldn, ens, mfvi, dropout)]
    summary = {"ldn": {"cost_vs_ddn_mean": cost_ldn}, "ldn_full": {"cost_vs_ddn_mean": cost_ldn},
               "ensemble": {"cost_vs_ddn_mean": cost_ens}}
    return {"standard": {"per_split": rows, "summary": summary}, "gap": {"per_split": rows, "summary": summary}}


def test_suite_verdicts_are_paired_t_tests_per_set_for_each_ldn():
    from scipy import stats as sps

    from vdjax.studies import claims
    from vdjax.studies.uci_benchmark import suite_verdicts

    # Set a: LDN - ensemble = [0.1, -0.1, 0.3] (mean 0.1); set b: the ensemble ahead by 0.5 +- 0.01.
    a = _suite_set([1.0, 1.0, 1.0], [0.9, 1.1, 0.7], [0.0, 0.0, 0.1], [0.5, 0.6, 0.4], pruned=[0.0, 0.0, 0.1])
    b = _suite_set([1.0, 1.0, 1.0], [1.5, 1.49, 1.51], [2.0, 2.0, 2.1], [2.0, 2.1, 2.0])
    tables = suite_verdicts({"a": a, "b": b})
    assert [(t["finding"], t["ldn"], t["against"]) for t in tables] == [
        ("competitive with ensembles", "ldn", "ensemble"), ("in-between uncertainty", "ldn", "mfvi"),
        ("in-between uncertainty", "ldn", "dropout"), ("competitive with ensembles", "ldn_full", "ensemble"),
        ("in-between uncertainty", "ldn_full", "mfvi"), ("in-between uncertainty", "ldn_full", "dropout")]
    full = tables[3]
    row_a, row_b = full["rows"]
    want = sps.ttest_rel([1.0, 1.0, 1.0], [0.9, 1.1, 0.7])
    assert row_a.shown.effect == pytest.approx(0.1) and row_a.shown.p == pytest.approx(want.pvalue)
    # "No worse by more than the margin": the paired difference plus the margin, tested against 0.
    shifted = sps.ttest_1samp(np.array([0.1, -0.1, 0.3]) + claims.COMPETITIVE_MARGIN, 0.0)
    assert row_a.claim.result.p == pytest.approx(shifted.pvalue) and row_a.margin == "≥ −0.1"
    assert [v.verdict for v in claims.judge(full["rows"])] == ["not resolved", "contradicted"]
    # The pruned LDN is judged on its own numbers: [0, 0, 0.1] - [0.9, 1.1, 0.7] on set a.
    assert tables[0]["rows"][0].shown.effect == pytest.approx(-2.6 / 3)
    # Gap: the LDN above MFVI on set a by 1.0, 1.0, 0.9; below it on set b.
    gap = [v.verdict for v in claims.judge(tables[4]["rows"])]
    assert gap == ["reproduced", "contradicted"] and tables[4]["rows"][0].claim.result.p == pytest.approx(
        sps.ttest_rel([1.0, 1.0, 1.0], [0.0, 0.0, 0.1]).pvalue)
    assert full["cost"] == {"ldn_full": 1.0, "ensemble": 5.0}


def test_epoch_caps_count_the_networks_stopped_at_the_cap():
    from vdjax.studies.uci_benchmark import epoch_caps

    split = {"max_epochs": 39, "training": {"ldn": {"stopped": "max_epochs"}, "ddn_0": {"stopped": "patience"},
                                            "ddn_1": {"stopped": "max_epochs"}, "mfvi": {"stopped": "max_epochs"}}}
    (row,) = epoch_caps({"kin8nm": {"standard": {"per_split": [split, {**split, "max_epochs": 39}]}}})
    assert row == {"set": "kin8nm", "kind": "standard", "caps": [39], "at_cap": {"ldn": 2, "ddn": 2, "mfvi": 2},
                   "networks": {"ldn": 2, "ddn": 4, "mfvi": 2}}
