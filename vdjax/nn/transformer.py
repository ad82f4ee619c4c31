"""A small causal pre-norm transformer language model as Flax NNX modules, in the three parts
of an LDN: a stem (tokens -> a_0), a residual branch (a_d = a_(d-1) + f(a_(d-1))) and a head
(a_d -> next-token logits at every position). Pass each through `vdjax.nn.nnx.nnx_module`:

    stem = nnx_module(TokenStem, vocab_size, seq_len, width)
    block = nnx_module(CausalBlock, width, num_heads)
    head = nnx_module(LMHead, width, vocab_size)

Position t of every output sees the tokens 0..t only, so one forward pass scores all T
next-token predictions of a window.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class TokenStem(nnx.Module):
    """Token embedding plus a learned positional embedding: int tokens [B, T] -> [B, T, width]."""

    def __init__(self, vocab_size: int, seq_len: int, width: int, *, rngs: nnx.Rngs):
        self.seq_len = seq_len
        self.token = nnx.Embed(vocab_size, width, rngs=rngs)
        self.position = nnx.Embed(seq_len, width, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        # Token ids may arrive as floats (a data pipeline that stores every input as float32).
        tokens = tokens.astype(jnp.int32)
        length = tokens.shape[-1]
        if length > self.seq_len:
            raise ValueError(f"TokenStem has positions for {self.seq_len} tokens, got sequences of {length}")
        return self.token(tokens) + self.position(jnp.arange(length))


class CausalBlock(nnx.Module):
    """The residual branch f(a) of one pre-norm transformer layer, [B, T, width] -> [B, T, width].

    The usual layer, h = a + attn(ln1(a)) and a + f(a) = h + mlp(ln2(h)), written as the one branch
    f(a) = attn(ln1(a)) + mlp(ln2(a + attn(ln1(a)))), since the network adds a itself.

    `out_init_std` (default 0) initialises the two output projections (attention's and the MLP's
    last Linear): with zeros, every block starts as f = 0, so a stack of any depth starts as the
    stem alone, the residual stream's scale and the gradients do not grow with depth, and every
    depth's head sees the same features at first. Plain SGD (no per-parameter step normalisation)
    is what makes a stable start matter; the projections still get gradients at step one, and the
    rest of the block from step two.

    Dropout (`dropout_rate` > 0) acts on both sublayers' outputs, in NNX's training mode
    (`module.train()`, or `deterministic=False`; vdjax sets it from its own `train` flag).
    """

    def __init__(self, width: int, num_heads: int, mlp_ratio: int = 4, dropout_rate: float = 0.0,
                 out_init_std: float = 0.0, *, rngs: nnx.Rngs):
        if width % num_heads:
            raise ValueError(f"width {width} is not a multiple of num_heads {num_heads}")
        out_init = (nnx.initializers.zeros if out_init_std == 0.0
                    else nnx.initializers.normal(stddev=out_init_std))
        self.ln1 = nnx.LayerNorm(width, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads, width, decode=False, out_kernel_init=out_init, rngs=rngs)
        self.ln2 = nnx.LayerNorm(width, rngs=rngs)
        self.up = nnx.Linear(width, mlp_ratio * width, rngs=rngs)
        self.down = nnx.Linear(mlp_ratio * width, width, kernel_init=out_init, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs) if dropout_rate > 0 else None

    def __call__(self, a: jax.Array, deterministic: bool | None = None) -> jax.Array:
        """f(a); `deterministic` None keeps the module's NNX mode (`train()` / `eval()`)."""
        mask = nnx.make_causal_mask(a[..., 0])  # [B, 1, T, T]: position t attends to 0..t
        attended = self._drop(self.attn(self.ln1(a), mask=mask), deterministic)
        h = a + attended
        return attended + self._drop(self.down(nnx.gelu(self.up(self.ln2(h)))), deterministic)

    def _drop(self, x: jax.Array, deterministic: bool | None) -> jax.Array:
        return x if self.dropout is None else self.dropout(x, deterministic=deterministic)


class LMHead(nnx.Module):
    """Final LayerNorm and a Linear to next-token logits: [B, T, width] -> [B, T, vocab_size]."""

    def __init__(self, width: int, vocab_size: int, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.out = nnx.Linear(width, vocab_size, rngs=rngs)

    def __call__(self, a: jax.Array) -> jax.Array:
        return self.out(self.norm(a))
