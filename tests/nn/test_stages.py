"""Multi-stage backbones (`vdjax.Stage`, `Network.from_stages`) checked by hand: every depth's
output against an explicit loop over stem, transitions, blocks, pool, exits and head with the
variables read out of the initialised tree (eval and train mode, BatchNorm running statistics
included), pruning to every depth against the full outputs, the last-head network, one-line
errors, and training, pruning, prediction and exact resume through the public API."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.traverse_util import flatten_dict

import vdjax
from helpers import ConvBN, DenseBN  # noqa: E402
from vdjax.depth.prune import last_head_only
from vdjax.nn.nnx import nnx_module

# ---------------------------------------------------------------------------- modules (all take `train`)


class Conv(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, a, train: bool = False):
        return nn.Conv(self.features, (3, 3), strides=self.strides)(a)


class Dense(nn.Module):
    features: int

    @nn.compact
    def __call__(self, a, train: bool = False):
        return nn.Dense(self.features)(a)


class BNHead(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, h, train: bool = False):
        return nn.Dense(self.num_classes)(nn.BatchNorm(use_running_average=not train, momentum=0.8)(h))


class MeanPool(nn.Module):
    """Global average pooling: parameter-free."""

    @nn.compact
    def __call__(self, a):
        return a.mean(axis=(1, 2))


class NNXBlock(nnx.Module):
    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(width, width, rngs=rngs)
        self.norm = nnx.BatchNorm(width, momentum=0.8, rngs=rngs)

    def __call__(self, a):
        return self.norm(self.linear(nnx.relu(a)))


# ---------------------------------------------------------------------------- networks

IMAGE = (6, 6, 1)


def two_stage_cnn(num_classes=3, blocks=(2, 2)) -> vdjax.Network:
    """6x6x1 -> conv 3 channels; stage 0: 2 conv-BN blocks; stage 1: a stride-2 conv-BN transition
    to 3x3x4, 2 blocks; every block pooled and mapped by its stage's exit (Dense + BN) to width 5."""
    return vdjax.Network.from_stages(
        Conv(3),
        (vdjax.Stage(ConvBN(3), blocks[0], exit=DenseBN(5)),
         vdjax.Stage(ConvBN(4), blocks[1], transition=ConvBN(4, strides=2), exit=DenseBN(5))),
        Dense(num_classes), num_classes=num_classes, input_shape=IMAGE, pool=MeanPool())


def three_stage_mlp(block0=None, num_classes=2) -> vdjax.Network:
    """5 -> stem 4; stage 0: transition to width 6, 2 BN blocks, no exit (width 6 as it is); stage 1:
    transition to 3, 1 block without BN, exit to 6; stage 2: transition to 5, 3 BN blocks, exit
    (Dense + BN) to 6; a BatchNorm head, statistics per depth."""
    return vdjax.Network.from_stages(
        Dense(4),
        (vdjax.Stage(block0 or DenseBN(6), 2, transition=Dense(6)),
         vdjax.Stage(Dense(3), 1, transition=Dense(3), exit=Dense(6)),
         vdjax.Stage(DenseBN(5), 3, transition=DenseBN(5), exit=DenseBN(6))),
        BNHead(num_classes), num_classes=num_classes, input_shape=(5,))


def inputs(net, n=8, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, *net.input_shape)), jnp.float32)


def init(net, x):
    """Variables of the initialised tree's layout (`LDN.init` under `eval_shape`), filled from numpy:
    random parameters, and random BatchNorm running statistics (so that eval mode and each depth's
    row of statistics matter). No initialiser is compiled: that program alone takes seconds on CPU."""
    shapes = jax.eval_shape(lambda x: vdjax.LDN(net).init(jax.random.key(0), x, train=False), x)
    rng = np.random.default_rng(5)

    def fill(path, leaf):
        if path[-1].key == "var":
            return jnp.asarray(rng.uniform(0.5, 2.0, leaf.shape), jnp.float32)
        return jnp.asarray(rng.normal(0.0, 0.4, leaf.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, dict(shapes))


# ---------------------------------------------------------------------------- the hand loop


def get(tree, *path):
    for key in path:
        if not hasattr(tree, "keys") or key not in tree:
            return {}
        tree = tree[key]
    return tree


def row(tree, i):
    return jax.tree_util.tree_map(lambda leaf: leaf[i], tree)


def scanned(tree):
    """The one block module under a stage's 'blocks/scan' (named by Linen: ConvBN_0, ...)."""
    (inner,) = tree["scan"].values() if tree else ({},)
    return inner


def hand_forward(net, variables, x, train):
    """Every depth's output by an explicit loop, and every module's updated statistics (train mode)
    keyed by (path, row): a_0 = stem(x), the transition on entering a stage, a_d = a_(d-1) +
    block_d(a_(d-1)), out_d = head_d(exit_(s, d)(pool(a_d)))."""
    P, S = variables["params"], variables.get("batch_stats", {})
    updates = {}

    def run(module, x, path, params, stats, key):
        v = {"params": params, **({"batch_stats": stats} if stats else {})}
        if not train:
            return module.apply(v, x, train=False)
        out, new = module.apply(v, x, train=True, mutable=["batch_stats"])
        if stats:
            updates[(path, key)] = new["batch_stats"]
        return out

    def output(a, s, exit_row, depth):
        stage = net.stages[s]
        h = a if net.pool is None else net.pool.apply({}, a)
        if stage.exit is not None:
            where = ("backbone", f"stage_{s}", "exit")
            h = run(stage.exit, h, where, get(P, *where), row(get(S, *where), exit_row), exit_row)
        return run(net.head, h, ("head",), P["head"], row(get(S, "head"), depth), depth)

    a = run(net.stem, x, ("input",), P["input"], get(S, "input"), None)
    outs, depth = [], 0
    for s, stage in enumerate(net.stages):
        if stage.transition is not None:
            where = ("backbone", f"stage_{s}", "transition")
            a = run(stage.transition, a, where, get(P, *where), get(S, *where), None)
        if s == 0:
            outs.append(output(a, 0, 0, 0))
        where = ("backbone", f"stage_{s}", "blocks")
        for k in range(stage.max_blocks):
            params, stats = row(scanned(get(P, *where)), k), row(scanned(get(S, *where)), k)
            a = a + run(stage.block, a, where, params, stats, k)
            depth += 1
            outs.append(output(a, s, k + (s == 0), depth))
    assert depth == net.max_depth
    return jnp.stack(outs), updates


def hand(net, variables, x, train):
    """`hand_forward` compiled (one program rather than hundreds of eager operations)."""
    keys = []

    def forward(variables, x):
        out, updates = hand_forward(net, variables, x, train)
        keys[:] = list(updates)
        return out, list(updates.values())

    out, values = jax.jit(forward)(variables, x)
    return out, dict(zip(keys, values))


def updated_row(new_stats, path, key):
    tree = get(new_stats, *path)
    if path[-1] == "blocks":
        tree = scanned(tree)
    return tree if key is None else row(tree, key)


NETWORKS = {
    "two-stage cnn": two_stage_cnn,
    "three-stage mlp": three_stage_mlp,
    "three-stage, nnx block": lambda: three_stage_mlp(block0=nnx_module(NNXBlock, 6)),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_every_depth_equals_an_explicit_loop_over_the_stages(name):
    net = NETWORKS[name]()
    x = inputs(net)
    variables = init(net, x)
    model = vdjax.LDN(net)

    out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    expected, _ = hand(net, variables, x, train=False)
    assert out.shape == (net.max_depth + 1, len(x), net.num_classes) == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out[1], out[2], atol=1e-3)  # the depths differ: each block contributes

    out, new = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    expected, updates = hand(net, variables, x, train=True)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # Every module's running statistics, each depth's row updated with its own batch (and nothing else).
    assert updates
    for (path, key), stats in updates.items():
        model_row = updated_row(new["batch_stats"], path, key)
        for p, leaf in flatten_dict(stats).items():
            np.testing.assert_allclose(flatten_dict(model_row)[p], leaf, rtol=1e-5, atol=1e-6,
                                       err_msg=str((path, key, p)))
    n_rows = sum(leaf.size for leaf in jax.tree_util.tree_leaves(new["batch_stats"]))
    n_hand = sum(leaf.size for leaf in jax.tree_util.tree_leaves(list(updates.values())))
    assert n_rows == n_hand  # every statistic the network updated was checked


def test_the_variables_are_laid_out_per_stage():
    net = two_stage_cnn()
    variables = init(net, inputs(net))
    P, S = variables["params"], variables["batch_stats"]
    assert set(P) == {"input", "backbone", "head"} and set(P["backbone"]) == {"stage_0", "stage_1"}
    assert set(P["backbone"]["stage_0"]) == {"blocks", "exit"}
    assert set(P["backbone"]["stage_1"]) == {"transition", "blocks", "exit"}
    for s, width in ((0, 3), (1, 4)):
        kernel = scanned(P["backbone"][f"stage_{s}"]["blocks"])["Conv_0"]["kernel"]
        assert kernel.shape == (2, 3, 3, width, width)  # stacked along the stage's blocks
        # The exit's parameters are shared by the stage's depths, its statistics kept per depth
        # (stage 0's exit also reads depth 0).
        assert P["backbone"][f"stage_{s}"]["exit"]["Dense_0"]["kernel"].shape == (width, 5)
        assert S["backbone"][f"stage_{s}"]["exit"]["BatchNorm_0"]["mean"].shape == (2 + (s == 0), 5)
    assert net.max_depth == 4 and net.block == net.stages[0].block


def count(variables, collection="params"):
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(variables.get(collection, {})))


@pytest.mark.parametrize("name", ["two-stage cnn", "three-stage mlp"])
def test_pruning_to_every_depth_keeps_the_first_rows_and_a_smaller_network(name):
    net = NETWORKS[name]()
    x = inputs(net)
    variables = init(net, x)
    full = vdjax.eval_logits(net, variables, np.asarray(x))
    q = np.random.default_rng(3).dirichlet(np.ones(net.max_depth + 1))
    sizes = []
    for d in range(net.max_depth + 1):
        pruned = vdjax.prune(net, variables, q, d)
        assert pruned.d_opt == d == pruned.config.max_depth
        np.testing.assert_allclose(vdjax.eval_logits(pruned.config, pruned.variables, np.asarray(x)), full[: d + 1],
                                   rtol=1e-5, atol=1e-5, err_msg=f"d={d}")
        np.testing.assert_allclose(pruned.q, vdjax.fold_posterior(q, d), rtol=1e-6)
        # The stages after the one of block d are gone, from the config and from every collection.
        last, kept = net.stage_of(d)
        assert len(pruned.config.stages) == last + 1 and pruned.config.stages[-1].max_blocks == kept
        for collection in ("params", "batch_stats"):
            backbone = pruned.variables[collection].get("backbone", {})
            assert all(f"stage_{s}" not in backbone for s in range(last + 1, len(net.stages))), (d, collection)
            for leaf in jax.tree_util.tree_leaves(scanned(get(backbone, f"stage_{last}", "blocks"))):
                assert leaf.shape[0] == kept
        # The pruned network initialises to exactly this tree's structure and shapes.
        fresh = jax.eval_shape(lambda x: vdjax.LDN(pruned.config).init(jax.random.key(0), x, train=False), x)
        assert jax.tree_util.tree_map(jnp.shape, dict(fresh)) == jax.tree_util.tree_map(jnp.shape, pruned.variables)
        sizes.append(count(pruned.variables))
    assert sizes[-1] == count(variables)
    assert all(a < b for a, b in zip(sizes, sizes[1:])), sizes  # every block cut is parameters gone


@pytest.mark.parametrize("name", ["two-stage cnn", "three-stage mlp"])
def test_last_head_only_gives_the_last_row(name):
    net = NETWORKS[name]()
    x = np.asarray(inputs(net))
    variables = init(net, x)
    full = vdjax.eval_logits(net, variables, x)
    q = np.full(net.max_depth + 1, 1.0 / (net.max_depth + 1))
    for d in range(net.max_depth + 1):
        pruned = vdjax.prune(net, variables, q, d)
        config, last = last_head_only(pruned.config, pruned.variables)
        assert config.heads == "last"
        out = vdjax.eval_logits(config, last, x)
        assert out.shape == (1, len(x), net.num_classes)
        np.testing.assert_allclose(out[0], full[d], rtol=1e-5, atol=1e-5, err_msg=f"d={d}")


# ---------------------------------------------------------------------------- errors


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


def init_shapes(net, shape):
    """`LDN.init` traced, not run: the checks raise while tracing."""
    return jax.eval_shape(lambda x: vdjax.LDN(net).init(jax.random.key(0), x), jnp.zeros(shape))


def test_a_block_that_changes_the_shape_inside_a_stage_is_refused_naming_the_stage():
    net = vdjax.Network.from_stages(
        Dense(4), (vdjax.Stage(Dense(4), 1), vdjax.Stage(Dense(3), 2, transition=Dense(5))), Dense(2),
        num_classes=2, input_shape=(3,))
    with pytest.raises(ValueError) as e:
        init_shapes(net, (2, 3))
    message = one_line(e)
    assert "of stage 1" in message and "(2, 5)" in message and "(2, 3)" in message and "transition" in message


def test_exits_of_different_shapes_are_refused():
    net = vdjax.Network.from_stages(
        Dense(4),
        (vdjax.Stage(Dense(4), 1, exit=Dense(6)), vdjax.Stage(Dense(5), 1, transition=Dense(5), exit=Dense(7))),
        Dense(2), num_classes=2, input_shape=(3,))
    with pytest.raises(ValueError) as e:
        init_shapes(net, (2, 3))
    assert "common shape" in one_line(e) and "(6,)" in str(e.value) and "(7,)" in str(e.value)
    # Without exits the stages' widths differ (4 then 5): the same refusal.
    net = vdjax.Network.from_stages(Dense(4), (vdjax.Stage(Dense(4), 1), vdjax.Stage(Dense(5), 1, transition=Dense(5))),
                                    Dense(2), num_classes=2, input_shape=(3,))
    with pytest.raises(ValueError) as e:
        init_shapes(net, (2, 3))
    assert "common shape" in one_line(e)


def test_bad_stage_arguments_get_one_line():
    stages = (vdjax.Stage(Dense(4), 2), vdjax.Stage(Dense(4), 1))
    common = dict(stem=Dense(4), block=stages[0].block, head=Dense(2), num_classes=2, input_shape=(3,))
    assert vdjax.Network(max_depth=3, stages=stages, **common).max_depth == 3
    with pytest.raises(ValueError) as e:
        vdjax.Network(max_depth=4, stages=stages, **common)
    assert "max_depth" in one_line(e) and "from_stages" in str(e.value)
    with pytest.raises(ValueError) as e:  # the block must be the first stage's
        vdjax.Network(max_depth=3, stages=stages, **{**common, "block": Dense(5)})
    one_line(e)
    with pytest.raises(TypeError) as e:
        vdjax.Network(max_depth=3, stages=(stages[0], "stage"), **common)
    assert "vdjax.Stage" in one_line(e)
    with pytest.raises(TypeError) as e:
        vdjax.Network.from_stages(Dense(4), (stages[0], Dense(4)), Dense(2), num_classes=2, input_shape=(3,))
    assert "vdjax.Stage" in one_line(e)
    with pytest.raises(TypeError) as e:
        vdjax.Network.from_stages(Dense(4), (), Dense(2), num_classes=2, input_shape=(3,))
    one_line(e)
    with pytest.raises(ValueError) as e:
        vdjax.Network.from_stages(Dense(4), (vdjax.Stage(Dense(4), 2), vdjax.Stage(Dense(4), 0)), Dense(2),
                                  num_classes=2, input_shape=(3,))
    assert "max_blocks >= 1" in one_line(e)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError) as e:
            vdjax.Stage(Dense(4), bad)
        one_line(e)
    with pytest.raises(TypeError) as e:
        vdjax.Stage(NNXBlock(4, rngs=nnx.Rngs(0)), 2)
    assert "nnx_module" in one_line(e)
    with pytest.raises(TypeError) as e:
        vdjax.Stage(Dense(4), 2, transition=lambda a: a)
    assert "transition" in one_line(e)
    # A one-stage staged network may have no blocks (a network pruned to depth 0).
    assert vdjax.Network.from_stages(Dense(4), (vdjax.Stage(Dense(4), 0),), Dense(2), num_classes=2,
                                     input_shape=(3,)).max_depth == 0


# ---------------------------------------------------------------------------- through the public API


def image_task(n, seed):
    """6x6 images: class 1 when the top half is brighter than the bottom half."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0.0, 0.5, (n, *IMAGE)).astype(np.float32)
    x[:, :3] += np.where(y == 1, 1.0, -1.0)[:, None, None, None]
    return x, y


def image_data():
    x, y = image_task(96, 0)
    xt, yt = image_task(64, 1)
    return vdjax.data.Dataset("halves", x, y, xt, yt, num_classes=2)


NET = two_stage_cnn(num_classes=2, blocks=(1, 2))
TC = vdjax.TrainConfig(max_epochs=24, patience=24, learning_rate=0.1, batch_size=48)
CHUNK = 8


@pytest.fixture(scope="module")
def trained():  # ~35 s on a 2-core machine, most of it compiling the training program
    return vdjax.fit(NET, TC, image_data(), [0, 1], vdjax.RunOptions(chunk_epochs=CHUNK))


@pytest.mark.one_stack  # with its fixture, ~45 s
def test_a_staged_network_trains_prunes_and_predicts(trained):
    data = image_data()
    history = np.asarray(trained.state.history)
    assert history.shape[0] == 2 and np.isfinite(history[:, :TC.max_epochs]).all()
    for s in range(2):
        assert history[s, TC.max_epochs - 1] < 0.6 * history[s, 0]  # the loss falls
        state = trained.best_state(s)
        q = np.asarray(state.q)
        assert np.abs(q - 1.0 / len(q)).max() > 1e-3  # q(d) moved from uniform
        d = vdjax.select_depth(q)
        pruned = vdjax.prune(NET, state.variables, q, d)
        assert pruned.config.max_depth == d
        log_p = vdjax.predict_log_probs(pruned.config, pruned.variables, pruned.q, data.x_test)
        assert log_p.shape == (len(data.x_test), 2)
        np.testing.assert_allclose(np.exp(log_p).sum(-1), 1.0, rtol=1e-5)
        assert np.mean(log_p.argmax(-1) == data.y_test) > 0.8  # chance is 0.5
        metrics = vdjax.evaluate(NET, state, data.x_test, data.y_test)
        assert metrics["error"] < 0.2 and metrics["per_depth_error"].shape == (NET.max_depth + 1,)


@pytest.mark.float_sensitive  # bit-for-bit resume
@pytest.mark.one_stack  # needs the training fixture
def test_a_staged_network_resumes_from_its_checkpoint_exactly(trained, tmp_path):
    data, seen = image_data(), []
    stopped = vdjax.fit(NET, TC, data, [0, 1], vdjax.RunOptions(chunk_epochs=CHUNK, checkpoint_dir=tmp_path,
                                                                  checkpoint_every_s=0, stop_after_epochs=CHUNK))
    assert np.all(np.asarray(stopped.state.epoch) == CHUNK)
    resumed = vdjax.fit(NET, TC, data, [0, 1], vdjax.RunOptions(chunk_epochs=CHUNK, checkpoint_dir=tmp_path, log=print,
                                                                  progress=lambda done, total: seen.append(done)))
    assert resumed.resumed_from == CHUNK and seen[0] == 2 * CHUNK
    for field in ("history", "epoch", "best_epoch", "best_loss", "done"):
        np.testing.assert_array_equal(getattr(resumed.state, field), getattr(trained.state, field), err_msg=field)
    for s in range(2):
        a, b = resumed.best_state(s), trained.best_state(s)
        for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
            np.testing.assert_array_equal(x, y)
        for x, y in zip(jax.tree_util.tree_leaves(a.batch_stats), jax.tree_util.tree_leaves(b.batch_stats)):
            np.testing.assert_array_equal(x, y)
