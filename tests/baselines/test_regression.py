"""Regression LDNs (Gaussian likelihood, mixture predictive), the regression loaders, and the
DUN baselines (deep ensemble, MC dropout)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from vdjax.baselines.dun import (
    Baselines,
    Predictive,
    ddn_predictive,
    fit_methods,
    method_predictives,
    regression_curve,
    regression_metrics,
)
from vdjax.data.core import Dataset, split_validation
from vdjax.data.images import DataNotFoundError
from vdjax.data.regression import load_diabetes, load_uci, load_uci_benchmark, toy_dataset, toy_gap, uci_splits
from vdjax.depth.likelihoods import (
    gaussian_nll,
    mixture_log_density,
    mixture_moments,
    noise_std,
    per_depth_nll,
    to_original_scale,
)
from vdjax.nn.models import LDN, ModelConfig
from vdjax.training.config import RunOptions, TrainConfig
from vdjax.training.objective import Objective
from vdjax.training.step import init_state, loss_fn, make_optimizer


def test_mixture_log_likelihood_matches_hand_computation():
    # Two depths, q = (0.3, 0.7), means per point, one noise scale per component.
    means = np.array([[0.0, 1.0, -2.0], [0.5, 3.0, -1.0]])
    w, stds, y = np.array([0.3, 0.7]), np.array([1.0, 0.5]), np.array([0.2, 2.0, -1.5])
    hand = np.log(w[0] * norm.pdf(y, means[0], stds[0]) + w[1] * norm.pdf(y, means[1], stds[1]))
    got = mixture_log_density(jnp.asarray(y), jnp.asarray(means), jnp.asarray(w), jnp.asarray(stds))
    np.testing.assert_allclose(got, hand, rtol=1e-5)
    mean, var = mixture_moments(jnp.asarray(means), jnp.asarray(w), jnp.asarray(stds))
    hand_mean = w @ means
    hand_var = w @ (means**2 + stds[:, None] ** 2) - hand_mean**2
    np.testing.assert_allclose(mean, hand_mean, rtol=1e-5)
    np.testing.assert_allclose(var, hand_var, rtol=1e-5)


def test_original_scale_is_the_density_of_the_rescaled_target():
    loc, s = 10.0, 4.0
    means, w, std, y = jnp.array([[0.1], [0.4]]), jnp.array([0.5, 0.5]), jnp.array(0.8), jnp.array([0.3])
    mean, var = mixture_moments(means, w, std)
    m, v, ll = to_original_scale(mean, var, mixture_log_density(y, means, w, std), (loc, s))
    y_orig = loc + s * 0.3
    hand = np.log(0.5 * norm.pdf(y_orig, loc + s * 0.1, s * 0.8) + 0.5 * norm.pdf(y_orig, loc + s * 0.4, s * 0.8))
    np.testing.assert_allclose(ll, [hand], rtol=1e-5)
    np.testing.assert_allclose(m, loc + s * 0.25, rtol=1e-5)
    np.testing.assert_allclose(v, s**2 * (0.64 + 0.15**2), rtol=1e-5)


def test_per_depth_gaussian_nll_and_its_noise_floor():
    out = jnp.array([[[0.0], [1.0]], [[1.0], [1.0]]])
    y = jnp.array([0.0, 1.0])
    nll = gaussian_nll(out, y, jnp.log(2.0))
    hand = [-np.mean(norm.logpdf([0.0, 1.0], [0.0, 1.0], 2.0)), -np.mean(norm.logpdf([0.0, 1.0], [1.0, 1.0], 2.0))]
    np.testing.assert_allclose(nll, hand, rtol=1e-5)
    assert float(noise_std(jnp.array(-100.0))) > 0
    with pytest.raises(ValueError, match="log_noise"):
        per_depth_nll(out, y, "gaussian")


def gaussian_mlp(depth=3, **kw):
    return ModelConfig("mlp", max_depth=depth, num_classes=1, input_shape=(1,), width=8, likelihood="gaussian", **kw)


def test_gaussian_config_checks():
    with pytest.raises(ValueError, match="one output"):
        ModelConfig("mlp", 2, 2, (1,), likelihood="gaussian")
    with pytest.raises(ValueError, match="likelihood"):
        ModelConfig("mlp", 2, 2, (1,), likelihood="poisson")
    with pytest.raises(ValueError, match="dropout_rate"):
        ModelConfig("mlp", 2, 2, (1,), dropout_rate=1.0)


def test_gaussian_elbo_gradients_are_finite_and_reach_the_noise_and_q():
    cfg, tc = gaussian_mlp(dropout_rate=0.2), TrainConfig(prior_decay=1.0)
    state = init_state(jax.random.key(0), cfg, make_optimizer(tc, 1))
    assert float(state.params["log_noise"]) == 0.0 and state.rng is not None
    x, y = jax.random.normal(jax.random.key(1), (16, 1)), jnp.linspace(-2, 2, 16)
    # The dropout stream's key is the state's (`rng`): a step samples with fold_in(rng, step).
    grad = jax.jit(lambda p, s: jax.grad(loss_fn, has_aux=True)(p, s, x, y, Objective(cfg, tc, 16))[0])
    grads = grad(state.params, state.replace(rng=jax.random.key_data(jax.random.key(2))))
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert float(jnp.abs(grads["log_noise"])) > 0 and float(jnp.abs(grads["depth_logits"]).sum()) > 0


def test_dropout_changes_only_sampled_passes_and_not_the_parameter_tree():
    plain, drop = gaussian_mlp(), gaussian_mlp(dropout_rate=0.5)
    x = jnp.ones((4, 1))
    v = LDN(plain).init(jax.random.key(0), x)
    assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(LDN(drop).init(jax.random.key(0), x))
    np.testing.assert_array_equal(LDN(plain).apply(v, x), LDN(drop).apply(v, x))  # eval: dropout off
    sample = jax.jit(lambda k: LDN(drop).apply(v, x, sample_dropout=True, rngs={"dropout": k}))
    a, b = sample(jax.random.key(1)), sample(jax.random.key(2))
    assert not np.allclose(a, b)


# ---------------------------------------------------------------------------- data


def write_uci(d, data, features=(0, 1), target=2, splits=None):
    d.mkdir(parents=True, exist_ok=True)
    np.savetxt(d / "data.txt", data)
    np.savetxt(d / "index_features.txt", np.array(features), fmt="%d")
    np.savetxt(d / "index_target.txt", np.array([target]), fmt="%d")
    for k, (tr, te) in (splits or {}).items():
        np.savetxt(d / f"index_train_{k}.txt", tr, fmt="%d")
        np.savetxt(d / f"index_test_{k}.txt", te, fmt="%d")


def test_uci_loader_on_generated_files_with_gap_splits(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(30, 3)) * [1.0, 5.0, 3.0] + [0.0, 2.0, 100.0]
    perm = rng.permutation(30)
    write_uci(tmp_path / "standard" / "toyset" / "data", table, splits={0: (perm[:24], perm[24:]),
                                                                        1: (perm[6:], perm[:6])})
    order = np.argsort(table[:, 0])  # a gap split: the middle third by feature 0 is the test set
    write_uci(tmp_path / "gap" / "toyset" / "data", table, splits={0: (np.r_[order[:10], order[20:]], order[10:20])})
    assert uci_splits(tmp_path / "standard" / "toyset" / "data") == [0, 1]

    d = load_uci(tmp_path / "standard" / "toyset" / "data", split=1)
    assert d.name == "toyset_split1" and d.targets == "real" and d.num_classes == 1
    assert d.x_train.shape == (24, 2) and d.x_test.shape == (6, 2)
    np.testing.assert_allclose(d.x_train.mean(0), 0, atol=1e-5)
    loc, s = d.target_scale
    np.testing.assert_allclose(loc + s * d.y_test, table[perm[:6], 2], rtol=1e-5)

    gap = load_uci_benchmark("toyset", 0, gap=True, root=tmp_path)
    assert gap.name == "toyset_gap_split0" and gap.x_test.shape == (10, 2)
    lo, hi = gap.x_test[:, 0].min(), gap.x_test[:, 0].max()
    assert not np.any((gap.x_train[:, 0] > lo) & (gap.x_train[:, 0] < hi))  # the gap


def test_uci_loader_missing_file_and_bad_indices(tmp_path):
    write_uci(tmp_path, np.ones((5, 3)), splits={0: (np.arange(4), np.array([4]))})
    with pytest.raises(DataNotFoundError, match=r"index_train_3\.txt.*splits present.*\[0\]"):
        load_uci(tmp_path, split=3)
    (tmp_path / "index_target.txt").unlink()
    with pytest.raises(DataNotFoundError, match="index_target.txt"):
        load_uci(tmp_path)
    write_uci(tmp_path, np.ones((5, 3)), splits={0: (np.arange(4), np.array([3]))})
    with pytest.raises(ValueError, match="both the train and the test"):
        load_uci(tmp_path)


def test_diabetes_loads_standardised():
    d = load_diabetes(split=0)
    assert d.n_train + len(d.x_test) == 442 and d.input_shape == (10,)
    np.testing.assert_allclose([d.y_train.mean(), d.y_train.std()], [0, 1], atol=1e-5)
    assert 100 < d.target_scale[0] < 200 and d.target_scale[1] > 10
    assert not np.array_equal(load_diabetes(split=1).y_test, d.y_test)


def test_toy_gap_is_seeded_and_has_gaps():
    x, y = toy_gap(seed=3)
    np.testing.assert_array_equal(x, toy_gap(seed=3)[0])
    assert not np.any((x > 0) & (x < 1.7)) and not np.any((x > 2.5) & (x < 4))
    d, sx = toy_dataset("gap", seed=0)
    assert d.n_train == 501 and sx.apply(np.array([[2.0]])).shape == (1, 1)


def test_regression_targets_are_checked_and_split_without_strata():
    x = np.zeros((10, 1))
    with pytest.raises(ValueError, match="NaN"):
        Dataset("r", x, np.r_[np.nan, np.ones(9)], x, np.ones(10), 1, targets="real")
    with pytest.raises(ValueError, match="one output"):
        Dataset("r", x, np.ones(10), x, np.ones(10), 2, targets="real")
    d = split_validation(Dataset("r", x, np.linspace(0, 1, 10), x, np.ones(10), 1, targets="real"), 0.2)
    assert d.n_val == 2 and d.validation["stratified"] is False and d.y_val.dtype == np.float32


# ---------------------------------------------------------------------------- training and baselines


@pytest.fixture(scope="module")
def trained():
    data, _ = toy_dataset("gap", seed=0)
    cfg = ModelConfig("mlp", max_depth=3, num_classes=1, input_shape=(1,), width=16, likelihood="gaussian")
    tc = TrainConfig(learning_rate=0.005, momentum=0.9, batch_size=128, max_epochs=60, patience=60, stop_on="val",
                     prior_decay=1.0)
    return data, fit_methods(data, cfg, tc, baselines=Baselines(ensemble_size=2, dropout_rate=0.2),
                             options=RunOptions(progress=False, log=lambda s: None))


def test_regression_ldn_learns_and_baselines_predict(trained):
    data, tr = trained
    preds, seconds = method_predictives(tr, data.x_test, jax.random.key(0), n_dropout_samples=8, timing_repeats=1)
    # A constant predictor on standardised targets: N(0, 1).
    const_ll = float(np.mean(norm.logpdf(data.y_test))) - np.log(data.target_scale[1])
    for name in ("ldn", "ddn", "ensemble", "dropout"):
        m = regression_metrics(preds[name], data.y_test, data.target_scale)
        assert m["log_lik"] > const_ll + 0.3, (name, m, const_ll)
        assert seconds[name] > 0
    assert preds["ensemble"].outputs.shape == (2, len(data.x_test), 1)
    assert preds["dropout"].outputs.shape[0] == 8
    # MC dropout: the samples disagree, so the predictive has model variance on top of the noise.
    assert np.std(preds["dropout"].outputs, axis=0).mean() > 1e-3
    mean, std = regression_curve(preds["dropout"], data.target_scale)
    assert np.all(std > float(preds["dropout"].stds[0]) * data.target_scale[1])


def test_ensemble_members_differ_and_train_as_one_program(trained):
    _, tr = trained
    in_program = ["ldn"] + [f"ddn_{i}" for i in range(len(tr.ddns))]
    assert len(in_program) == 3 and {tr.training[k]["networks_in_program"] for k in in_program} == {3}
    a, b = (s.params["model"]["input"]["kernel"] for s in tr.ddns)
    assert not np.allclose(a, b)
    p = ddn_predictive(tr.model_config, tr.ddns[0], np.zeros((3, 1), np.float32))
    assert isinstance(p, Predictive) and p.outputs.shape == (1, 3, 1)
    assert dataclasses.replace(p, stds=None).likelihood == "categorical"
