"""Per-position outputs ([D+1, B, T, C] with targets [B, T]) checked by hand: the per-depth NLL
(an example's NLL sums its positions; the mean is over examples), the ELBO (KL / N with N the
number of examples, not of positions), per-position metrics, the marginal; one-line errors; and a
tiny per-token sequence model trained, pruned and predicted through the public API."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vdjax
from helpers import TokenBlock  # noqa: E402
from vdjax.data import Dataset
from vdjax.depth.metrics import (
    error_rate,
    expected_calibration_error,
    log_likelihood,
    marginal_log_probs,
    per_depth_metrics,
    predictive_metrics,
)
from vdjax.depth.posterior import per_depth_nll
from vdjax.training.objective import Objective, method_index

K, B, T, C = 3, 5, 4, 6


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def random_problem(shape=(T,), seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, (K, B, *shape, C)).astype(np.float32)
    labels = rng.integers(0, C, (B, *shape))
    return logits, labels


def hand_nll(logits, labels):
    """NLL_d = mean over examples b of sum over positions t of -log softmax(logits[d, b, t])[y[b, t]]."""
    lp = np_log_softmax(logits)
    out = np.zeros(len(logits))
    for d in range(len(logits)):
        for b in range(labels.shape[0]):
            for pos in np.ndindex(labels.shape[1:]):
                out[d] -= lp[(d, b, *pos, labels[(b, *pos)])]
    return out / labels.shape[0]


@pytest.mark.parametrize("shape", [(T,), (2, 3)], ids=["sequence", "dense"])
def test_per_depth_nll_sums_positions_and_averages_examples(shape):
    logits, labels = random_problem(shape)
    got = per_depth_nll(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(got, hand_nll(logits, labels), rtol=1e-5)
    # The same as flattening each example's positions into one long example.
    flat = per_depth_nll(jnp.asarray(logits.reshape(K, B * int(np.prod(shape)), C)),
                         jnp.asarray(labels.reshape(-1)))
    np.testing.assert_allclose(got, np.prod(shape) * np.asarray(flat), rtol=1e-5)
    with pytest.raises(AssertionError):  # labels of another shape
        per_depth_nll(jnp.asarray(logits), jnp.asarray(labels[:, :1]))


def per_token_network(max_depth=2, vocab=C, length=T, width=8) -> vdjax.Network:
    return vdjax.Network(stem=Embed(vocab, width), block=TokenBlock(width), head=nn.Dense(vocab), max_depth=max_depth,
                         num_classes=vocab, input_shape=(length,), target_shape=(length,), inputs="tokens")


def test_the_elbo_with_per_position_targets_equals_a_hand_computation():
    logits, labels = random_problem()
    alpha = np.array([0.4, -0.7, 0.2], np.float32)
    n_train = 23  # examples (sequences), not positions: KL / 23, never KL / (23 * T)
    q = np.exp(alpha - alpha.max())
    q /= q.sum()
    prior = 0.85 ** np.arange(1, K + 1)
    prior /= prior.sum()
    kl = np.sum(q * np.log(q / prior))
    nll = hand_nll(logits, labels)
    expected = np.sum(q * nll) + kl / n_train

    objective = Objective(per_token_network(max_depth=K - 1), vdjax.TrainConfig(), n_train)
    params = {"model": {}, "depth_logits": jnp.asarray(alpha)}
    loss = vdjax.negative_elbo(params, jnp.asarray(logits), jnp.asarray(labels), objective)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    same, aux = objective.loss(params, jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(same, expected, rtol=1e-5)
    np.testing.assert_allclose(aux["nll_per_depth"], nll, rtol=1e-5)
    np.testing.assert_allclose(aux["kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(aux["expected_nll"], np.sum(q * nll), rtol=1e-5)

    # Held out, the same ELBO (expected NLL), and with the marginal NLL: -sum over an example's
    # positions of log p(y_t|x), averaged over examples, + KL / N. A DDN's two coincide.
    marginal = np.exp(np_log_softmax(logits)) * q[:, None, None, None]
    marginal_nll = -np.log(marginal.sum(0))[np.arange(B)[:, None], np.arange(T), labels].sum(-1).mean()
    held = objective.heldout(params, jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(held["loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(held["log_lik"], -marginal_nll / T, rtol=1e-5)  # reported per token
    stop_marginal = vdjax.TrainConfig(stop_on="val", stop_objective="marginal")
    held = Objective(objective.model, stop_marginal, n_train).heldout(params, jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(held["loss"], marginal_nll + kl / n_train, rtol=1e-5)
    # The same with the method a traced index (networks of several methods in one program).
    indexed = jax.jit(lambda m: Objective(objective.model, stop_marginal, n_train).heldout(
        params, jnp.asarray(logits), jnp.asarray(labels), m))(method_index(["ldn"])[0])
    np.testing.assert_allclose(indexed["loss"], marginal_nll + kl / n_train, rtol=1e-5)
    ddn = Objective(objective.model, stop_marginal, n_train).heldout(params, jnp.asarray(logits),
                                                                     jnp.asarray(labels), "ddn")
    np.testing.assert_allclose(ddn["loss"], nll[-1], rtol=1e-5)


def test_metrics_per_position_against_numpy():
    logits, labels = random_problem()
    lp = np_log_softmax(logits)
    picked = lp[np.arange(K)[:, None, None], np.arange(B)[None, :, None], np.arange(T)[None, None, :], labels[None]]
    np.testing.assert_allclose(log_likelihood(jnp.asarray(lp, jnp.float32), jnp.asarray(labels)),
                               picked.mean(axis=(1, 2)), rtol=1e-5)  # per token
    np.testing.assert_allclose(error_rate(jnp.asarray(lp), jnp.asarray(labels)),
                               (lp.argmax(-1) != labels[None]).mean(axis=(1, 2)), rtol=1e-6)
    per = per_depth_metrics(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(per["log_lik"], picked.mean(axis=(1, 2)), rtol=1e-5)

    # The marginal over depths, position by position.
    q = np.array([0.2, 0.5, 0.3])
    got = marginal_log_probs(jnp.asarray(logits), jnp.asarray(q, jnp.float32))
    assert got.shape == (B, T, C)
    np.testing.assert_allclose(got, np.log(np.einsum("k,kbtc->btc", q, np.exp(lp))), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        marginal_log_probs(jnp.asarray(logits[:, 0, 0]), jnp.asarray(q, jnp.float32))

    # Calibration: every position's prediction is one sample (equal-width bins, right-closed).
    probs = np.exp(np.asarray(got, np.float64))
    conf, hit = probs.max(-1).reshape(-1), (probs.argmax(-1) == labels).reshape(-1)
    ece_hand = 0.0
    for i in range(10):
        in_bin = (conf > i / 10) & (conf <= (i + 1) / 10) if i else conf <= 0.1
        if in_bin.any():
            ece_hand += in_bin.sum() / conf.size * abs(hit[in_bin].mean() - conf[in_bin].mean())
    ece, table = expected_calibration_error(probs, labels)
    np.testing.assert_allclose(ece, ece_hand, rtol=1e-6)
    assert table["count"].sum() == B * T
    np.testing.assert_allclose(ece, expected_calibration_error(probs.reshape(-1, C), labels.reshape(-1))[0])
    metrics = predictive_metrics(np.asarray(got), labels)
    np.testing.assert_allclose(metrics["log_lik"], np.log(probs)[np.arange(B)[:, None], np.arange(T), labels].mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(metrics["error"], 1 - hit.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["ece"], ece_hand, rtol=1e-5)


# ---------------------------------------------------------------------------- a per-token model


class Embed(nn.Module):
    """Token ids [B, T] -> [B, T, width]."""

    vocab: int
    width: int

    @nn.compact
    def __call__(self, x):
        assert jnp.issubdtype(x.dtype, jnp.integer), x.dtype  # inputs='tokens' keeps the ids integers
        return nn.Embed(self.vocab, self.width)(x)


def next_token_data(n, seed, vocab=C, length=T):
    """Sequences counting up modulo `vocab` from a random start; the target at every position is the
    next token: y_t = (x_t + 1) mod vocab."""
    start = np.random.default_rng(seed).integers(0, vocab, n)
    x = (start[:, None] + np.arange(length)) % vocab
    return x, (x + 1) % vocab


def token_dataset():
    x, y = next_token_data(64, 0)
    xt, yt = next_token_data(32, 1)
    return Dataset("count", x, y, xt, yt, num_classes=C, inputs="tokens")


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


def test_targets_of_the_wrong_shape_get_one_line():
    x, y = next_token_data(8, 0)
    with pytest.raises(ValueError) as e:  # test targets of another shape than the training targets
        Dataset("count", x, y, x, y[:, :2], num_classes=C, inputs="tokens")
    assert f"[batch, {T}]" in one_line(e) and "[8, 2]" in str(e.value)
    with pytest.raises(ValueError) as e:
        Dataset("count", x, y, x, y[:5], num_classes=C, inputs="tokens")
    one_line(e)
    net = per_token_network()
    tc = vdjax.TrainConfig(max_epochs=1)
    for bad in (y[:, 0], y[:, :2], y[..., None]):
        with pytest.raises(ValueError) as e:
            vdjax.fit(net, tc, (x, bad))
        assert "one per position" in one_line(e)
    with pytest.raises(ValueError) as e:  # labels out of range
        vdjax.fit(net, tc, (x, y + C))
    one_line(e)
    # One label per example where the network predicts one per position, and the reverse.
    with pytest.raises(ValueError) as e:
        vdjax.fit(net, tc, Dataset("one", x, y[:, 0], x, y[:, 0], num_classes=C, inputs="tokens"))
    assert "targets of shape" in one_line(e)
    with pytest.raises(ValueError) as e:
        vdjax.fit(net.replace(target_shape=()), tc, token_dataset())
    one_line(e)
    with pytest.raises(ValueError) as e:  # model tokens, data real
        vdjax.fit(net, tc, Dataset("count", x.astype(np.float32), y, x.astype(np.float32), y, num_classes=C))
    assert "tokens" in one_line(e)


def test_token_inputs_that_are_negative_or_not_integers_get_one_line():
    x, y = next_token_data(8, 0)
    with pytest.raises(ValueError) as e:
        Dataset("count", x - 1, y, x, y, num_classes=C, inputs="tokens")
    assert ">= 0" in one_line(e)
    with pytest.raises(TypeError) as e:
        Dataset("count", x + 0.5, y, x, y, num_classes=C, inputs="tokens")
    assert "integer token ids" in one_line(e)
    with pytest.raises(TypeError) as e:
        Dataset("count", np.where(x == 0, np.nan, x), y, x, y, num_classes=C, inputs="tokens")
    one_line(e)
    with pytest.raises(ValueError) as e:
        Dataset("count", x, y, x, y, num_classes=C, inputs="words")
    one_line(e)
    net, tc = per_token_network(), vdjax.TrainConfig(max_epochs=1)
    with pytest.raises(ValueError) as e:
        vdjax.fit(net, tc, (x - 3, y))
    one_line(e)
    with pytest.raises(TypeError) as e:
        vdjax.fit(net, tc, (x * 0.5, y))
    one_line(e)
    # Integer-valued floats are token ids: kept as int32.
    data = Dataset("count", x.astype(np.float32), y, x, y, num_classes=C, inputs="tokens")
    assert data.x_train.dtype == np.int32 and np.array_equal(data.x_train, x)


def test_target_shape_with_a_gaussian_likelihood_and_bad_fields_get_one_line():
    with pytest.raises(ValueError) as e:
        vdjax.Network(stem=Embed(C, 8), block=TokenBlock(8), head=nn.Dense(1), max_depth=2, num_classes=1,
                      input_shape=(T,), target_shape=(T,), likelihood="gaussian")
    assert "target_shape" in one_line(e)
    with pytest.raises(ValueError) as e:
        per_token_network().replace(target_shape=(0,))
    one_line(e)
    with pytest.raises(ValueError) as e:
        per_token_network().replace(inputs="words")
    one_line(e)


def test_a_head_of_the_wrong_shape_for_the_targets_gets_one_line():
    class LastPosition(nn.Module):  # one prediction per sequence where the network wants one per token
        @nn.compact
        def __call__(self, a):
            return nn.Dense(C)(a[:, -1])

    net = per_token_network().replace(head=LastPosition())
    with pytest.raises(ValueError) as e:
        jax.eval_shape(lambda x: vdjax.LDN(net).init(jax.random.key(0), x), jnp.zeros((2, T), jnp.int32))
    assert "target_shape" in one_line(e) and f"(2, {C})" in str(e.value)


def test_a_per_token_model_trains_prunes_and_predicts():
    data, net = token_dataset(), per_token_network()
    tc = vdjax.TrainConfig(max_epochs=60, patience=60, learning_rate=0.3, batch_size=64)
    result = vdjax.fit(net, tc, data, [0])
    history = np.asarray(result.state.history)[0]
    assert history[tc.max_epochs - 1] < 0.2 * history[0]
    state = result.best_state(0)
    q = np.asarray(state.q)
    assert np.abs(q - 1 / len(q)).max() > 1e-3
    d = vdjax.select_depth(q)
    pruned = vdjax.prune(net, state.variables, q, d)
    log_p = vdjax.predict_log_probs(pruned.config, pruned.variables, pruned.q, data.x_test)
    assert log_p.shape == (len(data.x_test), T, C)
    np.testing.assert_allclose(np.exp(log_p).sum(-1), 1.0, rtol=1e-5)
    assert np.mean(log_p.argmax(-1) == data.y_test) > 0.95  # every next token (chance 1/6)
    metrics = vdjax.evaluate(net, state, data.x_test, data.y_test)
    assert metrics["error"] < 0.05 and metrics["per_depth_log_lik"].shape == (net.max_depth + 1,)
    # The pruned network's outputs are the first d + 1 rows of the full network's.
    full = vdjax.eval_logits(net, state.variables, data.x_test)
    assert full.shape == (net.max_depth + 1, len(data.x_test), T, C)
    np.testing.assert_allclose(vdjax.eval_logits(pruned.config, pruned.variables, data.x_test), full[: d + 1],
                               rtol=1e-5, atol=1e-5)
