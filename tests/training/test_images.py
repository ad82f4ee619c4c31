"""Image data readers, held-out training (early stopping, checkpoints, resume) and image runs."""

import dataclasses
import os
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

from vdjax.data.images import (
    IMAGE_DATASETS,
    DataNotFoundError,
    load_images,
    read_idx,
    read_svhn_mat,
)
from vdjax import FitResult, RunOptions, fit
from vdjax.nn.models import ModelConfig
from vdjax.training.checkpoints import CheckpointError
from vdjax.training.config import IMAGE_PROTOCOL

from helpers import FASHION_DIR, REQUIRE_REAL, fake_mnist, real_fashion_dir, write_idx  # noqa: E402,F401


# ---------------------------------------------------------------------------- readers


def test_idx_round_trip_and_normalisation(tmp_path):
    arrays = fake_mnist(tmp_path)
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
    write_idx(tmp_path / "trunc.gz", a, truncate=10)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "trunc.gz")
    write_idx(tmp_path / "magic.gz", a, magic_type=0x42)
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "magic.gz")
    (tmp_path / "notgz.gz").write_bytes(b"not a gzip stream at all")
    with pytest.raises(ValueError, match="IDX"):
        read_idx(tmp_path / "notgz.gz")


def test_mismatched_image_and_label_counts(tmp_path):
    fake_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(29))
    with pytest.raises(ValueError, match="30 images but 29 labels"):
        load_images("fashion_mnist", tmp_path, source="files")


def test_missing_files_name_what_and_where(tmp_path):
    fake_mnist(tmp_path)
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
    fake_mnist(tmp_path)
    a = load_images("mnist", tmp_path, source="files", n_train=10, n_test=5, seed=3)
    b = load_images("mnist", tmp_path, source="files", n_train=10, n_test=5, seed=3)
    c = load_images("mnist", tmp_path, source="files", n_train=10, n_test=5, seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.n_train == 10 and len(a.x_test) == 5
    assert not np.array_equal(a.x_train, c.x_train)


def test_real_fashion_mnist():
    data = load_images("fashion_mnist", real_fashion_dir(), source="files")
    assert data.x_train.shape == (60000, 28, 28, 1) and data.x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(data.y_train), np.full(10, 6000))
    # Normalised with Fashion-MNIST's own statistics: mean ~0 and std ~1 on the train set.
    assert abs(float(data.x_train.mean())) < 0.01 and abs(float(data.x_train.std()) - 1.0) < 0.01


# ---------------------------------------------------------------------------- held-out training


@pytest.fixture(scope="module")
def tiny_images():
    """A small real Fashion-MNIST subset (or, outside CI without the package, generated IDX files)."""
    if FASHION_DIR.exists() or REQUIRE_REAL:
        return load_images("fashion_mnist", real_fashion_dir(), source="files", n_train=128, n_test=64)
    import tempfile

    d = Path(tempfile.mkdtemp())
    fake_mnist(d, 128, 64)
    return load_images("fashion_mnist", d, source="files")


TINY = IMAGE_PROTOCOL.replace(batch_size=32, max_epochs=3, lr_drop_epoch=2)


def fit_one(data, cfg, tc, seed: int = 0, **options) -> FitResult:
    """One network of `tc.method` with seed `seed` (network 0 of the result)."""
    return fit(cfg, tc, data, [(tc.method, seed)], RunOptions(**options))


def record(r: FitResult, i: int = 0) -> tuple[int, int, str]:
    """(epochs, best epoch, why it stopped) of network `i`."""
    summary = r.summary(i)
    return summary["epochs"], summary["best_epoch"], summary["stopped"]


@pytest.mark.float_sensitive
def test_killed_run_resumes_to_the_same_result(tiny_images, tmp_path):
    cfg = ModelConfig("cnn", 2, 10, (28, 28, 1))
    whole = fit_one(tiny_images, cfg, TINY, seed=5)
    part = fit_one(tiny_images, cfg, TINY, seed=5, checkpoint_dir=tmp_path, stop_after_epochs=1)
    assert part.stopped(0) == "interrupted" and part.summary(0)["epochs"] == 1
    resumed = fit_one(tiny_images, cfg, TINY, seed=5, checkpoint_dir=tmp_path)
    assert resumed.resumed_from == 1 and resumed.summary(0)["epochs"] == whole.summary(0)["epochs"] == 3
    assert resumed.summary(0)["best_epoch"] == whole.summary(0)["best_epoch"]
    chex.assert_trees_all_equal(resumed.best_state(0).params, whole.best_state(0).params)
    chex.assert_trees_all_equal(resumed.best_state(0).batch_stats, whole.best_state(0).batch_stats)
    assert [h["val_loss"] for h in resumed.histories[0]] == [h["val_loss"] for h in whole.histories[0]]
    # The kept parameters are the best epoch's, not the last one's, whenever those differ.
    history = whole.histories[0]
    assert history[whole.summary(0)["best_epoch"]]["val_loss"] == min(h["val_loss"] for h in history)


def test_a_time_budget_stops_before_an_epoch_that_would_pass_it(tiny_images):
    cfg = ModelConfig("cnn", 2, 10, (28, 28, 1))
    run = fit(cfg, TINY, tiny_images, [("ldn", 5)], RunOptions(stop_after_seconds=0.0))
    # The first epoch always runs.
    assert run.stopped(0) == "interrupted" and run.summary(0)["epochs"] == len(run.histories[0]) == 1


def test_checkpoint_of_another_run_or_corrupt_is_refused(tiny_images, tmp_path):
    cfg = ModelConfig("cnn", 1, 10, (28, 28, 1))
    fit_one(tiny_images, cfg, TINY, seed=0, checkpoint_dir=tmp_path, stop_after_epochs=1)
    with pytest.raises(CheckpointError, match="different run"):
        fit_one(tiny_images, cfg, TINY, seed=1, checkpoint_dir=tmp_path)
    # The same data set name and sizes, other images (as a subset drawn with another seed).
    other = dataclasses.replace(tiny_images, x_train=tiny_images.x_train[::-1].copy())
    with pytest.raises(CheckpointError, match="different run"):
        fit_one(other, cfg, TINY, seed=0, checkpoint_dir=tmp_path)
    for f in tmp_path.rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        fit_one(tiny_images, cfg, TINY, seed=0, checkpoint_dir=tmp_path)
    assert any(tmp_path.rglob("*")), "the corrupt checkpoint must be left in place"


@pytest.mark.parametrize("stop_on", ["val", "test"])
def test_early_stopping_watches_the_chosen_split(tiny_images, stop_on):
    """The default watches a validation split held out of the training set; the paper's
    protocol watches the test ELBO. The history holds only the watched split's objective."""
    from vdjax.training.epoch import heldout_outputs
    from vdjax.training.objective import Objective
    from vdjax.training.runner import with_stopping_data

    cfg = ModelConfig("cnn", 1, 10, (28, 28, 1))
    tc = TINY.replace(max_epochs=50, patience=1, learning_rate=0.5, stop_on=stop_on)  # stops by patience
    run = fit_one(tiny_images, cfg, tc, seed=0)
    history = run.histories[0]
    epochs, best_epoch, stopped = record(run)
    losses = [h[f"{stop_on}_loss"] for h in history]
    other = {"val": "test", "test": "val"}[stop_on]
    assert not any(f"{other}_loss" in h for h in history)
    assert stopped == "patience"
    assert epochs < 50 and best_epoch == int(np.nanargmin(losses))
    assert epochs - 1 - best_epoch == 1
    # The kept state's objective on the watched split is the best one in the history.
    data = with_stopping_data(tiny_images, tc)
    x, y = (data.x_val, data.y_val) if stop_on == "val" else (data.x_test, data.y_test)
    objective, kept = Objective(cfg, tc, data.n_train), run.best_state(0)
    loss = objective.heldout(kept.params, heldout_outputs(objective, kept, jax.numpy.asarray(x)), y, tc.method)["loss"]
    assert float(loss) == pytest.approx(np.nanmin(losses), rel=1e-5)
    assert data.n_train + data.n_val == tiny_images.n_train and (data.n_val > 0) == (stop_on == "val")


def test_nonfinite_loss_stops_and_keeps_best(tiny_images):
    cfg = ModelConfig("cnn", 1, 10, (28, 28, 1))
    with pytest.warns(RuntimeWarning, match="non-finite"):
        run = fit_one(tiny_images, cfg, TINY.replace(max_epochs=20, learning_rate=1e30), seed=0)
    assert run.stopped(0) == "nonfinite"
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree_util.tree_leaves(run.best_state(0).params))


def test_model_and_data_mismatch(tiny_images):
    with pytest.raises(ValueError, match="model expects"):
        fit_one(tiny_images, ModelConfig("cnn", 1, 10, (32, 32, 3)), TINY)


# ---------------------------------------------------------------------------- image runs


def test_image_points_records_pruning_and_skip(tiny_images, tmp_path):
    from vdjax.studies.image_runs import (
        ImagePoint,
        depth_table,
        load_image_variables,
        load_records,
        run_image_point,
    )
    from vdjax.depth.metrics import predictive_metrics
    from vdjax.depth.prune import predict_log_probs, prune

    from vdjax.studies.image_runs import run_image_points

    tc = TINY.replace(max_epochs=2, lr_drop_epoch=1, lr_drop_methods=("ddn",))
    ldn, ddn = run_image_points(tiny_images, [ImagePoint("ldn", 3, 0), ImagePoint("ddn", 3, 0)], tc, tmp_path,
                                options=RunOptions(progress=False))
    assert ldn["networks_in_program"] == ddn["networks_in_program"] == 2
    # Each epoch's learning rate, per network of the one program: the DDN's drops, the LDN's does not.
    from vdjax.studies.image_study import compact, epochs_after_lr_change

    assert [h["lr"] for h in ldn["history"]] == [0.1, 0.1]
    assert [h["lr"] for h in ddn["history"]] == pytest.approx([0.1, 0.01])
    assert epochs_after_lr_change(compact(ddn)) == [1] and epochs_after_lr_change(ldn) == []
    assert ddn["method"] == "ddn" and set(ddn["test"]) >= {"log_lik", "error", "ece", "reliability"}
    assert ddn["early_stopping"]["on"] == "val" and ddn["n_val"] == ddn["early_stopping"]["validation"]["n_val"]
    assert ddn["n_train"] + ddn["n_val"] == tiny_images.n_train
    q = np.asarray(ldn["q"])
    assert q.shape == (4,) and abs(q.sum() - 1) < 1e-6 and 0 <= ldn["d_opt"] <= 3
    assert ldn["ddn"] == ddn["test"]
    env = ldn["environment"]
    assert env["seeds_in_batch"] == 2 and {"platform", "jax", "jaxlib", "flax"} <= set(env)  # LDN + DDN
    assert ldn["speed"]["pruned_depth"] == ldn["d_opt"] and ldn["speed"]["ddn_depth"] == 3
    assert ldn["speed"]["ddn_seconds"] > 0 and ldn["speed"]["pruned_seconds"] > 0
    assert ldn["speed_expected"]["pruned_depth"] == ldn["d_expected"] and ldn["speed_expected"]["ddn_depth"] == 3
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
    again = run_image_point(tiny_images, ImagePoint("ldn", 3, 0), tc, tmp_path,
                            options=RunOptions(progress=False, log=logs.append))
    assert "skipped" in logs[0] and again == ldn
    table = depth_table(load_records(tmp_path, "fashion_mnist"))
    np.testing.assert_array_equal(table["max_depth"], [3])
    assert table["ddn_log_lik"][0] == ddn["test"]["log_lik"] and table["d_opt"][0] == ldn["d_opt"]
    # Retiming from the saved parameters rewrites the LDN's speed-ups only, marked, and nothing else.
    from vdjax.studies.image_runs import record_path, retime_speedups

    ddn_file = record_path(tmp_path, "fashion_mnist", ImagePoint("ddn", 3, 0)).read_bytes()
    rewritten = retime_speedups(tmp_path, tiny_images, log=logs.append)
    assert rewritten == [record_path(tmp_path, "fashion_mnist", ImagePoint("ldn", 3, 0))]
    retimed = load_records(tmp_path, "fashion_mnist")[1]
    assert retimed["speed"]["retimed"] and retimed["speed_expected"]["retimed"]
    assert retimed["speed"]["pruned_depth"] == ldn["d_opt"] and retimed["speed"]["ddn_seconds"] > 0
    assert {k: v for k, v in retimed.items() if not k.startswith("speed")} == {
        k: v for k, v in ldn.items() if not k.startswith("speed")}
    assert record_path(tmp_path, "fashion_mnist", ImagePoint("ddn", 3, 0)).read_bytes() == ddn_file



def test_a_run_killed_while_writing_records_resumes_without_training(tiny_images, tmp_path, monkeypatch):
    """Killed after the program trained but before its last record was written: the next run
    resumes the whole program's checkpoint (every network finished there) and writes the missing
    record; nothing trains again. The same program as above, so nothing compiles again."""
    import vdjax.studies.image_runs as image_runs
    from vdjax.studies.image_runs import ImagePoint, run_image_points

    tc = TINY.replace(max_epochs=2)
    points = [ImagePoint("ldn", 3, 0), ImagePoint("ddn", 3, 0)]
    write = image_runs._write_record

    def killed_at_the_ldn(data, point, *args, **kwargs):
        if point.method == "ldn":
            raise KeyboardInterrupt
        return write(data, point, *args, **kwargs)

    monkeypatch.setattr(image_runs, "_write_record", killed_at_the_ldn)
    with pytest.raises(KeyboardInterrupt):
        run_image_points(tiny_images, points, tc, tmp_path, options=RunOptions(progress=False))
    monkeypatch.setattr(image_runs, "_write_record", write)
    logs: list[str] = []
    ldn, ddn = run_image_points(tiny_images, points, tc, tmp_path, options=RunOptions(progress=False, log=logs.append))
    assert any("resuming" in line and "after epoch 2" in line for line in logs), logs
    assert ldn["epochs"] == 2 and ddn["method"] == "ddn" and ldn["ddn"] == ddn["test"]
    assert not any((tmp_path / "fashion_mnist" / "checkpoints").glob("*/*"))


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
    fake_mnist(tmp_path / "m")
    calls.clear()
    assert load_images("mnist", tmp_path / "m").n_train == 30 and calls == []


def test_tfds_failure_is_a_clear_error(monkeypatch, tmp_path):
    _fake_tfds(monkeypatch, fail=ConnectionError("no route to host"))
    with pytest.raises(DataNotFoundError) as info:
        load_images("mnist", tmp_path)
    assert "no route to host" in str(info.value) and "train-images-idx3-ubyte.gz" in str(info.value)


# ---------------------------------------------------------------------------- many networks, one program


MEMBERS = [("ldn", 0), ("ddn", 0), ("ldn", 3)]
SLOW = TINY.replace(learning_rate=0.02)  # see the tolerances below


@pytest.fixture(scope="module")
def program_run(tiny_images):
    """Three networks (two LDNs, a DDN) of one max depth trained as one vmapped program."""
    cfg = ModelConfig("cnn", 2, 10, (28, 28, 1))
    return cfg, fit(cfg, SLOW, tiny_images, MEMBERS)


def test_networks_in_one_program_match_single_runs(tiny_images, program_run):
    """Same seeds, same data orders, same protocol: each network of the program ends where its
    own single-network run ends. Not bit for bit: the vmapped program's products carry a network
    axis, which XLA may block and sum in another order. One step differs by ~1e-8 (checked
    below at 1e-6); at lr 0.1, a dozen steps of SGD through BatchNorm on batches of ~30 grow
    that to ~2e-3 in some weights and losses (measured), so the runs use lr 0.02, which keeps
    the growth small, and are compared by what they report: stop epochs exactly, the per-epoch
    losses and q(d) at rtol 1e-3. (Each mode alone is deterministic: reruns are bit-identical.)"""
    from vdjax.training.feeds import _compiled_step
    from vdjax.training.objective import Objective, method_index
    from vdjax.training.runner import _compiled_init
    from vdjax.training.step import init_state, make_optimizer, make_train_step

    cfg, program = program_run
    for i, (method, seed) in enumerate(MEMBERS):
        single = fit_one(tiny_images, cfg, SLOW.replace(method=method), seed=seed)
        assert record(program, i) == record(single)
        assert program.summary(i)["networks_in_program"] == 3 and single.summary(0)["networks_in_program"] == 1
        for key in ("train_loss", "val_loss", "val_log_lik"):
            np.testing.assert_allclose([h[key] for h in program.histories[i]], [h[key] for h in single.histories[0]],
                                       rtol=1e-3)
        np.testing.assert_allclose(program.best_state(i).q, single.best_state(0).q, rtol=1e-3, atol=1e-6)
    # One step of the program against the single-network step, from the same initialisation.
    x, y = tiny_images.x_train[:32], tiny_images.y_train[:32]
    objective = Objective(cfg, TINY, 118)
    net = _compiled_init(objective, 3)(np.array([0, 0, 3], np.uint32))
    single = init_state(jax.random.key(0), cfg, make_optimizer(TINY, 3))
    chex.assert_trees_all_equal(jax.tree_util.tree_map(lambda a: a[0], net.train.params), single.params)
    multi, loss = _compiled_step(objective, 3, per_network_method=True)(
        net.train, net.done, method_index(["ldn", "ddn", "ldn"]), np.stack([x] * 3), np.stack([y] * 3))
    alone, metrics = make_train_step(cfg, TINY, make_optimizer(TINY, 3), 118)(single, x, y)
    assert float(loss[0]) == float(metrics["loss"])
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda a: a[0], multi.params), alone.params, atol=1e-6)
    # The DDN's depth logits got no gradient; the LDNs' did.
    assert np.all(np.asarray(program.best_state(1).params["depth_logits"]) == 0)
    assert not np.all(np.asarray(program.best_state(0).params["depth_logits"]) == 0)


@pytest.mark.float_sensitive
def test_killed_program_resumes_exactly(tiny_images, program_run, tmp_path):
    cfg, whole = program_run
    part = fit(cfg, SLOW, tiny_images, MEMBERS, RunOptions(checkpoint_dir=tmp_path, stop_after_epochs=1))
    assert all(part.stopped(i) == "interrupted" and part.summary(i)["epochs"] == 1 for i in range(len(MEMBERS)))
    resumed = fit(cfg, SLOW, tiny_images, MEMBERS, RunOptions(checkpoint_dir=tmp_path))
    assert resumed.resumed_from == 1 and resumed.members == whole.members
    for i in range(len(MEMBERS)):
        a, b = resumed.histories[i], whole.histories[i]
        assert record(resumed, i) == record(whole, i)
        assert a == [{**h, "seconds": g["seconds"]} for h, g in zip(b, a)]
        chex.assert_trees_all_equal(resumed.best_state(i).params, whole.best_state(i).params)
        chex.assert_trees_all_equal(resumed.best_state(i).batch_stats, whole.best_state(i).batch_stats)
    with pytest.raises(CheckpointError, match="different run"):  # other members: another run
        fit(cfg, SLOW, tiny_images, MEMBERS[:2], RunOptions(checkpoint_dir=tmp_path))


_MESH_SCRIPT = """
import json, sys
import numpy as np, jax
from vdjax.data.core import Dataset
from vdjax.nn.models import ModelConfig
from vdjax import IMAGE_PROTOCOL, RunOptions, fit
a = np.load(sys.argv[1])
data = Dataset("fashion_mnist", a["x"], a["y"], a["xt"], a["yt"], 10)
tc = IMAGE_PROTOCOL.replace(batch_size=32, max_epochs=2, lr_drop_epoch=None, learning_rate=0.02)
cfg = ModelConfig("cnn", 1, 10, (28, 28, 1))
members = [("ldn", 0), ("ddn", 1)]
out = {"devices": len(jax.devices())}
for name, mesh in (("one", {"nets": 1, "data": 1}), ("mesh", {"nets": 2, "data": 2})):
    run = fit(cfg, tc, data, members, RunOptions(mesh=mesh))
    kept = [run.best_state(i) for i in range(len(members))]
    out[name] = [{"val_loss": [h["val_loss"] for h in history], "q": np.asarray(s.q).tolist(),
                  "kernel": np.asarray(s.params["model"]["input"]["kernel"]).ravel()[:50].tolist()}
                 for history, s in zip(run.histories, kept)]
    if name == "mesh":
        out["sharding"] = str(kept[0].params["model"]["input"]["kernel"].sharding)
print("RESULT" + json.dumps(out))
"""


def test_mesh_of_forced_host_devices_equals_one_device(tiny_images, tmp_path):
    """Networks over 2 devices and each network's batch over 2 more (4 forced host devices) train
    as on one device: same losses and q(d) up to summation order (the batch-sharded BatchNorm
    moments and gradients are sums across devices). At lr 0.1 SGD on batches of 32 grows those
    rounding differences to ~5e-4 in an epoch; lr 0.02 keeps them near 1e-6, so the tolerances
    can be tight. BatchNorm moments taken per device instead of over the batch would differ by
    far more (a 16-example batch's statistics)."""
    import json
    import subprocess
    import sys

    np.savez(tmp_path / "d.npz", x=tiny_images.x_train, y=tiny_images.y_train, xt=tiny_images.x_test,
             yt=tiny_images.y_test)
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "4", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # this checkout's vdjax, not an installed one
    proc = subprocess.run([sys.executable, "-c", _MESH_SCRIPT, str(tmp_path / "d.npz")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT")[-1])
    assert out["devices"] == 4
    for one, mesh in zip(out["one"], out["mesh"]):
        np.testing.assert_allclose(mesh["val_loss"], one["val_loss"], rtol=1e-4)
        np.testing.assert_allclose(mesh["q"], one["q"], rtol=1e-4, atol=1e-7)
        # Weights drift a little more than what they predict (one entry of 50 by 1.2e-4, measured).
        np.testing.assert_allclose(mesh["kernel"], one["kernel"], rtol=1e-3, atol=5e-4)


@pytest.mark.one_stack
def test_grid_split_over_two_processes_trains_every_network_once(tmp_path):
    """Two processes share a grid (2 max depths x LDN and DDN) and one results directory: every
    network is trained by exactly one of them, and a second launch trains nothing."""
    import subprocess
    import sys

    if FASHION_DIR.exists() or REQUIRE_REAL:
        data_dir = real_fashion_dir()
    else:
        data_dir = tmp_path / "data"
        fake_mnist(data_dir, 128, 64)
    script = Path(__file__).resolve().parents[2] / "experiments" / "scan_max_depth_images.py"
    base = [sys.executable, str(script), "--depths", "1", "2", "--n-train", "96", "--n-test", "32", "--max-epochs",
            "1", "--batch-size", "32", "--data-dir", str(data_dir), "--out", str(tmp_path / "out"), "--no-progress",
            "--num-processes", "2"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(script.parents[1])}  # this checkout's vdjax
    procs = [subprocess.Popen(base + ["--process-index", str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    trained = [line.split(":")[0] for log in logs for line in log.splitlines() if " seed 0: " in line]
    assert sorted(trained) == sorted(f"fashion_mnist {m} D={d} seed 0" for d in (1, 2) for m in ("ddn", "ldn"))
    assert all(f"D={d}" in line for d, log in zip((1, 2), logs) for line in log.splitlines() if " seed 0: " in line)
    assert len(list((tmp_path / "out" / "fashion_mnist").glob("*_D*_s0.json"))) == 4
    again = subprocess.run(base + ["--process-index", "0"], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "done before, skipped" in again.stdout and " seed 0: test" not in again.stdout


def test_impossible_mesh_is_refused_before_compiling(tiny_images):
    from vdjax.runtime import parse_mesh

    cfg = ModelConfig("cnn", 1, 10, (28, 28, 1))
    four = [("ldn", 0), ("ddn", 0), ("ldn", 1), ("ddn", 1)]
    with pytest.raises(ValueError, match="needs 4 devices, 2 present"):  # the tests run on 2 CPU devices
        fit(cfg, TINY, tiny_images, four, RunOptions(mesh={"nets": 4, "data": 1}))
    with pytest.raises(ValueError, match="cannot be split evenly"):
        fit(cfg, TINY, tiny_images, [("ldn", 0), ("ddn", 0), ("ldn", 1)], RunOptions(mesh={"nets": 2, "data": 1}))
    with pytest.raises(ValueError, match="nets=N,data=M"):
        parse_mesh("nets=two")


@pytest.mark.one_stack
def test_the_study_preset_trains_and_summarises_with_its_schedules(tmp_path, monkeypatch):
    """`--study` at toy size: its grid (an LDN and a DDN per seed), each network's learning rate
    per epoch in its history and the summary (`lr_history`; the DDN's drop moved to epoch 1 here,
    the LDN's rate constant), the schedule stated in the summary, the validation split's standard
    error and each LDN's q(d) at every epoch; a run other than the preset's own does not touch
    the committed summary."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
    import _images

    from vdjax.io import read_json
    from vdjax.studies.image_study import epochs_after_lr_change, findings

    monkeypatch.setattr(_images, "STUDY_SEEDS", [0])
    written, real = [], _images.summary_copy
    monkeypatch.setattr(_images, "summary_copy", lambda *a: written.append(real(*a)))  # and never copy
    if FASHION_DIR.exists() or REQUIRE_REAL:
        data_dir = real_fashion_dir()
    else:
        data_dir = tmp_path / "data"
        fake_mnist(data_dir, 128, 64)
    out = tmp_path / "out"
    trained = ["--study", "--depths", "1", "--seeds", "0", "--n-train", "96", "--n-test", "32", "--max-epochs", "3",
               "--lr-drop-epoch", "1", "--batch-size", "32", "--width", "4", "--bottleneck", "2", "--out", str(out)]
    _images.run("", [1], lambda d: ["ddn", "ldn"], argv=[*trained, "--data-dir", str(data_dir), "--no-progress"])
    assert written == [None]  # not the preset's own settings: docs/data is left alone
    summary = read_json(out / "summary.json")
    assert summary["complete"] and summary["ablation"] == {}
    assert summary["command"] == "python3 experiments/scan_max_depth_images.py " + " ".join(trained)
    assert summary["lr_schedule"]["ldn"] == "0.1 at every epoch (never dropped)"
    assert summary["lr_schedule"]["ddn"] == "0.1 for epochs 0-0, 0.01 (x0.1) from epoch 1 on"
    main = {r["method"]: r for r in summary["records"]}
    assert main["ldn"]["model_config"]["width"] == 4 and main["ldn"]["model_config"]["head_norm"] == "per_depth"
    assert main["ldn"]["train_config"]["patience_rule"] == "exceeded"
    assert main["ldn"]["lr_history"] == [0.1] * main["ldn"]["epochs"] and epochs_after_lr_change(main["ldn"]) == []
    assert main["ddn"]["lr_history"] == pytest.approx([0.1] + [0.01] * (main["ddn"]["epochs"] - 1))
    assert epochs_after_lr_change(main["ddn"]) == [1]
    assert len(main["ldn"]["q_history"]) == main["ldn"]["epochs"] and "q_history" not in main["ddn"]
    assert main["ldn"]["validation"]["n"] == main["ldn"]["n_val"] and main["ldn"]["validation"]["log_lik_se"] > 0
    assert findings(summary)["ldns"][0]["steps"] == 3 * (main["ldn"]["best_epoch"] + 1)  # 72 images: 3 steps an epoch
    assert (out / "fig9_depth_scan.png").exists()
    # --retime trains nothing, times the LDN again and summarises the retimed record.
    (out / "summary.json").unlink()
    _images.run("", [1], lambda d: ["ddn", "ldn"], argv=[*trained, "--retime", "--data-dir", str(data_dir),
                                                         "--no-progress"])
    resummarised = read_json(out / "summary.json")
    assert (resummarised["command"], resummarised["lr_schedule"]) == (summary["command"], summary["lr_schedule"])
    retimed = {r["method"]: r for r in resummarised["records"]}
    assert retimed["ldn"]["speed"]["retimed"] and retimed["ldn"]["epochs"] == main["ldn"]["epochs"]


def test_the_study_command_keeps_the_settings_and_drops_what_only_places_the_run():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
    import _images

    head = "python3 experiments/scan_max_depth_images.py "
    assert _images.study_command(["--study", "--max-epochs", "150", "--retime", "--data-dir", "/d", "--mesh=nets=2",
                                  "--no-progress", "--out", "a b", "--process-index", "1", "--debug"]) == (
        head + "--study --max-epochs 150 --out 'a b'")
    from vdjax.cli.validate import UserError

    with pytest.raises(UserError, match="unrecognized arguments: --summarize"):  # study_command needs full names
        _images.parser("", [1]).parse_args(["--study", "--summarize"])


def test_only_the_study_as_its_preset_defines_it_writes_the_committed_summary():
    """`summary_copy`: the preset's own settings into its own --out (any of its seeds) are the
    committed study; any other depth, cap, schedule or directory is not."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
    import _images

    study = _images.PRESETS["study"]

    def copy(*argv: str, out: str = study.out):
        return _images.summary_copy(_images.parser("", [1]).parse_args(list(argv)), [1], Path(out))

    assert copy("--study") == Path(__file__).resolve().parents[2] / "docs/data/images_study/summary.json"
    assert copy("--study", "--seeds", "2", "3") == copy("--study")
    for other in (("--study", "--depths", "10"), ("--study", "--max-epochs", "30"), ("--study", "--lr-drop-epoch", "15"),
                  ("--study", "--patience", "10"), ("--study", "--width", "32"), ()):
        assert copy(*other) is None, other
    assert copy("--study", out="elsewhere") is None
