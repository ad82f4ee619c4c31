"""The paper's presets pinned to saved numbers (to the rounding of another CPU), and the head's
shared BatchNorm statistics."""

import sys
from pathlib import Path

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vdjax
from vdjax.nn.layers import batch_norm
from vdjax.nn.models import LDN, ModelConfig

DATA = Path(__file__).with_name("data")
sys.path.insert(0, str(DATA))
from make_preset_fixture import PRESETS, record  # noqa: E402


@pytest.fixture(scope="module")
def saved():
    return flax.serialization.msgpack_restore((DATA / "presets.msgpack").read_bytes())


# The fixture was saved on one machine; another CPU reproduces it only to rounding. XLA:CPU compiles
# for the machine's instruction set: another vector width, or FMA or none, reorders and contracts
# float32 sums, so a value moves by a few ulps of the largest terms summed into it, times the
# reduction's depth. Each leaf is therefore compared with an absolute tolerance of N float32 eps
# times its own largest |value| (a leaf of exact zeros must stay exact zeros):
# - initial variables and eval logits, N = 8: initialisers are elementwise (one rounding of
#   `lo + u * (hi - lo)`, fused or not) and the eval pass sums at most 36 products per output;
# - train-mode logits and the state after one SGD step, N = 200: batch statistics and gradients sum
#   over up to 512 positions (8 images x an 8x8 map), and BatchNorm divides by a batch's sigma.
# Measured against the fixture on an AVX-512 machine under --xla_cpu_max_isa=AVX2, AVX and SSE4_2,
# with jax 0.10.2 and 0.12: at most 2.6 eps and 53 eps. A changed initialiser, init scale, layer
# order, BatchNorm epsilon or update rule moves the eval logits or the step by far more.
EPS = float(np.finfo(np.float32).eps)
FORWARD_ULPS, TRAINED_ULPS = 8, 200  # ~1e-6 and ~2.4e-5 of the leaf's largest |value|
TRAINED = ("train_logits", "step_params", "step_batch_stats", "step_loss")


def assert_leaf_close(got, want, ulps: int, name: str):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, name
    if not np.issubdtype(want.dtype, np.floating):
        np.testing.assert_array_equal(got, want, err_msg=name)
        return
    scale = float(np.max(np.abs(want), initial=0.0))
    np.testing.assert_allclose(got, want, rtol=0, atol=ulps * EPS * scale, err_msg=name)


@pytest.mark.float_sensitive
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the fixture's floats are XLA:CPU's")
@pytest.mark.parametrize("arch", sorted(PRESETS))
def test_presets_init_outputs_and_train_step_match_the_saved_ones(arch, saved):
    """Same key -> the same parameter paths, and the same values, outputs and one SGD step up to
    the rounding of another CPU's kernels (the tolerances above)."""
    want, got = saved[arch], jax.device_get(record(PRESETS[arch]))
    paths = lambda t: [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(t)[0]]  # noqa: E731
    assert paths(got) == paths(want)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(want)[0], jax.tree_util.tree_leaves(got)):
        name = jax.tree_util.keystr(path)
        assert_leaf_close(b, a, TRAINED_ULPS if path[0].key in TRAINED else FORWARD_ULPS, name)
    # ... and the saved parameters give the saved outputs.
    x, variables = want["x"], want["variables"]
    assert_leaf_close(LDN(PRESETS[arch]).apply(variables, x), want["eval_logits"], FORWARD_ULPS, "eval from saved")


def test_presets_are_networks():
    cfg = ModelConfig("cnn", 2, 10, (12, 12, 1), width=8, bottleneck=4)
    net = cfg.to_network()
    assert isinstance(net, vdjax.Network) and net == vdjax.nn.models.cnn(2, 10, (12, 12, 1), width=8, bottleneck=4)
    x = jnp.ones((2, 12, 12, 1))
    v = LDN(cfg).init(jax.random.key(0), x)
    np.testing.assert_array_equal(LDN(net).apply(v, x), LDN(cfg).apply(v, x))


class NormHead(nn.Module):
    """BatchNorm on a depth's activations, then the classifier: its inputs are the a_d themselves."""

    @nn.compact
    def __call__(self, h, train: bool = False):
        return nn.Dense(2)(batch_norm(train)(h))


class LinearBranch(nn.Module):
    @nn.compact
    def __call__(self, a):
        return nn.Dense(a.shape[-1])(a)


def norm_head_network(head_norm: str, max_depth: int = 3) -> vdjax.Network:
    return vdjax.Network(stem=nn.Dense(4), block=LinearBranch(), head=NormHead(), max_depth=max_depth,
                         num_classes=2, input_shape=(3,), head_norm=head_norm)


def activations_by_hand(params, x: np.ndarray, max_depth: int) -> list[np.ndarray]:
    """a_0..a_D in float64 numpy from the initial parameters."""
    p = jax.tree_util.tree_map(lambda t: np.asarray(t, np.float64), params)
    a = x @ p["input"]["kernel"] + p["input"]["bias"]
    out = [a]
    branch = p["blocks"]["scan"]["LinearBranch_0"]["Dense_0"]
    for d in range(max_depth):
        a = a + a @ branch["kernel"][d] + branch["bias"][d]
        out.append(a)
    return out


@pytest.mark.parametrize("head_norm", ["shared", "per_depth"])
def test_head_running_statistics_after_one_train_step(head_norm):
    """'shared': one running mean/var, the D+1 momentum updates applied in depth order 0..D;
    'per_depth': one row per depth, each updated once."""
    D, momentum = 3, 0.9
    net = norm_head_network(head_norm, D)
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    y = np.arange(16) % 2
    train = vdjax.TrainConfig(batch_size=16)
    opt = vdjax.make_optimizer(train, 1)
    state = vdjax.init_state(jax.random.key(0), net, opt)
    acts = activations_by_hand(state.params["model"], x, D)
    state, _ = vdjax.make_train_step(net, train, opt, 16)(state, x, y)
    stats = state.batch_stats["head"]["BatchNorm_0"]
    if head_norm == "shared":
        mean, var = np.zeros(4), np.ones(4)
        for a in acts:  # depth order 0..D
            mean = momentum * mean + (1 - momentum) * a.mean(0)
            var = momentum * var + (1 - momentum) * a.var(0)
        assert stats["mean"].shape == stats["var"].shape == (4,)  # no depth axis
    else:
        mean = np.stack([(1 - momentum) * a.mean(0) for a in acts])
        var = np.stack([momentum + (1 - momentum) * a.var(0) for a in acts])
    np.testing.assert_allclose(stats["mean"], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["var"], var, rtol=1e-4, atol=1e-5)


def test_shared_head_statistics_train_and_eval():
    """In training each depth normalises with its own batch (so sharing changes nothing there); in
    evaluation every depth uses the one shared running statistics; pruning keeps them whole."""
    shared, per_depth = norm_head_network("shared"), norm_head_network("per_depth")
    x = jax.random.normal(jax.random.key(1), (8, 3))
    v = LDN(shared).init(jax.random.key(0), x)
    v_per = LDN(per_depth).init(jax.random.key(0), x)
    np.testing.assert_array_equal(v_per["batch_stats"]["head"]["BatchNorm_0"]["mean"].shape, (4, 4))
    train_shared, _ = LDN(shared).apply(v, x, train=True, mutable=["batch_stats"])
    train_per, _ = LDN(per_depth).apply({**v_per, "params": v["params"]}, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(train_shared, train_per, rtol=1e-6, atol=1e-6)
    stats = {"mean": jnp.full((4,), 0.5), "var": jnp.full((4,), 2.0)}
    v = {**v, "batch_stats": {"head": {"BatchNorm_0": stats}}}
    tiled = {"head": {"BatchNorm_0": jax.tree_util.tree_map(lambda a: jnp.stack([a] * 4), stats)}}
    np.testing.assert_allclose(LDN(shared).apply(v, x), LDN(per_depth).apply({**v, "batch_stats": tiled}, x),
                               rtol=1e-6, atol=1e-6)
    pruned = vdjax.prune(shared, v, np.full(4, 0.25), 1)
    assert pruned.variables["batch_stats"]["head"]["BatchNorm_0"]["mean"].shape == (4,)
    assert vdjax.predict_log_probs(pruned.config, pruned.variables, pruned.q, np.asarray(x)).shape == (8, 2)


def test_head_norm_is_a_preset_option():
    cfg = ModelConfig("cnn", 2, 10, (12, 12, 1), width=8, bottleneck=4, head_norm="shared")
    v = LDN(cfg).init(jax.random.key(0), jnp.zeros((1, 12, 12, 1)))
    assert v["batch_stats"]["head"]["MLPBlock_0"]["BatchNorm_0"]["mean"].shape == (8,)
    with pytest.raises(ValueError, match="head_norm"):
        ModelConfig("mlp", 2, 2, (2,), head_norm="per_block")
