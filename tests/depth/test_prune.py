import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdjax.depth.metrics import marginal_log_probs
from vdjax.depth.prune import (
    d_opt_95,
    expected_depth,
    fold_posterior,
    predict_log_probs,
    prune,
    prune_variables,
    select_depth,
)
from vdjax.nn.models import LDN, ModelConfig, eval_logits
from vdjax.training.config import TrainConfig
from vdjax.training.step import init_state, make_optimizer, make_train_step


def test_d_opt_95_is_the_shallowest_depth_near_the_maximum():
    q = np.array([0.01, 0.05, 0.2, 0.195, 0.21, 0.2, 0.135])
    assert d_opt_95(q) == 2  # 0.2 >= 0.95 * 0.21
    assert d_opt_95(np.array([0.1, 0.2, 0.7])) == 2
    assert d_opt_95(np.array([0.5, 0.5])) == 0
    assert select_depth(q, "95") == 2


def test_expected_depth_rounds_the_mean():
    q = np.array([0.1, 0.2, 0.3, 0.4])
    assert expected_depth(q) == 2  # 0.2 + 0.6 + 1.2 = 2.0
    assert expected_depth(np.array([0.0, 0.0, 0.4, 0.6])) == 3  # 2.6
    assert select_depth(q, "expected") == 2
    with pytest.raises(ValueError):
        select_depth(q, "median")


def test_fold_posterior_keeps_the_mass():
    q = np.array([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(fold_posterior(q, 1), [0.1, 0.9])
    np.testing.assert_allclose(fold_posterior(q, 3), q)
    np.testing.assert_allclose(fold_posterior(q, 0), [1.0])
    with pytest.raises(ValueError, match="pruning depth"):
        fold_posterior(q, 4)


def trained(cfg, steps=5):
    """A briefly trained model: non-trivial BatchNorm statistics and a non-uniform q."""
    tc = TrainConfig()
    opt = make_optimizer(tc, 1)
    state = init_state(jax.random.key(0), cfg, opt)
    step = make_train_step(cfg, tc, opt, 64)
    x = jax.random.normal(jax.random.key(1), (64, *cfg.input_shape))
    y = jax.random.randint(jax.random.key(2), (64,), 0, cfg.num_classes)
    for _ in range(steps):
        state, _ = step(state, x, y)
    q = np.asarray(jax.nn.softmax(jax.random.normal(jax.random.key(3), (cfg.max_depth + 1,))))
    return state, q, np.asarray(x)


@pytest.mark.parametrize(
    "cfg", [ModelConfig("mlp", 8, 2, (2,)), ModelConfig("cnn", 5, 10, (8, 8, 1))], ids=["mlp", "cnn"]
)
@pytest.mark.parametrize("depth", [0, 2])
def test_pruned_prediction_equals_the_full_model_restricted_to_d_opt(cfg, depth):
    state, q, x = trained(cfg)
    full_logits = eval_logits(cfg, state.variables, x)
    expected = marginal_log_probs(jnp.asarray(full_logits[: depth + 1]), jnp.asarray(fold_posterior(q, depth)))
    pruned = prune(cfg, state.variables, q, depth)
    got = predict_log_probs(pruned.config, pruned.variables, pruned.q, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # With depth = max_depth nothing is cut and the marginal is the full one.
    whole = prune(cfg, state.variables, q, cfg.max_depth)
    np.testing.assert_allclose(
        predict_log_probs(whole.config, whole.variables, whole.q, x),
        marginal_log_probs(jnp.asarray(full_logits), jnp.asarray(q)), rtol=1e-5, atol=1e-5,
    )


def count(tree):
    return sum(np.size(a) for a in jax.tree_util.tree_leaves(tree))


def test_pruned_model_is_genuinely_smaller():
    cfg = ModelConfig("cnn", 6, 10, (8, 8, 1))
    state, q, x = trained(cfg, steps=1)
    pruned = prune(cfg, state.variables, q, 2)
    assert pruned.d_opt == 2 and pruned.config.max_depth == 2
    blocks_full = count(state.variables["params"]["blocks"])
    blocks_pruned = count(pruned.variables["params"]["blocks"])
    assert blocks_pruned * 3 == blocks_full
    # The pruned network's program scans 2 blocks, not 6.
    jaxpr = jax.make_jaxpr(lambda v, x: LDN(pruned.config).apply(v, x))(pruned.variables, x)
    lengths = [eqn.params["length"] for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name == "scan"]
    assert lengths == [2]
    # Depth 0 drops the stack entirely.
    assert "blocks" not in prune_variables(state.variables, 0)["params"]
