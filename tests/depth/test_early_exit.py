"""Early exit (`vdjax.early_exit`, `vdjax.exit_depths`) against an explicit per-example loop over
the depths in numpy: for every example (every position), the q-weighted marginal over the depths
seen so far, renormalised; stop at the first depth whose confidence reaches the threshold, else at
the cap. A one-stage MLP (the preset), a staged CNN and a per-token model; threshold 1 gives the
pruned network's marginal; `computed` is each batch's deepest depth; bad thresholds get one line."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vdjax
from helpers import ConvBN, DenseBN, TokenBlock  # noqa: E402


def np_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def hand_early_exit(logits, q, threshold):
    """logits [K, B, *P, C], q [K] -> (log_probs [B, *P, C], depth [B, *P]), one example (position)
    at a time, one depth at a time."""
    logits, q = np.asarray(logits, np.float64), np.asarray(q, np.float64)
    k_max = len(q) - 1
    probs = np_softmax(logits)
    lead = probs.shape[1:-1]
    out, depth = np.zeros(probs.shape[1:]), np.zeros(lead, np.int64)
    for i in np.ndindex(lead):
        mixture, mass = np.zeros(probs.shape[-1]), 0.0
        for k in range(k_max + 1):
            mixture = mixture + q[k] * probs[(k, *i)]
            mass += q[k]
            current = mixture / mass
            if (threshold < 1 and current.max() >= threshold) or k == k_max:
                out[i], depth[i] = np.log(current), k
                break
    return out, depth


def thresholds_between(logits, q, quantiles=(0.1, 0.4, 0.7, 0.9)):
    """Thresholds half way between two neighbouring running confidences, so that float rounding
    (float32 on the device, float64 here) cannot move a decision."""
    probs = np_softmax(logits)
    cum = np.cumsum(np.asarray(q)[(slice(None),) + (None,) * (probs.ndim - 1)] * probs, axis=0)
    conf = np.unique((cum / np.cumsum(q)[(slice(None),) + (None,) * (probs.ndim - 1)]).max(-1))
    picks = []
    for p in quantiles:
        j = min(max(int(p * len(conf)), 1), len(conf) - 1)
        picks.append(float((conf[j - 1] + conf[j]) / 2))
    return picks


def test_exit_depths_equals_a_per_example_loop():
    rng = np.random.default_rng(0)
    for shape in [(12,), (3, 4)]:  # per example; per position of 3 sequences of 4
        logits = rng.normal(0.0, 2.0, (4, *shape, 5)).astype(np.float32)
        q = rng.dirichlet(np.ones(4)).astype(np.float32)
        for threshold in thresholds_between(logits, q) + [1.0]:
            log_p, depth = vdjax.exit_depths(jnp.asarray(logits), jnp.asarray(q), threshold)
            want_p, want_d = hand_early_exit(logits, q, threshold)
            np.testing.assert_array_equal(depth, want_d, err_msg=str(threshold))
            np.testing.assert_allclose(log_p, want_p, rtol=1e-5, atol=1e-5)
        _, depth = vdjax.exit_depths(jnp.asarray(logits), jnp.asarray(q), thresholds_between(logits, q)[1])
        assert 0 < depth.mean() < 3  # some stop early, some go on


def test_threshold_one_never_stops_early_even_when_a_confidence_rounds_to_one():
    # Depth 0 is sure of class 0 (a margin of 30: its softmax is exactly 1 in float32); the
    # marginal over all depths is not.
    logits = jnp.array([[[30.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]]])
    q = jnp.array([0.2, 0.3, 0.5])
    log_p, depth = vdjax.exit_depths(logits, q, 1.0)
    assert int(depth[0]) == 2
    np.testing.assert_allclose(log_p, vdjax.depth.metrics.marginal_log_probs(logits, q), rtol=1e-6)
    log_p, depth = vdjax.exit_depths(logits, q, 0.999)
    assert int(depth[0]) == 0 and float(log_p[0, 0]) == 0.0


# ---------------------------------------------------------------------------- networks


class MeanPool(nn.Module):
    @nn.compact
    def __call__(self, a):
        return a.mean(axis=(1, 2))


class Embed(nn.Module):
    vocab: int
    width: int

    @nn.compact
    def __call__(self, x):
        return nn.Embed(self.vocab, self.width)(x)


def mlp():
    return vdjax.ModelConfig("mlp", 4, 3, (2,), width=6)


def staged_cnn():
    """Stage 0: 2 conv-BN blocks; stage 1: a stride-2 transition and 2 blocks; exits Dense + BN
    (statistics per depth); a BatchNorm-free head."""
    return vdjax.Network.from_stages(
        nn.Conv(3, (3, 3)),
        (vdjax.Stage(ConvBN(3), 2, exit=DenseBN(5)),
         vdjax.Stage(ConvBN(4), 2, transition=ConvBN(4, strides=2), exit=DenseBN(5))),
        nn.Dense(3), num_classes=3, input_shape=(6, 6, 1), pool=MeanPool())


def per_token():
    return vdjax.Network(stem=Embed(5, 6), block=TokenBlock(6), head=nn.Dense(5), max_depth=3, num_classes=5,
                         input_shape=(4,), target_shape=(4,), inputs="tokens")


def example_inputs(net, n, seed=1):
    rng = np.random.default_rng(seed)
    if net.inputs == "tokens":
        return rng.integers(0, net.num_classes, (n, *net.input_shape))
    return rng.normal(size=(n, *net.input_shape)).astype(np.float32)


def random_variables(net, x):
    """The initialised tree's layout, filled from numpy: parameters of a scale that gives confident
    and unconfident examples, and random BatchNorm running statistics (so that each depth's row of
    the exits' and heads' statistics matters)."""
    shapes = jax.eval_shape(lambda x: vdjax.LDN(net).init(jax.random.key(0), x, train=False), jnp.asarray(x[:2]))
    rng = np.random.default_rng(7)

    def fill(path, leaf):
        if path[-1].key == "var":
            return jnp.asarray(rng.uniform(0.5, 2.0, leaf.shape), jnp.float32)
        return jnp.asarray(rng.normal(0.0, 0.8, leaf.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, dict(shapes))


NETWORKS = {"one-stage mlp": mlp, "staged cnn": staged_cnn, "per-token": per_token}


@pytest.mark.parametrize("name", NETWORKS)
def test_early_exit_equals_a_per_example_loop_over_the_pruned_networks_depths(name):
    net = NETWORKS[name]()
    n, batch = 20, 8  # batches of 8, 8 and 4
    x = example_inputs(net, n)
    variables = random_variables(net, x)
    q = np.random.default_rng(3).dirichlet(np.ones(net.max_depth + 1))
    cap = net.max_depth - 1  # pruned one block short of the full network: the cap is d_opt
    pruned = vdjax.prune(net, variables, q, cap)
    logits = vdjax.eval_logits(pruned.config, pruned.variables, x)  # [cap + 1, n, ..., C]
    depths = []
    for threshold in thresholds_between(logits, pruned.q):
        got = vdjax.early_exit(pruned, x, threshold, batch_size=batch)
        depths.append(got.depth)
        want_p, want_d = hand_early_exit(logits, pruned.q, threshold)
        assert got.depth.shape == x.shape[:1] + net.target_shape
        np.testing.assert_array_equal(got.depth, want_d, err_msg=f"threshold {threshold}")
        np.testing.assert_allclose(got.log_probs, want_p, rtol=1e-4, atol=1e-4)
        # Each batch ran as deep as its deepest example (position) needed, no deeper.
        deepest = [want_d[i : i + batch].max() for i in range(0, n, batch)]
        np.testing.assert_array_equal(got.computed, deepest)
        # The same decisions from every depth's outputs at once.
        log_p, depth = vdjax.exit_depths(jnp.asarray(logits), jnp.asarray(pruned.q, jnp.float32), threshold)
        np.testing.assert_array_equal(depth, want_d)
    # The thresholds stopped some examples early and left others to the cap.
    depths = np.concatenate([d.reshape(-1) for d in depths])
    assert (depths < cap).any() and (depths == cap).any()

    # Threshold 1: every example to the cap, with the pruned network's marginal.
    got = vdjax.early_exit(pruned, x, 1.0, batch_size=batch)
    np.testing.assert_array_equal(got.depth, cap)
    np.testing.assert_array_equal(got.computed, cap)
    np.testing.assert_allclose(got.log_probs, vdjax.predict_log_probs(pruned.config, pruned.variables, pruned.q, x),
                               rtol=1e-4, atol=1e-4)
    # A very low threshold: everything stops at depth 0 (no block runs).
    got = vdjax.early_exit(pruned, x, 1e-6, batch_size=batch)
    np.testing.assert_array_equal(got.depth, 0)
    np.testing.assert_array_equal(got.computed, 0)
    np.testing.assert_allclose(np.exp(got.log_probs), np_softmax(logits[0]), rtol=1e-4, atol=1e-5)


def test_early_exit_of_a_network_pruned_to_depth_zero():
    net = staged_cnn()
    x = example_inputs(net, 6)
    variables = random_variables(net, x)
    pruned = vdjax.prune(net, variables, np.full(net.max_depth + 1, 1 / (net.max_depth + 1)), 0)
    got = vdjax.early_exit(pruned, x, 0.9)
    np.testing.assert_array_equal(got.depth, 0)
    np.testing.assert_allclose(got.log_probs, vdjax.predict_log_probs(pruned.config, pruned.variables, pruned.q, x),
                               rtol=1e-5, atol=1e-5)


def test_early_exit_at_threshold_one_runs_every_example_to_the_cap_even_when_it_is_sure():
    net = mlp()
    x = example_inputs(net, 16)
    variables = random_variables(net, x)
    params = dict(variables["params"])
    params["head"] = jax.tree_util.tree_map(lambda a: 100.0 * a, params["head"])  # saturated softmaxes
    variables = {**variables, "params": params}
    pruned = vdjax.prune(net, variables, np.full(net.max_depth + 1, 1 / (net.max_depth + 1)), net.max_depth)
    logits = vdjax.eval_logits(pruned.config, pruned.variables, x)
    assert (jax.nn.softmax(logits[0]).max(-1) == 1.0).any()  # float32 rounds some depth-0 confidences to 1
    got = vdjax.early_exit(pruned, x, 1.0)
    np.testing.assert_array_equal(got.depth, net.max_depth)
    np.testing.assert_allclose(got.log_probs, vdjax.predict_log_probs(pruned.config, pruned.variables, pruned.q, x),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, True, "a", None, float("nan")])
def test_a_threshold_outside_zero_one_gets_one_line(bad):
    logits, q = jnp.zeros((2, 3, 2)), jnp.array([0.5, 0.5])
    with pytest.raises(ValueError) as e:
        vdjax.exit_depths(logits, q, bad)
    assert "(0, 1]" in str(e.value) and "\n" not in str(e.value)
    net = mlp()
    x = example_inputs(net, 3)
    pruned = vdjax.prune(net, random_variables(net, x), np.full(5, 0.2), 2)
    with pytest.raises(ValueError) as e:
        vdjax.early_exit(pruned, x, bad)
    assert "(0, 1]" in str(e.value) and "\n" not in str(e.value)
