"""The causal transformer LM modules (`vdjax.nn.transformer`): shapes, causality checked position
by position, the one-branch form of a pre-norm layer against its two-sublayer form, the zero
start of the output projections, dropout modes, and use through `nnx_module` with Linen's
init / apply."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vdjax.nn.nnx import nnx_module
from vdjax.nn.transformer import CausalBlock, LMHead, TokenStem

V, T, W, H = 11, 6, 8, 2


def tokens(batch: int = 2, seed: int = 0) -> jnp.ndarray:
    return jax.random.randint(jax.random.key(seed), (batch, T), 0, V, dtype=jnp.int32)


def small_block(seed: int = 1, **kw) -> CausalBlock:
    """Random output projections (not the zero start), so that every path carries signal."""
    return CausalBlock(W, H, out_init_std=0.3, rngs=nnx.Rngs(seed), **kw)


def test_shapes():
    stem, block, head = TokenStem(V, T, W, rngs=nnx.Rngs(0)), small_block(), LMHead(W, V, rngs=nnx.Rngs(2))
    a = stem(tokens())
    assert a.shape == (2, T, W) and a.dtype == jnp.float32
    assert block(a).shape == (2, T, W)
    assert head(a).shape == (2, T, V)
    assert stem(tokens()[:, :3]).shape == (2, 3, W)  # shorter windows use the first positions
    with pytest.raises(ValueError, match="positions for 6 tokens"):
        stem(jnp.zeros((1, T + 1), jnp.int32))


def test_stem_takes_token_ids_stored_as_floats():
    stem = TokenStem(V, T, W, rngs=nnx.Rngs(0))
    x = tokens()
    np.testing.assert_array_equal(stem(x), stem(x.astype(jnp.float32)))
    expected = stem.token.embedding[x[1, 4]] + stem.position.embedding[4]
    np.testing.assert_allclose(stem(x)[1, 4], expected, rtol=1e-6)


def test_block_is_causal_position_by_position():
    block, a = small_block(), jax.random.normal(jax.random.key(3), (1, T, W))
    out, step = block(a), jax.random.normal(jax.random.key(7), (W,))  # not constant: LayerNorm ignores that
    for t in range(T):
        changed = block(a.at[0, t].add(step))
        moved = np.abs(np.asarray(changed - out)).max(axis=-1)[0]
        np.testing.assert_array_equal(moved[:t], 0.0)  # positions before t do not see token t
        assert moved[t] > 1e-3 and (t == T - 1 or moved[t + 1:].min() > 1e-6)


def test_stack_is_causal_from_tokens_to_logits():
    stem, head = TokenStem(V, T, W, rngs=nnx.Rngs(0)), LMHead(W, V, rngs=nnx.Rngs(2))
    blocks = [small_block(seed) for seed in range(3)]

    def logits(x):
        a = stem(x)
        for b in blocks:
            a = a + b(a)
        return head(a)

    x = tokens(1)
    for t in range(T):
        other = logits(x.at[0, t].set((x[0, t] + 1) % V))
        np.testing.assert_array_equal(other[0, :t], logits(x)[0, :t])
        assert not np.allclose(other[0, t], logits(x)[0, t])


def test_branch_is_the_two_sublayer_pre_norm_layer():
    block, a = small_block(), jax.random.normal(jax.random.key(4), (2, T, W))
    mask = jnp.tril(jnp.ones((T, T), bool))
    h = a + block.attn(block.ln1(a), mask=mask)
    layer = h + block.down(nnx.gelu(block.up(block.ln2(h))))
    np.testing.assert_allclose(a + block(a), layer, rtol=1e-5, atol=1e-5)


def test_output_projections_start_at_zero():
    block, a = CausalBlock(W, H, rngs=nnx.Rngs(0)), jax.random.normal(jax.random.key(5), (2, T, W))
    np.testing.assert_array_equal(block(a), 0.0)
    grads = nnx.grad(lambda m: jnp.sum(m(a) ** 2 + m(a)))(block)
    assert np.abs(grads.attn.out.kernel.get_value()).max() > 0 and np.abs(grads.down.kernel.get_value()).max() > 0
    with pytest.raises(ValueError, match="not a multiple"):
        CausalBlock(W, 3, rngs=nnx.Rngs(0))


def test_dropout_follows_the_nnx_mode_and_the_call_flag():
    block, a = small_block(dropout_rate=0.5), jax.random.normal(jax.random.key(6), (2, T, W))
    plain = small_block()
    block.eval()
    np.testing.assert_array_equal(block(a), plain(a))  # same seed: same parameters
    assert not np.allclose(block(a, deterministic=False), plain(a))
    block.train()
    assert not np.allclose(block(a), plain(a))
    np.testing.assert_array_equal(block(a, deterministic=True), plain(a))


def test_through_nnx_module_with_linen_init_and_apply():
    stem, block = nnx_module(TokenStem, V, T, W), nnx_module(CausalBlock, W, H)
    head = nnx_module(LMHead, W, V)
    hash((stem, block, head))  # a Network is a jit static argument
    x = tokens().astype(jnp.float32)  # as a data pipeline of float inputs hands them over
    vs = stem.init(jax.random.key(0), x)
    a = stem.apply(vs, x)
    assert a.shape == (2, T, W)
    vb = block.init(jax.random.key(1), a)
    assert set(vb["params"]) == {"ln1", "attn", "ln2", "up", "down"} and "batch_stats" not in vb
    np.testing.assert_array_equal(block.apply(vb, a), 0.0)  # the zero start
    assert head.apply(head.init(jax.random.key(2), a), a).shape == (2, T, V)
    # Parameters stored by Linen and an NNX module given the same values compute the same.
    causal = nnx_module(CausalBlock, W, H, out_init_std=0.3)
    vc = causal.init(jax.random.key(3), a)
    module = nnx.eval_shape(lambda: CausalBlock(W, H, out_init_std=0.3, rngs=nnx.Rngs(0)))
    flat = {tuple(k): v for k, v in jax.tree_util.tree_flatten_with_path(vc["params"])[0]}
    for path, node in nnx.iter_graph(module):
        if isinstance(node, nnx.Param):
            node.set_value(flat[tuple(jax.tree_util.DictKey(str(p)) for p in path)])
    np.testing.assert_allclose(causal.apply(vc, a), module(a), rtol=1e-6)


def test_dropout_through_nnx_module_draws_from_the_linen_stream():
    block = nnx_module(CausalBlock, W, H, dropout_rate=0.5, out_init_std=0.3)
    a = jax.random.normal(jax.random.key(8), (2, T, W))
    v = block.init(jax.random.key(0), a)
    np.testing.assert_array_equal(block.apply(v, a), block.apply(v, a, deterministic=True))
    one = block.apply(v, a, deterministic=False, rngs={"dropout": jax.random.key(1)})
    two = block.apply(v, a, deterministic=False, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(one, two) and not np.allclose(one, block.apply(v, a))
