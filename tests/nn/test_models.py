import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdjax.nn.layers import conv_im2col, conv_xla, resolve_conv_impl
from vdjax.nn.models import LDN, ModelConfig


def mlp(max_depth, **kw):
    return ModelConfig("mlp", max_depth, 2, (2,), **kw)


def cnn(max_depth, **kw):
    return ModelConfig("cnn", max_depth, 10, (8, 8, 1), **kw)


@pytest.mark.parametrize("make", [mlp, cnn])
@pytest.mark.parametrize("max_depth", [0, 1, 4])
def test_logits_have_one_row_per_depth(make, max_depth):
    cfg = make(max_depth)
    x = jax.random.normal(jax.random.key(0), (3, *cfg.input_shape))
    variables = LDN(cfg).init(jax.random.key(1), x)
    logits_eval = LDN(cfg).apply(variables, x)
    logits_train, _ = LDN(cfg).apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits_eval.shape == logits_train.shape == (max_depth + 1, 3, cfg.num_classes)
    assert np.all(np.isfinite(logits_eval))


def test_block_parameters_are_stacked_along_depth():
    cfg = cnn(5)
    v = LDN(cfg).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    leaves = jax.tree_util.tree_leaves(v["params"]["blocks"]) + jax.tree_util.tree_leaves(v["batch_stats"]["blocks"])
    assert leaves and all(leaf.shape[0] == 5 for leaf in leaves)
    # The output block's parameters are shared; its BatchNorm statistics are kept per depth.
    assert v["params"]["head"]["Linear_0"]["kernel"].shape == (64, 10)
    assert all(leaf.shape[0] == 6 for leaf in jax.tree_util.tree_leaves(v["batch_stats"]["head"]))


def test_depth_d_logits_do_not_depend_on_deeper_blocks():
    cfg = mlp(4)
    x = jax.random.normal(jax.random.key(0), (7, 2))
    v = LDN(cfg).init(jax.random.key(1), x)
    logits = LDN(cfg).apply(v, x)
    v2 = jax.tree_util.tree_map(lambda a: a, v)
    k = v2["params"]["blocks"]["scan"]["MLPBlock_0"]["Linear_0"]["kernel"]
    v2["params"]["blocks"]["scan"]["MLPBlock_0"]["Linear_0"]["kernel"] = k.at[3].add(1.0)  # block 4
    logits2 = LDN(cfg).apply(v2, x)
    np.testing.assert_allclose(logits[:4], logits2[:4], rtol=1e-6)
    assert not np.allclose(logits[4], logits2[4])


def test_im2col_and_native_convolution_agree():
    x = jax.random.normal(jax.random.key(0), (2, 7, 6, 5))
    for size in (1, 3, 5):
        k = jax.random.normal(jax.random.key(size), (size, size, 5, 4))
        np.testing.assert_allclose(conv_im2col(x, k), conv_xla(x, k), rtol=1e-4, atol=1e-4)
    # ... and so do whole models holding the same parameters, forward and backward.
    a, b = cnn(3, conv_impl="im2col"), cnn(3, conv_impl="xla")
    xs = jax.random.normal(jax.random.key(2), (4, 8, 8, 1))
    v = LDN(a).init(jax.random.key(3), xs)
    np.testing.assert_allclose(LDN(a).apply(v, xs), LDN(b).apply(v, xs), rtol=1e-4, atol=1e-4)
    g = lambda c: jax.grad(lambda p: jnp.sum(LDN(c).apply({**v, "params": p}, xs) ** 2))(v["params"])  # noqa: E731
    for ga, gb in zip(jax.tree_util.tree_leaves(g(a)), jax.tree_util.tree_leaves(g(b))):
        np.testing.assert_allclose(ga, gb, rtol=2e-3, atol=2e-4)


def test_unrolled_scan_computes_the_same_function():
    x = jax.random.normal(jax.random.key(0), (5, 2))
    v = LDN(mlp(6)).init(jax.random.key(1), x)
    np.testing.assert_allclose(LDN(mlp(6)).apply(v, x), LDN(mlp(6, unroll=6)).apply(v, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(LDN(mlp(6)).apply(v, x), LDN(mlp(6, remat=True)).apply(v, x), rtol=1e-5, atol=1e-6)


def test_conv_impl_is_chosen_per_backend():
    assert resolve_conv_impl("auto", "cpu") == "im2col"
    assert resolve_conv_impl("auto", "gpu") == "xla"
    assert resolve_conv_impl("xla", "cpu") == "xla"
    with pytest.raises(ValueError, match="conv_impl"):
        resolve_conv_impl("fft")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_depth=-1), "max_depth"),
        (dict(max_depth=2.5), "max_depth"),
        (dict(width=0), "width"),
        (dict(num_classes=1), "num_classes"),
        (dict(input_shape=(2, 2)), "input_shape"),
        (dict(arch="rnn"), "arch"),
        (dict(conv_impl="fft"), "conv_impl"),
    ],
)
def test_invalid_configs_are_rejected(kwargs, match):
    base = dict(arch="mlp", max_depth=3, num_classes=2, input_shape=(2,))
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{**base, **kwargs})


def test_wrong_input_shape_is_reported():
    cfg = mlp(2)
    v = LDN(cfg).init(jax.random.key(0), jnp.zeros((1, 2)))
    with pytest.raises(AssertionError, match="shape"):
        LDN(cfg).apply(v, jnp.zeros((4, 3)))


def reference_cnn_parameter_count(max_depth: int, in_channels: int, width: int = 64, bottleneck: int = 32,
                                  classes: int = 10) -> int:
    """Trainable parameters of the reference code's CNN (arch_uncert), layer by layer."""
    conv = lambda k, c_in, c_out: k * k * c_in * c_out + c_out  # noqa: E731  (PyTorch Conv2d: bias)
    bn = lambda c: 2 * c  # noqa: E731  (scale and shift)
    input_block = conv(5, in_channels, width)
    block = bn(width) + conv(1, width, bottleneck) + bn(bottleneck) + conv(3, bottleneck, bottleneck) \
        + bn(bottleneck) + conv(1, bottleneck, width)
    output_block = (width * width + width) + bn(width) + (width * classes + classes)
    return input_block + max_depth * block + output_block


@pytest.mark.parametrize("shape, maps", [((28, 28, 1), 12), ((32, 32, 3), 14)])
def test_cnn_is_the_reference_network(shape, maps):
    """Unpadded 5x5 input convolution + 2x2 pool (12x12 maps on MNIST), biases in every conv."""
    cfg = ModelConfig("cnn", 4, 10, shape)
    x = jnp.zeros((2, *shape))
    v = LDN(cfg).init(jax.random.key(0), x)
    _, inter = LDN(cfg).apply(v, x, capture_intermediates=lambda m, _: m.name == "input", mutable=["intermediates"])
    conv_out = inter["intermediates"]["input"]["__call__"][0]
    assert conv_out.shape == (2, 2 * maps, 2 * maps, 64)  # the pool halves it to maps x maps
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(v["params"]))
    assert n_params == reference_cnn_parameter_count(4, shape[-1])
    block = v["params"]["blocks"]["scan"]["BottleneckBlock_0"]
    assert {"Linear_0", "Conv_0", "Linear_1"} <= set(block) and all("bias" in block[k] for k in block if "BatchNorm" not in k)


def test_last_head_only_is_the_last_row_of_every_head():
    from vdjax.depth.prune import last_head_only

    cfg = cnn(3)
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    v = LDN(cfg).init(jax.random.key(1), x)
    _, stats = LDN(cfg).apply(v, x, train=True, mutable=["batch_stats"])  # per-depth head statistics differ
    v = {**v, **stats}
    last_cfg, last_v = last_head_only(cfg, v)
    out = LDN(last_cfg).apply(last_v, x)
    assert out.shape == (1, 4, 10)
    np.testing.assert_allclose(out[0], LDN(cfg).apply(v, x)[-1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="6x6"):
        ModelConfig("cnn", 1, 10, (5, 5, 1))
