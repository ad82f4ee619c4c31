"""The predictive metrics against hand computations on a few examples."""

import jax.numpy as jnp
import numpy as np

from vdjax.depth.metrics import (
    error_rate,
    expected_calibration_error,
    log_likelihood,
    marginal_log_probs,
    per_depth_metrics,
    predictive_metrics,
)


def test_marginal_log_probs_average_the_depths_probabilities():
    # Two depths, one example, two classes: p_0 = (0.8, 0.2), p_1 = (0.4, 0.6), q = (0.25, 0.75).
    logits = jnp.log(jnp.array([[[0.8, 0.2]], [[0.4, 0.6]]]))
    got = np.exp(np.asarray(marginal_log_probs(logits, jnp.array([0.25, 0.75]))))
    np.testing.assert_allclose(got, [[0.25 * 0.8 + 0.75 * 0.4, 0.25 * 0.2 + 0.75 * 0.6]], rtol=1e-6)


def test_log_likelihood_and_error_of_three_examples():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    labels = np.array([0, 1, 0])
    lp = jnp.log(jnp.asarray(probs))
    np.testing.assert_allclose(float(log_likelihood(lp, jnp.asarray(labels))),
                               (np.log(0.7) + np.log(0.3) + np.log(0.5)) / 3, rtol=1e-6)
    np.testing.assert_allclose(float(error_rate(lp, jnp.asarray(labels))), 1 / 3, rtol=1e-6)  # only the second is wrong
    per = per_depth_metrics(jnp.stack([lp, lp[:, ::-1]]), jnp.asarray(labels))
    # Depth 1 reverses the classes: p(true) = 0.1, 0.3, 0.1, and all three arg-maxes are wrong.
    np.testing.assert_allclose(np.asarray(per["log_lik"])[1], (np.log(0.1) + np.log(0.3) + np.log(0.1)) / 3, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(per["error"]), [1 / 3, 1.0], rtol=1e-6)


def test_expected_calibration_error_by_hand():
    # Confidences 0.95, 0.92 (bin 9), 0.65 (bin 6), 0.55 (bin 5); correct: yes, no, yes, yes.
    probs = np.array([[0.95, 0.05], [0.08, 0.92], [0.65, 0.35], [0.45, 0.55]])
    labels = np.array([0, 0, 0, 1])
    ece, table = expected_calibration_error(probs, labels, n_bins=10)
    # bin 9: 2 examples, accuracy 0.5, confidence 0.935; bin 6: 1, 1.0 vs 0.65; bin 5: 1, 1.0 vs 0.55.
    want = 2 / 4 * abs(0.5 - 0.935) + 1 / 4 * abs(1 - 0.65) + 1 / 4 * abs(1 - 0.55)
    assert abs(ece - want) < 1e-9
    assert table["count"].tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 0, 2]
    np.testing.assert_allclose(table["accuracy"][[5, 6, 9]], [1.0, 1.0, 0.5])
    m = predictive_metrics(np.log(probs), labels, reliability=True)
    assert abs(m["ece"] - want) < 1e-6 and abs(m["error"] - 0.25) < 1e-9
    assert m["reliability"]["count"] == table["count"].tolist()


def test_a_confidence_on_a_bin_edge_goes_to_the_lower_bin():
    """0.7 sits on the edge between bins 6 and 7; `right=True` puts it in bin 6 (0.6, 0.7]."""
    _, table = expected_calibration_error(np.array([[0.7, 0.3]]), np.array([0]), n_bins=10)
    assert table["count"].tolist()[6] == 1
