import numpy as np
import pytest

from vdjax.data import Dataset, SpiralsConfig, check_inputs, check_labels, spirals_dataset


def test_spirals_defaults_match_the_paper():
    d = spirals_dataset()
    assert d.x_train.shape == (200, 2) and d.x_test.shape == (1800, 2)
    assert d.num_classes == 2
    assert set(np.unique(d.y_train)) == {0, 1}
    # Standardised with train statistics: train is exactly zero-mean unit-std, test only roughly.
    np.testing.assert_allclose(d.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(d.x_train.std(0), 1, atol=1e-4)
    assert np.all(np.abs(d.x_test.mean(0)) < 0.2)


def test_spirals_are_seeded():
    a, b = spirals_dataset(SpiralsConfig(seed=3)), spirals_dataset(SpiralsConfig(seed=3))
    c = spirals_dataset(SpiralsConfig(seed=4))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.allclose(a.x_train, c.x_train)


def test_spirals_draws_give_each_seed_its_own_draw():
    from vdjax.data.spirals import spirals_draws

    config = SpiralsConfig(rotation=540.0, n_train=100, seed=7)  # its own seed is not used
    draws = spirals_draws(config, [0, 1])
    for seed, d in zip((0, 1), draws):
        want = spirals_dataset(SpiralsConfig(rotation=540.0, n_train=100, seed=seed))
        np.testing.assert_array_equal(d.x_train, want.x_train)
        np.testing.assert_array_equal(d.y_test, want.y_test)
    assert not np.allclose(draws[0].x_train, draws[1].x_train)
    for bad in (None, -1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            SpiralsConfig(seed=bad)


def test_spiral_arms_have_the_requested_rotation():
    from vdjax.data.spirals import make_spirals

    x, y = make_spirals(4000, 2, 360.0, 0.0, np.random.default_rng(0))
    radius = np.linalg.norm(x, axis=1)
    # Noise-free points lie at radius t with t in [0, 2 pi] for a 360 degree arm.
    assert radius.max() <= 2 * np.pi + 1e-5 and radius.max() > 2 * np.pi - 0.05
    # Arm 1 is arm 0 rotated by 180 degrees: mirrored through the origin.
    assert np.sign(x[y == 0].mean(0)[1]) != np.sign(x[y == 1].mean(0)[1])


@pytest.mark.parametrize("kwargs", [dict(n_arms=1), dict(n_train=0), dict(n_train=2000), dict(rotation=0), dict(noise=-1)])
def test_spirals_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        SpiralsConfig(**kwargs)


def test_check_inputs_errors_are_clear():
    with pytest.raises(ValueError, match=r"shape \[batch, 2\]"):
        check_inputs(np.zeros((5, 3)), (2,))
    with pytest.raises(ValueError, match="NaN"):
        check_inputs(np.array([[0.0, np.nan]]), (2,))
    with pytest.raises(TypeError, match="numbers"):
        check_inputs(np.array([["a", "b"]]), (2,))
    assert check_inputs(np.zeros((5, 2), np.float64), (2,)).dtype == np.float32


def test_check_labels_errors_are_clear():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        check_labels(np.array([0, 1, 2]), 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        check_labels(np.array([-1, 1]), 2)
    with pytest.raises(ValueError, match="3 labels for 4 inputs"):
        check_labels(np.array([0, 1, 1]), 2, batch=4)
    with pytest.raises(TypeError):
        check_labels(np.array([0.5, 1.0]), 2)


def test_dataset_validates_its_arrays():
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="y_train"):
        Dataset("toy", x, np.array([0, 1, 2, 0]), x, np.array([0, 1, 1, 0]), num_classes=2)


def test_validation_split_is_stratified_seeded_and_disjoint():
    from vdjax.data import split_validation

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), [50, 30, 20])
    x = rng.normal(size=(100, 2)).astype(np.float32)
    x[:, 0] = np.arange(100)  # identifies each example
    data = Dataset("toy", x, y, x[:7], y[:7], num_classes=3)
    a = split_validation(data, 0.1, seed=1)
    # Stratified: round(10%) of each class; the rest trains; the test set is untouched.
    np.testing.assert_array_equal(np.bincount(a.y_val, minlength=3), [5, 3, 2])
    np.testing.assert_array_equal(np.bincount(a.y_train, minlength=3), [45, 27, 18])
    ids_val, ids_train = set(a.x_val[:, 0].astype(int)), set(a.x_train[:, 0].astype(int))
    assert not ids_val & ids_train and len(ids_val | ids_train) == 100
    assert a.x_test is data.x_test and a.validation == {"fraction": 0.1, "seed": 1, "stratified": True, "n_val": 10}
    # Seeded: the same seed draws the same split, another seed another one.
    np.testing.assert_array_equal(split_validation(data, 0.1, seed=1).x_val, a.x_val)
    assert set(split_validation(data, 0.1, seed=2).x_val[:, 0].astype(int)) != ids_val
    with pytest.raises(ValueError, match="already has a validation split"):
        split_validation(a, 0.1)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        split_validation(data, 1.0)
    with pytest.raises(ValueError, match="one side empty"):
        split_validation(data, 0.001)
