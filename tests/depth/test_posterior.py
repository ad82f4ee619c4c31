import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdjax.nn.models import ModelConfig
from vdjax.depth.posterior import kl_categorical, log_prior, per_depth_nll
from vdjax.training.config import TrainConfig
from vdjax.training.objective import Objective, negative_elbo
from vdjax.training.step import init_state, loss_fn, make_optimizer, make_train_step


def np_log_softmax(a, axis=-1):
    a = a - a.max(axis=axis, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=axis, keepdims=True))


def test_prior_is_normalised_geometric():
    p = np.exp(np.asarray(log_prior(4, 0.85)))
    raw = 0.85 ** (np.arange(5) + 1)
    np.testing.assert_allclose(p, raw / raw.sum(), rtol=1e-6)
    np.testing.assert_allclose(p[1:] / p[:-1], 0.85, rtol=1e-5)
    with pytest.raises(ValueError):
        log_prior(3, 0.0)


def test_kl_matches_hand_computation_and_vanishes_at_prior():
    q = np.array([0.1, 0.2, 0.3, 0.4])
    p = np.array([0.4, 0.3, 0.2, 0.1])
    expected = np.sum(q * np.log(q / p))
    np.testing.assert_allclose(kl_categorical(jnp.log(q), jnp.log(p)), expected, rtol=1e-6)
    lp = log_prior(3)
    np.testing.assert_allclose(kl_categorical(lp, lp), 0.0, atol=1e-7)
    # A one-hot q contributes only its own term (0 log 0 = 0).
    one_hot = jnp.log(jnp.array([0.0, 1.0, 0.0, 0.0]))
    np.testing.assert_allclose(kl_categorical(one_hot, jnp.log(p)), -np.log(0.3), rtol=1e-6)


def test_negative_elbo_equals_hand_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 4)).astype(np.float32)  # depths 0..2, batch 5, 4 classes
    labels = np.array([0, 3, 1, 1, 2])
    alpha = np.array([0.3, -1.0, 0.5], np.float32)
    n_train = 17
    # By hand: q = softmax(alpha); CE per depth; prior 0.85^(d+1) normalised.
    q = np.exp(np.log(np.exp(alpha) / np.exp(alpha).sum()))
    ce = -np_log_softmax(logits)[:, np.arange(5), labels].mean(axis=1)
    prior = 0.85 ** np.arange(1, 4)
    prior /= prior.sum()
    kl = np.sum(q * np.log(q / prior))
    expected = np.sum(q * ce) + kl / n_train
    # What training minimises (`vdjax.negative_elbo`, the objective's loss), on these outputs.
    objective = Objective(ModelConfig("mlp", 2, 4, (2,)), TrainConfig(), n_train)
    params = {"model": {}, "depth_logits": jnp.asarray(alpha)}
    loss = negative_elbo(params, jnp.asarray(logits), jnp.asarray(labels), objective)
    _, aux = objective.loss(params, jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(aux["nll_per_depth"], ce, rtol=1e-5)
    np.testing.assert_allclose(aux["kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(per_depth_nll(jnp.asarray(logits), jnp.asarray(labels)), ce, rtol=1e-5)


@pytest.mark.parametrize("arch, shape", [("mlp", (2,)), ("cnn", (8, 8, 3))])
def test_gradients_reach_every_weight_and_the_depth_logits(arch, shape):
    cfg = ModelConfig(arch, 3, 3, shape)
    tc = TrainConfig()
    state = init_state(jax.random.key(0), cfg, make_optimizer(tc, 1))
    x = jax.random.normal(jax.random.key(1), (16, *shape))
    y = jax.random.randint(jax.random.key(2), (16,), 0, 3)
    grads = jax.grad(lambda p: loss_fn(p, state, x, y, Objective(cfg, tc, 16))[0])(state.params)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    for path, g in flat:
        assert np.all(np.isfinite(g)), path
        assert float(jnp.abs(g).max()) > 0, f"no gradient reaches {jax.tree_util.keystr(path)}"
    # The DDN loss ignores the depth logits.
    ddn = tc.replace(method="ddn")
    g_ddn = jax.grad(lambda p: loss_fn(p, state, x, y, Objective(cfg, ddn, 16))[0])(state.params)
    assert float(jnp.abs(g_ddn["depth_logits"]).max()) == 0.0


def test_one_step_updates_weights_and_depth_logits_together():
    cfg = ModelConfig("mlp", 4, 2, (2,))
    tc = TrainConfig()
    opt = make_optimizer(tc, 1)
    state = init_state(jax.random.key(0), cfg, opt)
    before = jax.tree_util.tree_map(np.asarray, state.params)
    stats_before = jax.tree_util.tree_map(np.asarray, state.batch_stats)
    x = jax.random.normal(jax.random.key(1), (32, 2))
    y = (x[:, 0] > 0).astype(jnp.int32)
    new, metrics = make_train_step(cfg, tc, opt, 32)(state, x, y)
    assert int(new.step) == 1 and np.isfinite(metrics["loss"])
    changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, np.asarray(b)), before, new.params)
    assert all(jax.tree_util.tree_leaves(changed))
    # Running BatchNorm statistics moved too.
    moved = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, np.asarray(b)), stats_before, new.batch_stats)
    assert all(jax.tree_util.tree_leaves(moved))


def test_depth_logit_gradient_of_the_elbo_equals_its_analytic_form():
    """d loss / d alpha_k = q_k (nll_k - E_q nll) + q_k (log(q_k / p_k) - KL) / N: the softmax
    Jacobian applied to the expected NLL and to the KL."""
    import numpy as np

    from vdjax.depth.posterior import elbo_from_nll, log_prior

    rng = np.random.default_rng(3)
    nll = jnp.asarray(rng.uniform(0.1, 2.0, 6), jnp.float32)
    alpha = jnp.asarray(rng.normal(size=6), jnp.float32)
    n = 37
    grad = jax.grad(lambda a: elbo_from_nll(nll, a, n)[0])(alpha)
    q = np.exp(alpha - np.log(np.exp(np.asarray(alpha, np.float64)).sum()))
    p = np.exp(np.asarray(log_prior(5), np.float64))
    kl = np.sum(q * np.log(q / p))
    want = q * (np.asarray(nll) - np.sum(q * np.asarray(nll))) + q * (np.log(q / p) - kl) / n
    np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-5, atol=1e-7)
