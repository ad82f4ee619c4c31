"""Dataset shift and OOD detection: rotations, Brier score, predictive entropy, AUROC, class splits."""

import numpy as np
import pytest

from vdjax.data.core import Dataset
from vdjax.baselines.shift import auroc, brier_score, class_split, predictive_entropy, rotate_images


def test_rotation_by_0_is_identity_and_by_90_is_rot90():
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 2)).astype(np.float32)
    np.testing.assert_array_equal(rotate_images(x, 0), x)
    np.testing.assert_allclose(rotate_images(x, 90), np.rot90(x, 1, axes=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(rotate_images(x, 180), x[:, ::-1, ::-1], atol=1e-5)
    corner = rotate_images(np.ones((1, 9, 9, 1), np.float32), 45, fill=-3.0)[0, 0, 0, 0]
    assert corner == pytest.approx(-3.0)
    with pytest.raises(ValueError, match="N, H, W, C"):
        rotate_images(np.zeros((8, 8)), 15)


def test_brier_score_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    labels = np.array([0, 1])
    hand = ((0.3**2 + 0.2**2 + 0.1**2) + (0.1**2 + 0.9**2 + 0.8**2)) / 2
    assert brier_score(probs, labels) == pytest.approx(hand)


def test_entropy_and_auroc_by_hand():
    np.testing.assert_allclose(predictive_entropy(np.array([[1.0, 0.0], [0.5, 0.5]])), [0.0, np.log(2)])
    # Out scores 0.35, 0.8 against in scores 0.1, 0.4: pairs (out > in) = 1 + 2 = 3 of 4.
    assert auroc([0.1, 0.4], [0.35, 0.8]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [0.5]) == pytest.approx(0.5)  # ties count half
    assert auroc([0.0], [1.0, 2.0]) == 1.0


def test_class_split_relabels_and_holds_the_rest_out():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    y = np.array([0, 1, 2, 0, 1, 2])
    d = Dataset("t", x, y, x, y, num_classes=3)
    kept, ood = class_split(d, [2, 0])
    assert kept.num_classes == 2 and set(kept.y_train) == {0, 1}
    np.testing.assert_array_equal(kept.y_test, [0, 1, 0, 1])
    np.testing.assert_array_equal(ood, x[[1, 4]])
    with pytest.raises(ValueError, match="proper subset"):
        class_split(d, [0, 1, 2])
