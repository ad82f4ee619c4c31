"""Image data readers, the image trainer (early stopping, checkpoints, resume) and image runs."""

import dataclasses
import gzip
import os
import struct
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

from vdjax.data.images import (
    IMAGE_DATASETS,
    DataNotFoundError,
    batches,
    load_images,
    read_idx,
    read_svhn_mat,
)
from vdjax.models import ModelConfig
from vdjax.trainer import IMAGE_PROTOCOL, CheckpointError, fit_dataset

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# CI installs Debian's dataset-fashion-mnist and sets this, so the real-data tests cannot skip there.
REQUIRE_REAL = os.environ.get("VDJAX_REQUIRE_REAL_DATA") == "1"


def _write_idx(path: Path, array: np.ndarray, dims=None, truncate: int = 0, magic_type: int = 0x08):
    dims = array.shape if dims is None else dims
    body = struct.pack(">BBBB", 0, 0, magic_type, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    body += array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as f:
        f.write(body[: len(body) - truncate])


def _fake_mnist(d: Path, n_train=30, n_test=12, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test),
    }
    d.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        _write_idx(d / name, a)
    return arrays


def real_fashion_dir() -> Path:
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        if REQUIRE_REAL:
            pytest.fail(f"{FASHION_DIR} is missing: apt-get install dataset-fashion-mnist")
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    return FASHION_DIR


# ---------------------------------------------------------------------------- readers


def test_idx_round_trip_and_normalisation(tmp_path):
    arrays = _fake_mnist(tmp_path)
    images = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(images, arrays["train-images-idx3-ubyte.gz"])
    data = load_images("mnist", tmp_path, source="files")
    assert data.x_train.shape == (30, 28, 28, 1) and data.x_test.shape == (12, 28, 28, 1)
    assert data.x_train.dtype == np.float32
    raw = arrays["train-images-idx3-ubyte.gz"][..., None] / 255.0
    np.testing.assert_allclose(data.x_train, (raw - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(data.y_test, arrays["t10k-labels-idx1-ubyte.gz"])


def test_idx_rejects_truncated_and_wrong_magic(tmp_path):
    a = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    _write_idx(tmp_path / "trunc.gz", a, truncate=10)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "trunc.gz")
    _write_idx(tmp_path / "magic.gz", a, magic_type=0x42)
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "magic.gz")
    (tmp_path / "notgz.gz").write_bytes(b"not a gzip stream at all")
    with pytest.raises(ValueError, match="IDX"):
        read_idx(tmp_path / "notgz.gz")


def test_mismatched_image_and_label_counts(tmp_path):
    _fake_mnist(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(29))
    with pytest.raises(ValueError, match="30 images but 29 labels"):
        load_images("fashion_mnist", tmp_path, source="files")


def test_missing_files_name_what_and_where(tmp_path):
    _fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError) as info:
        load_images("mnist", tmp_path, source="files")
    msg = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and str(tmp_path) in msg
    assert "train-images-idx3-ubyte.gz" not in msg.splitlines()[1]  # only the missing one is listed


def test_unknown_dataset_and_source():
    with pytest.raises(ValueError, match="unknown image data set"):
        load_images("cifar10")
    with pytest.raises(ValueError, match="source"):
        load_images("mnist", source="web")


def test_svhn_mat_reader(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for split, n in (("train", 7), ("test", 5)):
        x = rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8)
        y = np.array([10, *range(1, n)]).reshape(-1, 1)  # SVHN stores digit 0 as 10
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    x, y = read_svhn_mat(tmp_path / "train_32x32.mat")
    assert x.shape == (7, 32, 32, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, np.arange(7))
    data = load_images("svhn", tmp_path, source="files")
    assert data.x_train.shape == (7, 32, 32, 3) and data.input_shape == IMAGE_DATASETS["svhn"].shape
    savemat(tmp_path / "test_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, 5)).astype(np.uint8),
                                          "y": np.ones((4, 1))})
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        load_images("svhn", tmp_path, source="files")


def test_svhn_label_10_is_digit_zero(tmp_path):
    from scipy.io import savemat

    savemat(tmp_path / "t.mat", {"X": np.zeros((32, 32, 3, 3), np.uint8), "y": np.array([[10], [1], [9]])})
    _, y = read_svhn_mat(tmp_path / "t.mat")
    np.testing.assert_array_equal(y, [0, 1, 9])


def test_subsets_are_seeded(tmp_path):
    _fake_mnist(tmp_path)
    a = load_images("mnist", tmp_path, source="files", n_train=10, n_test=5, seed=3)
    b = load_images("mnist", tmp_path, source="files", n_train=10, n_test=5, seed=3)
    c = load_images("mnist", tmp_path, source="files", n_train=10, n_test=5, seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.n_train == 10 and len(a.x_test) == 5
    assert not np.array_equal(a.x_train, c.x_train)


def test_batches_keep_or_drop_the_last_partial_batch():
    ev = batches(10, 4)
    assert [len(b) for b in ev] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(ev), np.arange(10))
    tr = batches(10, 4, np.random.default_rng(0), drop_last=True)
    assert [len(b) for b in tr] == [4, 4] and len(set(np.concatenate(tr))) == 8


def test_real_fashion_mnist():
    data = load_images("fashion_mnist", real_fashion_dir(), source="files")
    assert data.x_train.shape == (60000, 28, 28, 1) and data.x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(data.y_train), np.full(10, 6000))
    # Normalised with Fashion-MNIST's own statistics: mean ~0 and std ~1 on the train set.
    assert abs(float(data.x_train.mean())) < 0.01 and abs(float(data.x_train.std()) - 1.0) < 0.01


# ---------------------------------------------------------------------------- trainer


@pytest.fixture(scope="module")
def tiny_images():
    """A small real Fashion-MNIST subset (or, outside CI without the package, generated IDX files)."""
    if FASHION_DIR.exists() or REQUIRE_REAL:
        return load_images("fashion_mnist", real_fashion_dir(), source="files", n_train=128, n_test=64)
    import tempfile

    d = Path(tempfile.mkdtemp())
    _fake_mnist(d, 128, 64)
    return load_images("fashion_mnist", d, source="files")


TINY = IMAGE_PROTOCOL.replace(batch_size=32, max_epochs=3, lr_drop_epoch=2)


def test_killed_run_resumes_to_the_same_result(tiny_images, tmp_path):
    cfg = ModelConfig("cnn", 2, 10, (28, 28, 1))
    whole = fit_dataset(tiny_images, cfg, TINY, seed=5, progress=False)
    part = fit_dataset(tiny_images, cfg, TINY, seed=5, checkpoint_dir=tmp_path, progress=False, stop_after_epochs=1)
    assert part.stopped == "interrupted" and part.epochs == 1
    resumed = fit_dataset(tiny_images, cfg, TINY, seed=5, checkpoint_dir=tmp_path, progress=False)
    assert resumed.resumed_from == 1 and resumed.epochs == whole.epochs == 3
    assert resumed.best_epoch == whole.best_epoch
    chex.assert_trees_all_equal(resumed.state.params, whole.state.params)
    chex.assert_trees_all_equal(resumed.state.batch_stats, whole.state.batch_stats)
    assert [h["test_loss"] for h in resumed.history] == [h["test_loss"] for h in whole.history]
    # The kept parameters are the best epoch's, not the last one's, whenever those differ.
    assert whole.history[whole.best_epoch]["test_loss"] == min(h["test_loss"] for h in whole.history)


def test_checkpoint_of_another_run_or_corrupt_is_refused(tiny_images, tmp_path):
    cfg = ModelConfig("cnn", 1, 10, (28, 28, 1))
    fit_dataset(tiny_images, cfg, TINY, seed=0, checkpoint_dir=tmp_path, progress=False, stop_after_epochs=1)
    with pytest.raises(CheckpointError, match="different run"):
        fit_dataset(tiny_images, cfg, TINY, seed=1, checkpoint_dir=tmp_path, progress=False)
    # The same data set name and sizes, other images (as a subset drawn with another seed).
    other = dataclasses.replace(tiny_images, x_train=tiny_images.x_train[::-1].copy())
    with pytest.raises(CheckpointError, match="different run"):
        fit_dataset(other, cfg, TINY, seed=0, checkpoint_dir=tmp_path, progress=False)
    for f in tmp_path.rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        fit_dataset(tiny_images, cfg, TINY, seed=0, checkpoint_dir=tmp_path, progress=False)
    assert any(tmp_path.rglob("*")), "the corrupt checkpoint must be left in place"


def test_early_stopping_on_test_elbo(tiny_images):
    cfg = ModelConfig("cnn", 1, 10, (28, 28, 1))
    run = fit_dataset(tiny_images, cfg, TINY.replace(max_epochs=50, patience=1, learning_rate=2.0), seed=0,
                      progress=False)
    losses = [h["test_loss"] for h in run.history]
    assert run.stopped in ("patience", "nonfinite")
    assert run.epochs < 50 and run.best_epoch == int(np.nanargmin(losses))
    if run.stopped == "patience":
        assert run.epochs - 1 - run.best_epoch == 1


def test_nonfinite_loss_stops_and_keeps_best(tiny_images):
    cfg = ModelConfig("cnn", 1, 10, (28, 28, 1))
    with pytest.warns(RuntimeWarning, match="non-finite"):
        run = fit_dataset(tiny_images, cfg, TINY.replace(max_epochs=20, learning_rate=1e30), seed=0, progress=False)
    assert run.stopped == "nonfinite"
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree_util.tree_leaves(run.state.params))


def test_model_and_data_mismatch(tiny_images):
    with pytest.raises(ValueError, match="model expects"):
        fit_dataset(tiny_images, ModelConfig("cnn", 1, 10, (32, 32, 3)), TINY, progress=False)


# ---------------------------------------------------------------------------- image runs


def test_image_points_records_pruning_and_skip(tiny_images, tmp_path):
    from vdjax.image_runs import (
        ImagePoint,
        depth_table,
        load_image_variables,
        load_records,
        run_image_point,
    )
    from vdjax.metrics import predictive_metrics
    from vdjax.prune import predict_log_probs, prune

    tc = TINY.replace(max_epochs=2)
    ddn = run_image_point(tiny_images, ImagePoint("ddn", 3, 0), tc, tmp_path, progress=False)
    ldn = run_image_point(tiny_images, ImagePoint("ldn", 3, 0), tc, tmp_path, progress=False)
    assert ddn["method"] == "ddn" and set(ddn["test"]) >= {"log_lik", "error", "ece", "reliability"}
    q = np.asarray(ldn["q"])
    assert q.shape == (4,) and abs(q.sum() - 1) < 1e-6 and 0 <= ldn["d_opt"] <= 3
    assert ldn["ddn"] == ddn["test"]
    env = ldn["environment"]
    assert env["seeds_in_batch"] == 1 and {"platform", "jax", "jaxlib", "flax"} <= set(env)
    assert ldn["speed"]["pruned_depth"] == ldn["d_opt"] and ldn["speed"]["ddn_depth"] == 3
    assert ldn["speed"]["ddn_seconds"] > 0 and ldn["speed"]["pruned_seconds"] > 0
    # LDN-95 in the record is what the genuinely pruned network predicts.
    variables, depth_logits = load_image_variables(tmp_path, "fashion_mnist", ImagePoint("ldn", 3, 0))
    cfg = ModelConfig("cnn", 3, 10, (28, 28, 1))
    pruned = prune(cfg, variables, np.asarray(jax.nn.softmax(depth_logits), np.float64), ldn["d_opt"])
    direct = predictive_metrics(predict_log_probs(pruned.config, pruned.variables, pruned.q, tiny_images.x_test),
                                tiny_images.y_test)
    for k in ("log_lik", "error", "ece"):
        assert abs(direct[k] - ldn["ldn_95"][k]) < 1e-4
    assert not any((tmp_path / "fashion_mnist" / "checkpoints").glob("*/*")), "checkpoints are removed when done"
    logs = []
    again = run_image_point(tiny_images, ImagePoint("ldn", 3, 0), tc, tmp_path, progress=False, log=logs.append)
    assert "skipped" in logs[0] and again == ldn
    table = depth_table(load_records(tmp_path, "fashion_mnist"))
    np.testing.assert_array_equal(table["max_depth"], [3])
    assert table["ddn_log_lik"][0] == ddn["test"]["log_lik"] and table["d_opt"][0] == ldn["d_opt"]



def _fake_tfds(monkeypatch, fail: Exception | None = None):
    """A stand-in `tensorflow_datasets` module (no TensorFlow, no network here)."""
    import types

    calls = []

    def load(name, split, as_supervised, batch_size, data_dir):
        calls.append((name, split, data_dir))
        if fail is not None:
            raise fail
        n = 6 if split == "train" else 4
        shape = (32, 32, 3) if name == "svhn_cropped" else (28, 28, 1)
        return np.full((n, *shape), 255, np.uint8), np.arange(n) % 10

    mod = types.SimpleNamespace(load=load, as_numpy=lambda t: t)
    monkeypatch.setitem(__import__("sys").modules, "tensorflow_datasets", mod)
    return calls


def test_tfds_path(monkeypatch, tmp_path):
    calls = _fake_tfds(monkeypatch)
    data = load_images("svhn", tmp_path, source="tfds")
    assert calls == [("svhn_cropped", "train", tmp_path), ("svhn_cropped", "test", tmp_path)]
    assert data.x_train.shape == (6, 32, 32, 3)
    np.testing.assert_allclose(data.x_train[0, 0, 0], (1 - np.array([0.431, 0.430, 0.446])) / 0.197, rtol=2e-2)
    # 'auto' prefers local files when they are all there.
    _fake_mnist(tmp_path / "m")
    calls.clear()
    assert load_images("mnist", tmp_path / "m").n_train == 30 and calls == []


def test_tfds_failure_is_a_clear_error(monkeypatch, tmp_path):
    _fake_tfds(monkeypatch, fail=ConnectionError("no route to host"))
    with pytest.raises(DataNotFoundError) as info:
        load_images("mnist", tmp_path)
    assert "no route to host" in str(info.value) and "train-images-idx3-ubyte.gz" in str(info.value)
