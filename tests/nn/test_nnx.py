"""Flax NNX modules as the stem, residual block and head of a `vdjax.Network` (`vdjax.nn.nnx`):
stacked parameters and a forward pass equal to a hand loop in NNX, BatchNorm and dropout modes,
training, pruning and prediction through the public API, compile time flat in depth, errors."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.traverse_util import flatten_dict, unflatten_dict

import vdjax
from vdjax.depth.prune import pruned_log_probs
from vdjax.nn.nnx import NNXModule, nnx_module

W = 4


class MLPBlock(nnx.Module):
    """ReLU -> Linear -> ReLU -> Linear, the layers in an nnx.List (integer paths)."""

    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.layers = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(2)])

    def __call__(self, a):
        return self.layers[1](nnx.relu(self.layers[0](nnx.relu(a))))


class BatchNormBlock(nnx.Module):
    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(width, width, rngs=rngs)
        self.norm = nnx.BatchNorm(width, momentum=0.8, rngs=rngs)

    def __call__(self, a):
        return self.norm(self.linear(nnx.relu(a)))


class DropOnes(nnx.Module):
    """f(a) = dropout(1): a_d - a_(d-1) is depth d's dropout mask, scaled by 1 / (1 - rate)."""

    def __init__(self, rate: float, *, rngs: nnx.Rngs):
        self.dropout = nnx.Dropout(rate, rngs=rngs)

    def __call__(self, a):
        return self.dropout(jnp.ones_like(a))


class DropOnesKeyword(DropOnes):
    """The same, taking the mode as a keyword (vdjax passes `deterministic` when declared)."""

    def __call__(self, a, deterministic: bool = True):
        return self.dropout(jnp.ones_like(a), deterministic=deterministic)


class Identity(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        pass

    def __call__(self, a):
        return a


class PreNormBlock(nnx.Module):
    """LayerNorm -> Linear -> GELU -> Linear, the README's transformer-style block in NNX."""

    def __init__(self, width: int, hidden: int = 16, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.up = nnx.Linear(width, hidden, rngs=rngs)
        self.down = nnx.Linear(hidden, width, rngs=rngs)

    def __call__(self, a):
        return self.down(nnx.gelu(self.up(self.norm(a))))


def network(block, max_depth=3, head=None, num_classes=2, **kw) -> vdjax.Network:
    return vdjax.Network(stem=nnx_module(nnx.Linear, 2, W), block=block,
                         head=head or nnx_module(nnx.Linear, W, num_classes), max_depth=max_depth,
                         num_classes=num_classes, input_shape=(2,), **kw)


def load(module: nnx.Module, *trees) -> nnx.Module:
    """Puts Linen variable trees (string paths) into an NNX module, by `nnx.update`."""
    flat = {tuple(int(k) if k.isdigit() else k for k in path): v for t in trees for path, v in flatten_dict(t).items()}
    nnx.update(module, unflatten_dict(flat))
    return module


def nnx_paths(module: nnx.Module, kind) -> set:
    return {tuple(str(k) for k in path) for path, _ in nnx.to_flat_state(nnx.state(module, kind))}


def block_tree(variables, collection):
    (tree,) = variables[collection]["blocks"]["scan"].values()  # the one scanned block module
    return tree


def hand_forward(variables, block_cls, x, depth, train):
    """a_0 = stem(x), a_d = a_(d-1) + f_d(a_(d-1)), head(a_d) for every d, in NNX itself: each depth's
    slice of the stacked variables merged into its own NNX module. Returns (outputs, blocks)."""
    params, stats = variables["params"], variables.get("batch_stats", {})
    stem = load(nnx.Linear(2, W, rngs=nnx.Rngs(0)), params["input"])
    head = load(nnx.Linear(W, 2, rngs=nnx.Rngs(0)), params["head"])
    blocks = []
    for d in range(depth):
        at = lambda t: jax.tree_util.tree_map(lambda leaf: leaf[d], t)  # noqa: E731
        trees = [at(block_tree(variables, "params"))] + ([at(block_tree(variables, "batch_stats"))] if stats else [])
        block = load(block_cls(W, rngs=nnx.Rngs(0)), *trees)
        block.train() if train else block.eval()
        blocks.append(block)
    a = stem(x)
    outs = [head(a)]
    for block in blocks:
        a = a + block(a)
        outs.append(head(a))
    return jnp.stack(outs), blocks


@pytest.mark.parametrize("block_cls", [MLPBlock, BatchNormBlock])
def test_nnx_block_stacks_along_depth_and_matches_a_hand_loop(block_cls):
    depth = 3
    net = network(nnx_module(block_cls, W), max_depth=depth)
    x = jax.random.normal(jax.random.key(1), (6, 2))
    model = vdjax.LDN(net)
    variables = model.init(jax.random.key(0), x, train=False)
    params = block_tree(variables, "params")
    reference = block_cls(W, rngs=nnx.Rngs(0))
    assert set(flatten_dict(params)) == nnx_paths(reference, nnx.Param)
    for path, leaf in flatten_dict(params).items():
        assert leaf.shape[0] == depth, path
        if path[-1] == "kernel":  # each depth initialised with its own key
            assert not np.allclose(leaf[0], leaf[1]) and not np.allclose(leaf[1], leaf[2])
    if block_cls is BatchNormBlock:
        stats = block_tree(variables, "batch_stats")
        assert set(flatten_dict(stats)) == nnx_paths(reference, nnx.BatchStat)
        # Running statistics other than the initial ones, so that eval mode has something to use.
        keys = iter(jax.random.split(jax.random.key(2), 2))
        stats["norm"]["mean"] = jax.random.normal(next(keys), (depth, W))
        stats["norm"]["var"] = jax.random.uniform(next(keys), (depth, W), minval=0.5, maxval=2.0)

    out = model.apply(variables, x, train=False)
    expected, _ = hand_forward(variables, block_cls, x, depth, train=False)
    assert out.shape == (depth + 1, 6, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

    out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    expected, blocks = hand_forward(variables, block_cls, x, depth, train=True)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    if block_cls is BatchNormBlock:  # every depth's running statistics, updated as NNX updates them
        new = block_tree(updates, "batch_stats")["norm"]
        for d, block in enumerate(blocks):
            np.testing.assert_allclose(new["mean"][d], block.norm.mean[...], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(new["var"][d], block.norm.var[...], rtol=1e-5, atol=1e-6)
        assert not np.allclose(new["mean"], stats["norm"]["mean"])


def test_nnx_batchnorm_follows_train_and_eval():
    module = nnx_module(nnx.BatchNorm, 3, momentum=0.8)
    x = 2.0 + 3.0 * jax.random.normal(jax.random.key(0), (16, 3))
    variables = module.init(jax.random.key(1), x)
    assert jax.tree_util.tree_map(jnp.shape, variables) == {
        "params": {"scale": (3,), "bias": (3,)}, "batch_stats": {"mean": (3,), "var": (3,)}}

    # Training: normalised with the batch's statistics; running statistics move towards them.
    y, updates = module.apply(variables, x, train=True, deterministic=False, mutable=["batch_stats"])
    reference = load(nnx.BatchNorm(3, momentum=0.8, rngs=nnx.Rngs(0)), variables["params"], variables["batch_stats"])
    reference.train()
    np.testing.assert_allclose(y, reference(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(0), 1.0, rtol=1e-3)
    stats = updates["batch_stats"]
    np.testing.assert_allclose(stats["mean"], reference.mean[...], rtol=1e-6)
    np.testing.assert_allclose(stats["var"], reference.var[...], rtol=1e-6)
    np.testing.assert_allclose(stats["mean"], 0.2 * x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.8 + 0.2 * x.var(0), rtol=1e-5)

    # Evaluation: normalised with the running statistics, which stay as they are.
    trained = {"params": variables["params"], "batch_stats": stats}
    y, unchanged = module.apply(trained, x, train=False, deterministic=True, mutable=["batch_stats"])
    np.testing.assert_allclose(y, (x - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5), rtol=1e-5, atol=1e-5)
    reference.eval()
    np.testing.assert_allclose(y, reference(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(unchanged["batch_stats"]["mean"], stats["mean"])


@pytest.mark.parametrize("head_norm", ["per_depth", "shared"])
def test_nnx_batchnorm_head_statistics_per_depth_or_shared(head_norm):
    depth = 3
    net = network(nnx_module(BatchNormBlock, W), max_depth=depth, head=nnx_module(BatchNormBlock, W),
                  num_classes=W, head_norm=head_norm)
    x = jax.random.normal(jax.random.key(1), (8, 2))
    model = vdjax.LDN(net)
    variables = model.init(jax.random.key(0), x, train=False)
    head_stats = variables["batch_stats"]["head"]["norm"]
    assert head_stats["mean"].shape == ((depth + 1, W) if head_norm == "per_depth" else (W,))
    out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert out.shape == (depth + 1, 8, W) and np.isfinite(out).all()
    new = updates["batch_stats"]["head"]["norm"]["mean"]
    assert not np.allclose(new, head_stats["mean"])
    if head_norm == "per_depth":  # each depth's head saw its own activations
        assert not np.allclose(new[0], new[1])
    np.testing.assert_array_equal(model.apply(variables, x, train=False), model.apply(variables, x, train=False))


@pytest.mark.parametrize("block_cls", [DropOnes, DropOnesKeyword])
def test_nnx_dropout_draws_per_step_block_and_depth_in_training_only(block_cls):
    depth, rate = 4, 0.5
    net = network(nnx_module(block_cls, rate), max_depth=depth, head=nnx_module(Identity), num_classes=W,
                  uses_dropout=True)
    x = jax.random.normal(jax.random.key(1), (8, 2))
    model = vdjax.LDN(net)
    variables = model.init(jax.random.key(0), x, train=False)  # a 'params' key alone, as init_state does

    def masks(**kw):
        out = model.apply(variables, x, **kw)
        return np.asarray(out[1:] - out[:-1])  # [depth, batch, W]: f_d(a_(d-1)) = mask_d / (1 - rate)

    eval_masks = masks(train=False)
    np.testing.assert_allclose(eval_masks, 1.0, rtol=1e-6)  # off in evaluation

    key = {"dropout": jax.random.key(7)}
    m1, m2 = masks(train=True, rngs=key), masks(train=True, rngs={"dropout": jax.random.key(8)})
    for m in (m1, m2):
        assert set(np.unique(np.round(m, 4))) == {0.0, 2.0}
        assert all(not np.array_equal(m[d], m[d + 1]) for d in range(depth - 1))  # own noise per depth
    assert not np.array_equal(m1, m2)  # another key, other masks
    np.testing.assert_array_equal(m1, masks(train=True, rngs=key))  # the same key, the same masks
    mc = masks(train=False, sample_dropout=True, rngs=key)  # MC dropout: active outside training
    assert set(np.unique(np.round(mc, 4))) == {0.0, 2.0}


def test_nnx_network_trains_prunes_and_predicts_through_the_public_api():
    net = vdjax.Network(stem=nnx_module(nnx.Linear, 2, 16), block=nnx_module(PreNormBlock, 16, hidden=32),
                        head=nnx_module(nnx.Linear, 16, 2), max_depth=6, num_classes=2, input_shape=(2,))
    data = vdjax.spirals_dataset()
    start = vdjax.init_state(jax.random.key(0), net, vdjax.make_optimizer(vdjax.TrainConfig(), 1))

    def train_nll(state):
        log_p = vdjax.predict_log_probs(net, state.variables, state.q, data.x_train)
        return float(-np.mean(log_p[np.arange(len(data.y_train)), data.y_train]))

    # 200 training points: batches of 64 make 60 epochs 240 steps (one batch of 512 would make 60 steps, after
    # which the Linen twin of this network is still at a train NLL of 0.52).
    result = vdjax.fit(net, vdjax.TrainConfig(max_epochs=60, patience=60, batch_size=64), data, [0])
    state = result.best_state(0)
    before, after = train_nll(start), train_nll(state)
    print(f"NNX network: train NLL {before:.3f} -> {after:.3f}, q = {np.round(state.q, 2)}")
    assert after < 0.3 * before

    d_opt = vdjax.d_opt_95(state.q)
    full_logits = vdjax.eval_logits(net, state.variables, data.x_test)
    for depth in sorted({d_opt, 2}):
        pruned = vdjax.prune(net, state.variables, state.q, depth)
        blocks = pruned.variables["params"].get("blocks", {})
        assert (depth == 0) == (not blocks)
        assert all(leaf.shape[0] == depth for leaf in jax.tree_util.tree_leaves(blocks))
        np.testing.assert_allclose(vdjax.eval_logits(pruned.config, pruned.variables, data.x_test),
                                   full_logits[: depth + 1], rtol=1e-5, atol=1e-5)
        log_p = vdjax.predict_log_probs(pruned.config, pruned.variables, pruned.q, data.x_test)
        np.testing.assert_allclose(log_p, pruned_log_probs(full_logits, state.q, depth), rtol=1e-5, atol=1e-5)
    assert np.mean(full_logits[-1].argmax(-1) == data.y_test) > 0.8


def compile_seconds(depth: int) -> tuple[float, float]:
    """(trace + lower, compile) seconds of the training forward + backward of a depth-`depth` NNX LDN."""
    net = network(nnx_module(PreNormBlock, W), max_depth=depth, head=nnx_module(BatchNormBlock, W), num_classes=W)
    model = vdjax.LDN(net)
    x = jax.ShapeDtypeStruct((32, 2), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), train=False))

    def loss(params, stats, x):
        out, updates = model.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
        return jnp.mean(out ** 2), updates

    step = jax.jit(jax.value_and_grad(loss, has_aux=True))
    t0 = time.perf_counter()
    lowered = step.lower(variables["params"], variables["batch_stats"], x)
    t1 = time.perf_counter()
    lowered.compile()
    return t1 - t0, time.perf_counter() - t1


def test_nnx_compile_time_is_flat_in_depth():
    compile_seconds(2)  # warm-up: first-use costs of tracing and of the compiler
    times = {d: compile_seconds(d) for d in (10, 100)}
    print("NNX LDN forward+backward (trace+lower, compile) seconds:",
          {d: (round(a, 2), round(b, 2)) for d, (a, b) in times.items()})
    total = {d: sum(t) for d, t in times.items()}
    assert total[100] < 3 * total[10]


class Counter(nnx.Variable):
    pass


class Counting(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.calls = Counter(jnp.zeros(()))

    def __call__(self, a):
        return a


def test_one_line_errors():
    with pytest.raises(TypeError) as info:
        network(nnx.Linear(W, W, rngs=nnx.Rngs(0)))
    assert str(info.value) == ("block is an nnx.Module instance; pass vdjax.nn.nnx.nnx_module(Linear, *args, **kwargs) "
                               "so that vdjax can create max_depth independent copies")
    with pytest.raises(TypeError, match=r"^block is an nnx.Module class; pass vdjax.nn.nnx.nnx_module\(MLPBlock"):
        network(MLPBlock)
    with pytest.raises(TypeError) as info:
        vdjax.Network(stem=nnx_module(nnx.Linear, 2, W), block=nnx_module(MLPBlock, W), head=np.tanh, max_depth=2,
                      num_classes=2, input_shape=(2,))
    assert str(info.value) == ("head must be a Flax module (a Linen instance, or vdjax.nn.nnx.nnx_module(...) for "
                               "NNX), got a numpy.ufunc")
    with pytest.raises(TypeError) as info:
        network(object())
    assert "\n" not in str(info.value) and str(info.value).endswith("got a builtins.object")
    with pytest.raises(TypeError, match="^NNXModule needs an nnx.Module subclass, got the class builtins.dict$"):
        nnx_module(dict)
    with pytest.raises(TypeError, match="^the arguments of MLPBlock must be hashable"):
        nnx_module(MLPBlock, [W])
    with pytest.raises(TypeError, match=r"^Counting.calls is a Counter variable; vdjax keeps nnx.Param and nnx.BatchStat"):
        nnx_module(Counting).init(jax.random.key(0), jnp.ones((1, W)))


def test_an_nnx_network_is_a_static_template():
    a, b = network(nnx_module(PreNormBlock, W, hidden=8)), network(nnx_module(PreNormBlock, W, hidden=8))
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b)  # jit static argument, cache key, run id
    assert a != network(nnx_module(PreNormBlock, W, hidden=9))
    assert nnx_module(PreNormBlock, W, hidden=8) == NNXModule(PreNormBlock, (W,), {"hidden": 8})
    assert "PreNormBlock" in a.describe()["block"] and "hidden" in a.describe()["block"]
