"""LDNs from user-supplied Flax modules: the README's example, and blocks with BatchNorm, dropout
and no normalisation through both training regimes, pruning and prediction."""

import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vdjax
from vdjax.baselines.dun import ddn_predictive, ensemble_predictive, mc_dropout_predictive
from vdjax.baselines.search import SearchConfig, search
from vdjax.data import SpiralsConfig, spirals_dataset

README = Path(__file__).resolve().parents[2] / "README.md"
WIDTH = 8


def readme_example(name: str) -> str:
    """The Python block of README.md between `<!-- BEGIN example:NAME -->` and its END marker."""
    text = README.read_text()
    part = re.search(rf"<!-- BEGIN example:{name} -->\s*```python\n(.*?)```\s*<!-- END example:{name} -->", text, re.S)
    assert part, f"README.md has no example:{name} block"
    return part.group(1)


@pytest.mark.parametrize("example", ["own-block-nnx", "own-block"])
def test_readme_own_block_example_learns_prunes_and_predicts(example):
    scope: dict = {}
    exec(compile(readme_example(example), f"README.md:{example}", "exec"), scope)
    state, pruned, d_opt, data = scope["state"], scope["pruned"], scope["d_opt"], scope["data"]
    assert scope["accuracy"] > 0.8  # chance is 0.5
    np.testing.assert_allclose(float(jnp.sum(state.q)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(pruned.q.sum(), 1.0, rtol=1e-6)
    assert pruned.d_opt == d_opt == pruned.config.max_depth
    blocks = pruned.variables["params"].get("blocks", {})
    assert (d_opt == 0) == (not blocks)
    assert all(leaf.shape[0] == d_opt for leaf in jax.tree_util.tree_leaves(blocks))
    assert scope["log_p"].shape == (len(data.x_test), 2)


class BatchNormBlock(nn.Module):
    width: int

    @nn.compact
    def __call__(self, a, train: bool = False):
        return nn.BatchNorm(use_running_average=not train, momentum=0.9)(nn.relu(nn.Dense(self.width)(a)))


class DropoutBlock(nn.Module):
    width: int
    rate: float = 0.2

    @nn.compact
    def __call__(self, a, deterministic: bool = True):
        return nn.Dropout(self.rate, deterministic=deterministic)(nn.relu(nn.Dense(self.width)(a)))


class PlainBlock(nn.Module):
    width: int

    @nn.compact
    def __call__(self, a):
        return nn.Dense(self.width)(jnp.tanh(a))


class BatchNormHead(nn.Module):
    classes: int

    @nn.compact
    def __call__(self, h, train: bool = False):
        return nn.Dense(self.classes)(nn.BatchNorm(use_running_average=not train, momentum=0.9)(h))


def network(block: nn.Module, max_depth: int = 3, **kw) -> vdjax.Network:
    return vdjax.Network(stem=nn.Dense(WIDTH), block=block, head=kw.pop("head", nn.Dense(2)), max_depth=max_depth,
                         num_classes=2, input_shape=(2,), uses_dropout=isinstance(block, DropoutBlock), **kw)


@pytest.fixture(scope="module")
def spirals():
    return spirals_dataset(SpiralsConfig(n_points=300, n_train=100))


@pytest.mark.parametrize("block", [BatchNormBlock(WIDTH), DropoutBlock(WIDTH), PlainBlock(WIDTH)],
                         ids=["batchnorm", "dropout", "plain"])
def test_block_trains_prunes_and_predicts(block, spirals):
    net = network(block)
    before = vdjax.init_state(jax.random.key(0), net, vdjax.make_optimizer(vdjax.TrainConfig(), 1))
    state = vdjax.fit(net, vdjax.TrainConfig(max_epochs=5), (spirals.x_train, spirals.y_train), [0]).best_state(0)
    assert int(state.step) == 5
    moved = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), before.params["model"], state.params["model"])
    assert any(jax.tree_util.tree_leaves(moved))
    stats = state.batch_stats.get("blocks", {})
    assert bool(stats) == isinstance(block, BatchNormBlock)
    assert all(leaf.shape[0] == 3 for leaf in jax.tree_util.tree_leaves(stats))

    pruned = vdjax.prune(net, state.variables, state.q, 2)
    for collection in pruned.variables.values():
        assert all(leaf.shape[0] == 2 for leaf in jax.tree_util.tree_leaves(collection.get("blocks", {})))
    assert pruned.variables["params"]["input"]["kernel"].shape == (2, WIDTH)  # stem and head are kept
    log_p = vdjax.predict_log_probs(pruned.config, pruned.variables, pruned.q, spirals.x_test)
    assert log_p.shape == (len(spirals.x_test), 2) and np.all(np.isfinite(log_p))
    metrics = vdjax.evaluate(net, state, spirals.x_test, spirals.y_test)
    assert metrics["per_depth_log_lik"].shape == (4,)


def test_image_trainer_and_baselines_take_a_network(spirals):
    net = network(BatchNormBlock(WIDTH), head=BatchNormHead(2))
    train = vdjax.TrainConfig(max_epochs=2, batch_size=32, stop_on="val")
    run = vdjax.fit(net, train, spirals, [("ldn", 0), ("ddn", 1), ("ddn", 2)])
    ldn, ddn_a, ddn_b = (run.best_state(i) for i in range(3))
    assert run.summary(0)["epochs"] == 2 and ldn.batch_stats["head"]["BatchNorm_0"]["mean"].shape == (4, WIDTH)
    x = spirals.x_test[:50]
    assert ddn_predictive(net, ddn_a, x).outputs.shape == (1, 50, 2)
    ensemble = ensemble_predictive(net, [ddn_a, ddn_b], x)
    assert ensemble.outputs.shape == (2, 50, 2)

    dropout_net = network(DropoutBlock(WIDTH))
    with pytest.raises(ValueError, match="dropout_model"):
        vdjax.baselines.dun.fit_methods(spirals, net, train, baselines=vdjax.baselines.dun.Baselines(ensemble_size=1),
                                        options=vdjax.RunOptions(progress=False))
    dropped = vdjax.fit(dropout_net, train, spirals, [("ddn", 0)]).best_state(0)
    samples = mc_dropout_predictive(dropout_net, dropped, x, jax.random.key(0), n_samples=3)
    assert samples.outputs.shape == (3, 50, 2)
    assert not np.allclose(samples.outputs[0], samples.outputs[1])  # dropout is on at prediction
    with pytest.raises(ValueError, match="dropout"):
        mc_dropout_predictive(net, ddn_a, x, jax.random.key(0))


def test_nas_search_takes_a_network(spirals):
    result = search(network(BatchNormBlock(WIDTH)), SearchConfig("darts1", steps=3, batch_size=32),
                    (spirals.x_train[:50], spirals.y_train[:50]), (spirals.x_train[50:], spirals.y_train[50:]))
    assert 0 <= result.chosen_depth <= 3 and result.distribution.shape == (4,)


def test_a_block_that_changes_the_shape_is_refused_at_init():
    net = network(PlainBlock(WIDTH + 1))
    with pytest.raises(ValueError, match=r"PlainBlock maps activations of shape \(1, 8\) to \(1, 9\)"):
        vdjax.init_state(jax.random.key(0), net, vdjax.make_optimizer(vdjax.TrainConfig(), 1))


def test_a_network_is_static_and_records_itself():
    a, b = network(PlainBlock(WIDTH)), network(PlainBlock(WIDTH))
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b)  # jit/cache key and run id
    assert a != network(PlainBlock(WIDTH + 1))
    record = a.describe()
    assert record["max_depth"] == 3 and "PlainBlock" in record["block"]
    with pytest.raises(TypeError, match="block must be a Flax module"):
        network(lambda a: a)


@pytest.mark.one_stack
def test_readme_multi_stage_example_learns_prunes_and_exits_early():
    scope: dict = {}
    exec(compile(readme_example("stages"), "README.md:stages", "exec"), scope)
    state, pruned, exits, net = scope["state"], scope["pruned"], scope["exits"], scope["net"]
    assert scope["accuracy"] > 0.8  # chance is 0.25
    assert net.max_depth == 5 and len(state.q) == 6
    assert pruned.config.max_depth == scope["d_opt"]
    assert len(pruned.config.stages) == (1 if scope["d_opt"] <= 2 else 2)
    assert np.all(exits.depth <= scope["d_opt"]) and exits.log_probs.shape == (len(scope["data"].x_test), 4)


def test_readme_per_token_example_learns_prunes_and_predicts():
    scope: dict = {}
    exec(compile(readme_example("per-token"), "README.md:per-token", "exec"), scope)
    data, log_p, state = scope["data"], scope["log_p"], scope["state"]
    assert log_p.shape == (*data.y_test.shape, scope["V"])
    assert scope["token_accuracy"] > 0.9  # chance is 1/V = 0.2; depth 0 sees one token and cannot pass 0.2 much
    assert scope["perplexity"] < 1.5
    assert float(state.q[0]) < 0.05  # the rule needs the token before: depth 0 cannot predict it
