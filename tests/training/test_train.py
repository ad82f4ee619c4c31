import time

import chex
import numpy as np
import pytest

from vdjax import RunOptions, fit
from vdjax.data import SpiralsConfig, spirals_dataset
from vdjax.nn.models import ModelConfig
from vdjax.runtime import seed_devices
from vdjax.studies.experiment import run_in_memory
from vdjax.training.checkpoints import CheckpointError
from vdjax.training.config import TrainConfig
from vdjax.training.epoch import Batching

SPIRALS = spirals_dataset()
XY = (SPIRALS.x_train, SPIRALS.y_train)
MLP = ModelConfig("mlp", 6, 2, (2,))


def one_call(tc: TrainConfig) -> RunOptions:
    """Every epoch in one compiled call."""
    return RunOptions(chunk_epochs=tc.max_epochs)


def test_batching_uses_equal_batches():
    assert Batching.for_size(200, 512) == Batching(1, 200)
    assert Batching.for_size(2000, 512) == Batching(4, 500)
    assert Batching.for_size(1025, 512) == Batching(3, 341)


SHORT = TrainConfig(max_epochs=60, patience=60)


def test_same_seed_same_result_and_seeds_differ():
    tc = SHORT
    a = fit(MLP, tc, XY, [0, 1], one_call(tc))
    b = fit(MLP, tc, XY, [0, 1], RunOptions(chunk_epochs=25))  # no seed stops: chunks change nothing
    np.testing.assert_array_equal(a.state.history, b.state.history)
    np.testing.assert_array_equal(a.best_state(0).q, b.best_state(0).q)
    assert not np.allclose(a.best_state(0).q, a.best_state(1).q)
    assert (a.layout["seeds_in_batch"], a.layout["chunk_epochs"], b.layout["chunk_epochs"]) == (2, 60, 25)


@pytest.mark.float_sensitive  # that bigger vmapped batches round differently is this CPU's kernels' doing
def test_a_seed_alone_matches_itself_among_others_only_in_a_batch_of_one():
    """Same settings, same machine: bit for bit. Among other seeds, bit for bit only if its
    device's vmapped batch is one seed too (2 seeds on 2 devices); in bigger batches other
    kernels round differently, and SGD amplifies it."""
    alone = fit(MLP, SHORT, XY, [1], one_call(SHORT))
    again = fit(MLP, SHORT, XY, [1], one_call(SHORT))
    np.testing.assert_array_equal(alone.state.history, again.state.history)
    for seeds in ([0, 1], [0, 1, 2, 3]):
        among = fit(MLP, SHORT, XY, seeds, one_call(SHORT))
        ours, theirs = np.asarray(alone.state.history[0]), np.asarray(among.state.history[1])
        if len(seeds) == seed_devices(len(seeds)):  # one seed per device
            np.testing.assert_array_equal(ours, theirs)
        else:
            assert not np.array_equal(ours, theirs)
            np.testing.assert_allclose(ours[:3], theirs[:3], rtol=1e-5)


def test_early_stopping_keeps_the_best_parameters():
    tc = TrainConfig(max_epochs=400, patience=20, learning_rate=0.5)
    r = fit(MLP, tc, XY, [0], one_call(tc))
    hist = r.state.history[0]
    epochs, best = int(r.state.epoch[0]), int(r.state.best_epoch[0])
    ran = hist[:epochs]
    assert best == int(np.nanargmin(ran))
    assert float(r.state.best_loss[0]) == pytest.approx(float(ran.min()))
    assert epochs == 400 or epochs == best + tc.patience + 1
    assert np.all(np.isnan(hist[epochs:]))


def test_minibatch_epochs_and_per_seed_data():
    data = [spirals_dataset(SpiralsConfig(n_train=700, seed=s)) for s in (0, 1)]
    x = np.stack([d.x_train for d in data])
    y = np.stack([d.y_train for d in data])
    tc = TrainConfig(max_epochs=20, patience=20, batch_size=256)
    r = fit(MLP, tc, (x, y), [0, 0], one_call(tc))
    assert r.state.history.shape == (2, 20) and np.all(np.isfinite(r.state.history))
    # Same network seed, different data: different runs.
    assert not np.allclose(r.state.history[0], r.state.history[1])


def test_divergence_stops_the_seed_and_keeps_its_best_parameters():
    tc = TrainConfig(max_epochs=200, patience=200, learning_rate=1e6)
    with pytest.warns(RuntimeWarning, match=r"non-finite loss at epoch \d+ \(ldn-s0\)"):  # the runner says so
        r = fit(MLP, tc, XY, [0], one_call(tc))
    assert bool(r.state.nonfinite[0]) and int(r.state.epoch[0]) < 200
    state = r.best_state(0)
    assert all(np.all(np.isfinite(a)) for a in __import__("jax").tree_util.tree_leaves(state.params))


def test_fit_rejects_bad_inputs():
    tc = TrainConfig(max_epochs=5)
    with pytest.raises(ValueError, match="NaN"):
        fit(MLP, tc, (np.full((10, 2), np.nan), np.zeros(10, int)), [0])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        fit(MLP, tc, (np.zeros((10, 2)), np.full(10, 5)), [0])
    with pytest.raises(ValueError, match="shape"):
        fit(MLP, tc, (np.zeros((10, 3)), np.zeros(10, int)), [0])
    with pytest.raises(ValueError, match="seeds"):
        fit(MLP, tc, (np.zeros((10, 2)), np.zeros(10, int)), [])
    with pytest.raises(ValueError):
        TrainConfig(momentum=1.5)
    with pytest.raises(ValueError):
        TrainConfig(method="darts")


@pytest.mark.float_sensitive  # bands on two seeds' d_opt and accuracy
def test_spirals_ldn_learns_and_finds_a_moderate_depth():
    """The paper's setting (D=20, w=20, 200 points) on a shortened schedule."""
    cfg = ModelConfig("mlp", 20, 2, (2,))
    tc = TrainConfig(max_epochs=2000, patience=500)
    run = run_in_memory(SPIRALS, cfg, tc, seeds=[0, 1], options=one_call(tc))
    for s in run.seeds:
        assert 1 - s.test["error"] > 0.9  # chance is 0.5
        assert 1 - s.test_pruned["error"] > 0.9
        # Pruning to d_opt costs (almost) nothing, as in the paper.
        assert s.test_pruned["log_lik"] > s.test["log_lik"] - 0.05
        # Not trivially shallow (the spiral needs depth) and well short of max_depth (Fig 2).
        assert 3 <= s.d_opt <= 15
        assert s.q.sum() == pytest.approx(1.0)


# Six seeds at lr 1.0 and patience 10: half of them stop within a few chunks of 10 epochs while the
# others run on, so the batch compacts part way. At which chunk moves with the CPU's floats (20
# with jax 0.10 and 0.12 on one AVX-512 machine), so the tests read it from the run.
COMPACTING = TrainConfig(max_epochs=300, patience=10, learning_rate=1.0)
CHUNK = 10


@pytest.fixture(scope="module")
def chunked():
    return fit(MLP, COMPACTING, XY, list(range(6)), RunOptions(chunk_epochs=CHUNK))


def first_compaction(epochs) -> int:
    """The chunk end at which the batch first compacts: the first by which half the seeds have
    stopped (`runner._should_compact`); the others must run on after it, or nothing compacts."""
    epochs = np.sort(np.asarray(epochs))
    at = CHUNK * -(-int(epochs[(epochs.size + 1) // 2 - 1]) // CHUNK)
    assert at < epochs[-1], f"every seed stopped by epoch {at}: these settings no longer compact the batch"
    return at


@pytest.mark.float_sensitive
def test_compacting_stopped_seeds_keeps_every_seed_in_place(chunked):
    """Stopped seeds leave the vmapped batch between chunks (a smaller batch runs other float
    kernels, so chaotic runs may drift after that point, as in any rebatching)."""
    tc = COMPACTING
    whole = fit(MLP, tc, XY, list(range(6)), one_call(tc))
    epochs = np.asarray(whole.state.epoch)
    at = first_compaction(epochs)
    early = epochs <= at
    # Until the first compaction everything is the same program: identical, seed by seed.
    np.testing.assert_array_equal(np.asarray(chunked.state.history)[:, :at], np.asarray(whole.state.history)[:, :at])
    # Seeds compacted out there keep exactly their results, in their original places.
    np.testing.assert_array_equal(np.asarray(chunked.state.epoch)[early], epochs[early])
    for s in np.flatnonzero(early):
        np.testing.assert_array_equal(chunked.best_state(s).q, whole.best_state(s).q)
    # Every seed's record is consistent: stopped by patience or max_epochs, best = min of its history.
    for s in range(6):
        n, best = int(chunked.state.epoch[s]), int(chunked.state.best_epoch[s])
        hist = np.asarray(chunked.state.history[s])
        assert n == 300 or n == best + tc.patience + 1
        assert best == int(np.nanargmin(hist[:n])) and np.all(np.isnan(hist[n:]))


class _Killed(Exception):
    pass


def _kill_after(epochs: int):
    def progress(done, total):
        if done >= epochs:
            raise _Killed
    return progress


@pytest.mark.float_sensitive
def test_fit_resumes_from_its_checkpoint_exactly(chunked, tmp_path):
    """Killed between chunks (after a compaction) and resumed: the same result, bit for bit."""
    tc, seeds, whole = COMPACTING, list(range(6)), chunked
    kill = first_compaction(whole.state.epoch) + CHUNK  # the chunk after the compaction
    assert kill + CHUNK <= int(np.max(whole.state.epoch)), "the run ends before the kill: other settings needed"
    t0 = time.perf_counter()
    with pytest.raises(_Killed):
        fit(MLP, tc, XY, seeds, RunOptions(chunk_epochs=CHUNK, progress=_kill_after(kill), checkpoint_dir=tmp_path,
                                           checkpoint_every_s=0))
    t1, seen = time.perf_counter(), []
    resumed = fit(MLP, tc, XY, seeds, RunOptions(chunk_epochs=CHUNK, progress=lambda done, total: seen.append(done),
                                                 checkpoint_dir=tmp_path, log=lambda s: None))
    t2 = time.perf_counter()
    assert seen[0] == kill + CHUNK  # it went on from the checkpoint at the kill, not from the start
    # Its training time counts the killed call up to its last checkpoint as well as this one.
    assert t2 - t1 < resumed.seconds < t2 - t0
    for field in ("history", "epoch", "best_epoch", "best_loss", "done"):
        np.testing.assert_array_equal(getattr(resumed.state, field), getattr(whole.state, field), err_msg=field)
    for s in seeds:
        chex.assert_trees_all_equal(resumed.best_state(s).variables, whole.best_state(s).variables)


def test_fit_refuses_a_checkpoint_of_another_run(tmp_path, monkeypatch):
    """Besides configs, seeds and data: chunking decides when stopped seeds leave the vmapped
    batch, the device count how many seeds share one; both change the floats (see the test
    above), so a checkpoint resumes only under the same ones. A refused one is left as it was."""
    import jax

    tc = TrainConfig(max_epochs=40, patience=40)
    with pytest.raises(_Killed):
        fit(MLP, tc, XY, [0, 1], RunOptions(chunk_epochs=10, progress=_kill_after(20), checkpoint_dir=tmp_path,
                                            checkpoint_every_s=0))
    saved = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    for other, differ in (({"seeds": [0, 2]}, "seeds"), ({"y": 1 - SPIRALS.y_train}, "data"),
                          ({"tc": tc.replace(learning_rate=0.5)}, "train_config"), ({"chunk": 20}, "chunk_epochs"),
                          ({"devices": jax.local_device_count() + 1}, "devices")):
        if "devices" in other:
            monkeypatch.setattr(jax, "local_device_count", lambda: other["devices"])
        with pytest.raises(CheckpointError, match=rf"different run \({differ} differ\).*rerun with its settings"):
            fit(MLP, other.get("tc", tc), (SPIRALS.x_train, other.get("y", SPIRALS.y_train)),
                other.get("seeds", [0, 1]), RunOptions(chunk_epochs=other.get("chunk", 10), checkpoint_dir=tmp_path))
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == saved


@pytest.mark.float_sensitive
def test_run_grid_resumes_a_killed_point_and_then_deletes_its_checkpoint(tmp_path, monkeypatch):
    import contextlib

    from vdjax.studies import sweeps

    tc = TrainConfig(max_epochs=40, patience=40)
    point = sweeps.spirals_point("w=0004", {"width": 4}, width=4, max_depth=3, train=tc)
    whole = sweeps.run_grid([point], tmp_path / "whole", [0, 1], chunk_epochs=10)

    @contextlib.contextmanager
    def killed_at_20(total, desc, leave=True):
        yield _kill_after(20)

    monkeypatch.setattr(sweeps, "epoch_progress", killed_at_20)
    out = tmp_path / "killed"
    with pytest.raises(_Killed):
        sweeps.run_grid([point], out, [0, 1], chunk_epochs=10, checkpoint_every_s=0)
    assert (out / "w=0004.checkpoint").is_dir() and not (out / "w=0004.json").exists()
    monkeypatch.undo()
    resumed = sweeps.run_grid([point], out, [0, 1], chunk_epochs=10)
    assert not (out / "w=0004.checkpoint").exists()
    for a, b in zip(resumed[0]["seeds"], whole[0]["seeds"]):
        assert a["q"] == b["q"] and a["test"] == b["test"] and a["epochs"] == b["epochs"] == 40
