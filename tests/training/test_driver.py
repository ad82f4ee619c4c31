"""The one runner under both image feeds: batches from the host or epochs on the device."""

import chex
import jax
import numpy as np
import pytest

from vdjax import RunOptions, fit
from vdjax.data.core import Dataset
from vdjax.nn.models import ModelConfig
from vdjax.training.config import IMAGE_PROTOCOL

MLP = ModelConfig("mlp", 3, 2, (2,), width=8)
TC = IMAGE_PROTOCOL.replace(batch_size=16, max_epochs=5, patience=5, lr_drop_epoch=None, learning_rate=0.05)
MEMBERS = [("ldn", 0), ("ddn", 1)]


@pytest.fixture(scope="module")
def xor():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(160, 2)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int32)
    return Dataset("xor", x[:120], y[:120], x[120:], y[120:], 2)


def _same(a, b):
    """Every network of two `FitResult`s: the same record and kept parameters, bit for bit."""
    assert a.members == b.members
    for i in range(a.n_networks):
        assert [a.summary(i)[k] for k in ("epochs", "best_epoch", "stopped")] == \
            [b.summary(i)[k] for k in ("epochs", "best_epoch", "stopped")]
        assert [{k: v for k, v in h.items() if k != "seconds"} for h in a.histories[i]] == \
            [{k: v for k, v in h.items() if k != "seconds"} for h in b.histories[i]]
        chex.assert_trees_all_equal(a.best_state(i).params, b.best_state(i).params)


def test_a_batch_iterator_feeds_the_host_path(xor):
    """`batches` replaces the host's own data order: given that very order (numpy, drawn from
    (seed, epoch)) it trains bit for bit as the default host feed; given another, other numbers."""
    from vdjax.data.core import split_validation
    from vdjax.training.epoch import Batching

    data = split_validation(xor, 0.1, seed=0)
    batching = Batching.for_size(data.n_train, TC.batch_size)
    seeds = [s for _, s in MEMBERS]

    def batches(epoch, active, flip=False):
        orders = [batching.split(np.random.default_rng([seeds[i], epoch]).permutation(data.n_train)) for i in active]
        for b in range(batching.n_batches):
            idx = np.stack([o[-1 - b if flip else b] for o in orders])
            yield data.x_train[idx], data.y_train[idx]

    default = fit(MLP, TC, data, MEMBERS, RunOptions(feed="host"))
    mine = fit(MLP, TC, data, MEMBERS, RunOptions(batches=batches))
    _same(default, mine)
    other = fit(MLP, TC, data, MEMBERS, RunOptions(batches=lambda e, a: batches(e, a, flip=True)))
    assert other.histories[0][0]["train_loss"] != default.histories[0][0]["train_loss"]


@pytest.mark.parametrize("feed", ["host", "device"])
@pytest.mark.float_sensitive
def test_both_feeds_resume_exactly(xor, feed, tmp_path):
    whole = fit(MLP, TC, xor, MEMBERS, RunOptions(feed=feed))
    part = fit(MLP, TC, xor, MEMBERS, RunOptions(feed=feed, checkpoint_dir=tmp_path, stop_after_epochs=2))
    assert [part.summary(i)["epochs"] for i in range(2)] == [2, 2]
    assert all(part.stopped(i) == "interrupted" for i in range(2))
    resumed = fit(MLP, TC, xor, MEMBERS, RunOptions(feed=feed, checkpoint_dir=tmp_path))
    assert resumed.resumed_from == 2
    _same(resumed, whole)


def _calls_of(monkeypatch, name: str, xor, epochs: int, **kwargs) -> int:
    """How many times `jax.<name>` is called while `fit` trains `epochs` epochs."""
    counts, original = [0], getattr(jax, name)

    def counting(*a, **k):
        counts[0] += 1
        return original(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(jax, name, counting)
        fit(MLP, TC.replace(max_epochs=epochs, patience=epochs), xor, MEMBERS, RunOptions(**kwargs))
    return counts[0]


def test_device_epochs_touch_the_host_only_at_chunk_boundaries(xor, monkeypatch):
    """On the device an epoch's batches come from data placed once: training 5 epochs in chunks
    of 5 transfers and dispatches no more than one epoch does, the host feed one batch per step."""
    def puts(epochs: int, **kwargs) -> int:
        return _calls_of(monkeypatch, "device_put", xor, epochs, **kwargs)

    assert puts(epochs=5, chunk_epochs=5) == puts(epochs=1, chunk_epochs=5)
    steps = -(-int(0.9 * xor.n_train) // TC.batch_size)
    assert puts(epochs=5, feed="host") - puts(epochs=1, feed="host") >= 4 * steps * 2  # inputs and labels


def test_a_device_chunk_reads_the_host_twice(xor, monkeypatch):
    """A device-fed chunk of epochs reads back its metrics and its stop flags, one read each:
    training 5 one-epoch chunks costs 4 x 2 reads more than training one."""
    def gets(epochs: int) -> int:
        return _calls_of(monkeypatch, "device_get", xor, epochs, chunk_epochs=1)

    assert gets(5) - gets(1) == 4 * 2


def test_device_and_host_feeds_learn_alike(xor):
    """The two feeds draw other data orders, so their numbers differ; both learn the task (the
    kept epoch's held-out objective well below the first, no validation errors) and the kept
    objectives of the two feeds are close."""
    tc = TC.replace(max_epochs=40, patience=40)
    runs = {feed: fit(MLP, tc, xor, MEMBERS, RunOptions(feed=feed)) for feed in ("host", "device")}
    kept = {feed: [r.histories[i][int(r.host.best_epoch[i])] for i in range(r.n_networks)]
            for feed, r in runs.items()}
    for feed, rows in kept.items():
        for history, row in zip(runs[feed].histories, rows):
            assert row["val_loss"] < 0.5 * history[0]["val_loss"] and row["val_error"] < 0.1, feed
    for host, device in zip(kept["host"], kept["device"]):
        assert abs(host["val_loss"] - device["val_loss"]) < 0.1


@pytest.mark.parametrize("feed", ["host", "device"])
def test_the_history_records_q_every_epoch(xor, feed):
    """Every epoch's row holds the network's weights over depths: the LDN's q(d), a distribution
    that moves and ends as the kept state's when the last epoch is kept; the DDN's one-hot."""
    run = fit(MLP, TC, xor, MEMBERS, RunOptions(feed=feed))
    ldn, ddn = (run.histories[run.index(m, s)] for m, s in MEMBERS)
    qs = np.array([h["q"] for h in ldn])
    assert qs.shape == (TC.max_epochs, MLP.max_depth + 1)
    np.testing.assert_allclose(qs.sum(axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(qs[0], qs[-1])
    i = run.index("ldn", 0)
    np.testing.assert_allclose(qs[int(run.host.best_epoch[i])], np.asarray(run.best_state(i).q), rtol=1e-6)
    assert all(h["q"] == [0.0] * MLP.max_depth + [1.0] for h in ddn)
