"""NAS baselines on the depth search space: gates, steps, the DARTS hypergradient, the comparison."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdjax.data import SpiralsConfig, spirals_dataset
from vdjax.nn.models import ModelConfig
from vdjax.baselines.search import (
    STRATEGIES,
    SearchConfig,
    darts2_hypergradient,
    gates,
    init_search,
    mixed_loss,
    search_step,
    unrolled_val_objective,
)

CFG = ModelConfig("mlp", 4, 2, (2,), width=6)


@pytest.fixture(scope="module")
def batches():
    d = spirals_dataset(SpiralsConfig(n_points=400, n_train=64))
    return (jnp.asarray(d.x_train[:32]), jnp.asarray(d.y_train[:32]), jnp.asarray(d.x_train[32:]),
            jnp.asarray(d.y_train[32:]))


def _changed(a, b):
    return [not np.array_equal(np.asarray(u), np.asarray(v))
            for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))]


def test_mixed_loss_by_hand():
    logits = jnp.array([[[2.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]])  # [D+1=3, B=1, C=2]
    y = jnp.array([1])
    g = jnp.array([0.5, 0.25, 0.25])
    mixed = np.array([1.25, 0.5])  # 0.5*[2,0] + 0.25*[0,1] + 0.25*[1,1]
    expected = -(mixed[1] - np.log(np.exp(mixed).sum()))
    assert abs(float(mixed_loss(logits, y, g)) - expected) < 1e-6
    one = float(mixed_loss(logits, y, jnp.array([0.0, 1.0, 0.0])))
    assert abs(one - np.log(1 + np.exp(-1.0))) < 1e-6  # the single depth 1's cross-entropy


def test_binary_gates_are_one_hot_with_the_proxylessnas_gradient():
    cfg = SearchConfig("binary")
    alpha = jnp.array([0.3, -0.2, 0.5, 0.0])
    g, mask = gates(cfg, alpha, jax.random.key(0))
    assert np.asarray(mask).all() and sorted(np.round(np.asarray(g), 6).tolist()) == [0, 0, 0, 1]
    c = jnp.array([1.0, 2.0, -1.0, 0.5])  # dL/dg for L = <c, g>
    grad = jax.grad(lambda a: jnp.dot(c, gates(cfg, a, jax.random.key(0))[0]))(alpha)
    p = np.asarray(jax.nn.softmax(alpha))
    expected = [sum(float(c[j]) * p[j] * ((i == j) - p[i]) for j in range(4)) for i in range(4)]
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)


def test_masked_gates_touch_only_the_sampled_set():
    cfg = SearchConfig("binary_masked", num_eval_samples=2)
    alpha = jnp.zeros(5)
    g, mask = gates(cfg, alpha, jax.random.key(3))
    assert int(np.sum(mask)) == 2 and np.all(np.asarray(g)[~np.asarray(mask)] == 0)
    grad = jax.grad(lambda a: jnp.sum(jnp.arange(5.0) * gates(cfg, a, jax.random.key(3))[0]))(alpha)
    assert np.all(np.asarray(grad)[~np.asarray(mask)] == 0) and np.any(np.asarray(grad)[np.asarray(mask)] != 0)


# Network passes per search step, from each algorithm: the weight update is a gradient
# evaluation; an architecture update whose alpha gradient treats the logits as constants needs
# a forward pass only; exact second-order DARTS differentiates through an inner weight gradient
# (train), the validation loss and back through the inner gradient (a Hessian-vector product);
# DARTS's finite-difference form takes four gradients; SMASH has no architecture update.
PASSES_PER_STEP = {
    **{s: {"forward_passes": 1, "gradient_evaluations": 1, "hessian_vector_products": 0} for s in STRATEGIES},
    "darts2": {"forward_passes": 0, "gradient_evaluations": 3, "hessian_vector_products": 1},
    "smash": {"forward_passes": 0, "gradient_evaluations": 1, "hessian_vector_products": 0},
}


def _traced_network_applications(monkeypatch, step, *args) -> int:
    """How many times tracing `step` applies the network: every search pass goes through
    `vdjax.baselines.search._train_logits`."""
    import vdjax.baselines.search as search_module

    calls, apply = [], search_module._train_logits
    monkeypatch.setattr(search_module, "_train_logits", lambda *a: calls.append(1) or apply(*a))
    jax.make_jaxpr(lambda *a: step(*a))(*args)  # a fresh function: no cached trace
    monkeypatch.setattr(search_module, "_train_logits", apply)
    return len(calls)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_step_updates_weights_and_architecture(strategy, batches, monkeypatch):
    cfg = SearchConfig(strategy, arch_learning_rate=0.05)
    state = init_search(jax.random.key(0), CFG, cfg)
    step = lambda s, xt, yt, xv, yv: search_step(s, (xt, yt), (xv, yv), model_config=CFG, cfg=cfg)  # noqa: E731
    new, loss = jax.jit(step)(state, *batches)
    assert np.isfinite(float(loss))
    # The step counts the passes it runs: as the algorithm says, and one per network application.
    counts = new.cost.counts()
    assert counts == PASSES_PER_STEP[strategy]
    assert _traced_network_applications(monkeypatch, step, state, *batches) == (
        counts["forward_passes"] + counts["gradient_evaluations"])
    assert all(_changed(state.params, new.params)), "every weight takes a step"
    moved = np.asarray(new.alpha) != np.asarray(state.alpha)
    if strategy == "smash":
        assert not moved.any(), "SMASH has no architecture parameters to train"
    elif strategy in ("binary_masked", "proxyless"):
        assert 1 <= moved.sum() <= cfg.num_eval_samples, "only the sampled depths move"
    else:
        assert moved.sum() >= 2
    if strategy == "proxyless":  # the sampled set keeps its total probability
        p_old, p_new = jax.nn.softmax(state.alpha), jax.nn.softmax(new.alpha)
        assert abs(float(jnp.sum(p_new[moved]) - jnp.sum(p_old[moved]))) < 1e-6


def test_darts_prefers_the_depth_with_lower_validation_loss(batches):
    """A few steps of first-order DARTS move alpha towards depths whose outputs fit the validation
    batch: under the learnt distribution the expected validation NLL is below the depths' average
    (the uniform start), and the worst depth has lost probability."""
    cfg = SearchConfig("darts1", arch_learning_rate=0.05)
    state = init_search(jax.random.key(1), CFG, cfg)
    step = jax.jit(lambda s, xt, yt, xv, yv: search_step(s, (xt, yt), (xv, yv), model_config=CFG, cfg=cfg))
    for _ in range(200):
        state, _ = step(state, *batches)
    from vdjax.baselines.search import _train_logits
    from vdjax.depth.posterior import per_depth_nll

    logits, _ = _train_logits(CFG, state.params, state.batch_stats, batches[2])
    nll = np.asarray(per_depth_nll(logits, batches[3]))
    p = np.asarray(jax.nn.softmax(state.alpha))
    assert float(p @ nll) < float(nll.mean()), "the distribution favours the depths that fit validation"
    assert p[np.argmax(nll)] < 1 / len(p), "the worst depth on validation lost probability"


def _central_difference(f, alpha, eps=1e-2):
    out = []
    for i in range(alpha.shape[0]):
        e = jnp.zeros_like(alpha).at[i].set(eps)
        out.append((f(alpha + e) - f(alpha - e)) / (2 * eps))
    return np.array(out)


def test_second_order_darts_hypergradient_matches_finite_differences(batches):
    with jax.enable_x64(True):
        cfg = SearchConfig("darts2", unroll_lr=0.5)
        state = init_search(jax.random.key(2), CFG, cfg)
        state = state.replace(params=jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), state.params),
                              batch_stats=jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), state.batch_stats),
                              alpha=jnp.array([0.4, -0.3, 0.1, 0.2, -0.5], jnp.float64))
        xt, yt, xv, yv = batches
        train, val = (xt.astype(jnp.float64), yt), (xv.astype(jnp.float64), yv)

        def objective(xi):  # L_val after one unrolled step, as a function of alpha
            return jax.jit(lambda a: unrolled_val_objective(CFG, xi, state.replace(alpha=a), train, val))

        # Compiled once each: eager float64 evaluation is what made this test slow.
        fd = _central_difference(objective(cfg.xi), state.alpha, eps=1e-5)
        hypergradient = jax.jit(darts2_hypergradient, static_argnums=(0, 1))
        exact = np.asarray(hypergradient(CFG, cfg, state, train, val))
        np.testing.assert_allclose(exact, fd, rtol=1e-5, atol=1e-8)
        # DARTS's finite-difference Hessian-vector product converges to the same gradient as its
        # radius shrinks; at DARTS's radius 0.01 ReLU kinks leave it roughly right.
        approx = lambda r: np.asarray(hypergradient(  # noqa: E731
            CFG, dataclasses.replace(cfg, hypergradient="finite_difference", fd_radius=r), state, train, val))
        np.testing.assert_allclose(approx(1e-6), fd, rtol=1e-4, atol=1e-8)
        assert np.max(np.abs(approx(0.01) - fd)) < 0.3 * np.max(np.abs(fd))
        # ... and the second-order term matters here: first order differs.
        first = np.asarray(jax.grad(objective(0.0))(state.alpha))
        assert np.max(np.abs(first - fd)) > 10 * np.max(np.abs(exact - fd))


def test_finite_difference_darts_counts_four_architecture_gradients(batches, monkeypatch):
    cfg = SearchConfig("darts2", hypergradient="finite_difference")
    state = init_search(jax.random.key(0), CFG, cfg)
    step = lambda s, xt, yt, xv, yv: search_step(s, (xt, yt), (xv, yv), model_config=CFG, cfg=cfg)[0].cost  # noqa: E731
    cost = jax.jit(step)(state, *batches)
    assert cost.counts() == {"forward_passes": 0, "gradient_evaluations": 5, "hessian_vector_products": 0}
    assert _traced_network_applications(monkeypatch, step, state, *batches) == 5


def test_search_config_validation():
    with pytest.raises(ValueError, match="unknown search strategy"):
        SearchConfig("random_walk")
    with pytest.raises(ValueError, match="num_eval_samples"):
        SearchConfig("proxyless", num_eval_samples=1)
    with pytest.raises(ValueError, match="fd_radius"):
        SearchConfig("darts2", fd_radius=0.0)


@pytest.mark.one_stack
def test_compare_runs_every_kind_of_strategy_and_summarises():
    from vdjax.studies.search_compare import compare, markdown_table, summary_table
    from vdjax.training.config import TrainConfig

    data = spirals_dataset(SpiralsConfig(n_points=500, n_train=100))
    model = ModelConfig("mlp", 3, 2, (2,), width=8)
    rows = compare(data, model, ["ldn", "grid", "darts2", "smash"], [0], TrainConfig(max_epochs=150, patience=50),
                   SearchConfig("darts1", steps=100), log=lambda s: None)
    assert [r["strategy"] for r in rows] == ["ldn", "grid", "darts2", "smash"]
    for r in rows:
        assert 0 <= r["chosen_depth"] <= 3 and len(r["distribution"]) == 4
        assert -5 < r["test"]["log_lik"] < 0 and 0 <= r["test"]["error"] <= 1 and 0 <= r["test"]["ece"] <= 1
        total, final = r["total"], r["final"]
        assert total["seconds"] >= total["seconds_no_compile"] > 0 and total["compile_seconds"] > 0
        # Full-batch spirals: one gradient evaluation per epoch trained, at most max_epochs.
        assert 0 < final["gradient_evaluations"] <= 150 and final["forward_passes"] == 0
        assert total["gradient_evaluations"] == r["search"]["gradient_evaluations"] + final["gradient_evaluations"]
    ldn, grid, darts2, smash = rows
    assert grid["chosen_depth"] == int(np.argmax(grid["val_log_lik"])) and len(grid["val_log_lik"]) == 4
    assert ldn["search_steps"] == 0 and ldn["search"]["gradient_evaluations"] == 0
    assert darts2["search_steps"] == 100
    counted = lambda r: {k: r["search"][k] for k in PASSES_PER_STEP["smash"]}  # noqa: E731
    assert counted(darts2) == {"forward_passes": 0, "gradient_evaluations": 300, "hessian_vector_products": 100}
    assert counted(smash) == {"forward_passes": 1, "gradient_evaluations": 100, "hessian_vector_products": 0}
    # The grid trains a DDN per depth (one gradient evaluation per epoch) and scores each on the
    # validation half in one forward pass.
    assert grid["search"]["forward_passes"] == 4 and grid["search"]["gradient_evaluations"] >= 4
    table = summary_table(rows)
    assert [e["strategy"] for e in table] == ["ldn", "grid", "darts2", "smash"]
    md = markdown_table(table)
    assert md.count("\n") == 6 and "| spirals | darts2 |" in md
    darts2_line = next(line for line in md.splitlines() if "| darts2 |" in line)
    assert darts2_line.endswith(f"| {300 + darts2['final']['gradient_evaluations']} | 0 | 100 |")


@pytest.mark.one_stack
def test_compare_on_images_uses_the_image_trainer():
    from helpers import real_fashion_dir

    from vdjax.data.images import load_images
    from vdjax.studies.search_compare import compare
    from vdjax.training.config import IMAGE_PROTOCOL

    data = load_images("fashion_mnist", real_fashion_dir(), source="files", n_train=64, n_test=32)
    model = ModelConfig("cnn", 1, 10, (28, 28, 1))
    rows = compare(data, model, ["ldn", "gumbel"], [0], IMAGE_PROTOCOL.replace(batch_size=16, max_epochs=1),
                   SearchConfig("darts1", steps=3, batch_size=16), log=lambda s: None)
    # One epoch (58 of the 64 images, 6 held out for validation: 4 batches of 14), then the
    # early-stopping validation ELBO in one pass.
    assert [(r["final"]["gradient_evaluations"], r["final"]["forward_passes"]) for r in rows] == [(4, 1), (4, 1)]
    assert rows[1]["search_steps"] == 3 and rows[1]["chosen_depth"] in (0, 1)
    assert rows[1]["search"]["gradient_evaluations"] == 3 and rows[1]["search"]["forward_passes"] == 3
    assert all(np.isfinite(r["test"]["log_lik"]) for r in rows)
