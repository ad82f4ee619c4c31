"""Early exit at inference: each example stops at the first depth where it is confident enough.

A trained LDN predicts with the marginal over depths, p(y|x) = sum_d q(d) p(y|x, d). Early exit
runs the depths in order and keeps, for every example (every position, for per-position
outputs), the q-weighted marginal over the depths seen so far, renormalised:

    p_k(y|x) = sum_{d<=k} q(d) p(y|x, d) / sum_{d<=k} q(d).

The example stops at the first k where max_y p_k(y|x) >= `threshold`, or at the network's last
depth (d_opt, for a network pruned with `vdjax.prune`), and predicts p_k. Threshold 1 never
stops early: every example gets the pruned network's marginal (a confidence that rounds to 1 in
float32, a logit margin over ~17, does not count as reaching it).

`early_exit` runs this on the device: one `lax.while_loop` per stage over the blocks, which ends
as soon as every example of the batch has stopped. A batch therefore computes as deep as its
last example goes: the mean depth used per example is a lower bound on the compute, reached
with batches of one; `EarlyExit.computed` says how deep each batch went. `exit_depths` gives the
same decisions from the outputs at every depth at once (for curves over many thresholds).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from vdjax.data.core import check_inputs
from vdjax.depth.prune import PrunedLDN
from vdjax.nn.models import Model
from vdjax.nn.network import mode_keywords, stacked_block_variables


@dataclasses.dataclass(frozen=True)
class EarlyExit:
    """log_probs [N, *P, C]: each example's prediction; depth [N, *P]: the depth it stopped at;
    computed [batches]: the depth each batch of `batch_size` examples ran to."""

    log_probs: np.ndarray
    depth: np.ndarray
    computed: np.ndarray


def check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) or not 0 < threshold <= 1:
        raise ValueError(f"an early-exit threshold is a confidence in (0, 1], got {threshold!r}")
    return float(threshold)


def exit_depths(logits: jax.Array, q: jax.Array, threshold: float) -> tuple[jax.Array, jax.Array]:
    """The early-exit decision from every depth's outputs at once: [K, B, *P, C], q [K] ->
    (log_probs [B, *P, C], depth [B, *P]), K - 1 the last depth (the cap)."""
    threshold = check_threshold(threshold)
    chex.assert_shape(q, (logits.shape[0],))
    log_q = jnp.log(q).reshape((-1,) + (1,) * (logits.ndim - 1))
    seen = jax.lax.cumlogsumexp(log_q + jax.nn.log_softmax(logits, axis=-1), axis=0)
    seen = seen - jax.lax.cumlogsumexp(log_q, axis=0)  # renormalised over the depths seen
    confident = (jnp.exp(jnp.max(seen, axis=-1)) >= threshold) & (threshold < 1)
    confident = confident.at[-1].set(True)
    depth = jnp.argmax(confident, axis=0)
    picked = jnp.take_along_axis(seen, depth[None, ..., None], axis=0)[0]
    return picked, depth


def early_exit(pruned: PrunedLDN, x: np.ndarray, threshold: float, batch_size: int = 1024) -> EarlyExit:
    """Early-exit predictions of a pruned LDN (its last depth, d_opt, is the cap), on the
    device, `batch_size` examples a compiled call (see the module docstring)."""
    threshold = check_threshold(threshold)
    config = pruned.config
    x = check_inputs(x, config.input_shape, inputs=config.inputs)
    fn = _compiled(config)
    q = jnp.asarray(pruned.q, jnp.float32)
    chunks = [fn(pruned.variables, q, jnp.asarray(x[i : i + batch_size]), jnp.float32(threshold))
              for i in range(0, len(x), batch_size)]
    return EarlyExit(log_probs=np.concatenate([np.asarray(c[0]) for c in chunks]),
                     depth=np.concatenate([np.asarray(c[1]) for c in chunks]),
                     computed=np.array([int(c[2]) for c in chunks]))


@functools.lru_cache(maxsize=32)
def _compiled(config: Model):
    return jax.jit(functools.partial(_run, config.to_network()))


# ---------------------------------------------------------------------------- the loop


def _apply(module, variables: dict[str, Any], x: jax.Array) -> jax.Array:
    """A module in eval mode with the given variables (Linen or `vdjax.nn.nnx`)."""
    return module.apply(variables, x, **mode_keywords(module, False, True))


def _take(tree: Any, i: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: a[i], tree)


def _scoped(variables: dict[str, Any], *path: str) -> dict[str, Any]:
    """The variables under `path` in every collection that has it."""
    out = {}
    for collection, tree in variables.items():
        for key in path:
            tree = tree.get(key) if isinstance(tree, dict) or hasattr(tree, "get") else None
            if tree is None:
                break
        if tree is not None:
            out[collection] = tree
    return out


def _stages(net, variables):
    """Per stage: (transition, block, exit, its variables), and where the head's variables are."""
    if not net.stages:
        return [(None, net.block, None, net.max_depth, {"blocks": _scoped(variables, "blocks")})]
    out = []
    for s, stage in enumerate(net.stages):
        scope = _scoped(variables, "backbone", f"stage_{s}")
        out.append((stage.transition, stage.block, stage.exit, stage.max_blocks,
                    {k: _scoped(scope, k) for k in ("transition", "blocks", "exit")}))
    return out


def _block_vars(block, blocks: dict[str, Any], k: jax.Array) -> dict[str, Any]:
    """Block k's (0-based) variables out of the scan's stacked ones."""
    return {c: _take(t, k) for c, t in stacked_block_variables(blocks, block).items()}


def _per_depth(variables: dict[str, Any], row: Any, per_depth_stats: bool) -> dict[str, Any]:
    """A module's variables at one depth: shared parameters, statistics of that depth's row."""
    return {c: (_take(t, row) if c == "batch_stats" and per_depth_stats else t) for c, t in variables.items()}


def _run(net, variables, q, x, threshold):
    head_vars = _scoped(variables, "head")
    per_depth_head = net.head_norm == "per_depth"
    log_q = jnp.log(q)
    cap = net.max_depth

    def emit(a, exit_, exit_vars, exit_row, depth, carry):
        feat = a if net.pool is None else _apply(net.pool, {}, a)
        if exit_ is not None:
            feat = _apply(exit_, _per_depth(exit_vars, exit_row, True), feat)
        logits = _apply(net.head, _per_depth(head_vars, depth, per_depth_head), feat)
        return _update(carry, logits, log_q[depth], depth, cap, threshold)

    a = _apply(net.stem, _scoped(variables, "input"), x)
    carry = None
    start = 0
    for s, (transition, block, exit_, n, scope) in enumerate(_stages(net, variables)):
        def stage(a, carry, s=s, transition=transition, block=block, exit_=exit_, n=n, scope=scope, start=start):
            if transition is not None:
                a = _apply(transition, scope["transition"], a)
            if s == 0:
                carry = emit(a, exit_, scope.get("exit", {}), 0, 0, carry)
            if n == 0:  # no blocks (a network pruned to depth 0): the loop's body has no variables to trace
                return a, carry

            def body(state):
                k, a, carry = state
                a = a + _apply(block, _block_vars(block, scope["blocks"], k), a)
                return k + 1, a, emit(a, exit_, scope.get("exit", {}), k + (s == 0), start + k + 1, carry)

            def more(state):
                return (state[0] < n) & ~jnp.all(state[2][2])

            return jax.lax.while_loop(more, body, (jnp.int32(0), a, carry))[1:]

        if carry is None:
            carry = _initial(net, x)
            a, carry = stage(a, carry)
        else:
            out_shape = jax.eval_shape(lambda a, c: stage(a, c)[0], a, carry)
            a, carry = jax.lax.cond(jnp.all(carry[2]), lambda a, c: (jnp.zeros(out_shape.shape, out_shape.dtype), c),
                                    stage, a, carry)
        start += n
    pred, used, _, computed, _, _ = carry
    return pred, used, computed


def _initial(net, x):
    shape = (x.shape[0], *net.target_shape)
    return (jnp.zeros(shape + (net.num_classes,), jnp.float32), jnp.zeros(shape, jnp.int32),
            jnp.zeros(shape, bool), jnp.int32(0), jnp.full(shape + (net.num_classes,), -jnp.inf, jnp.float32),
            jnp.float32(-jnp.inf))


def _update(carry, logits, log_q_d, depth, cap, threshold):
    """Depth `depth`'s outputs into the running marginal; examples that reach the threshold (or
    the cap) stop with it. carry: (prediction, depth used, stopped, depth computed, log of the
    unnormalised marginal so far, log of the q mass so far)."""
    pred, used, done, _, seen, mass = carry
    seen = jnp.logaddexp(seen, log_q_d + jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))
    mass = jnp.logaddexp(mass, log_q_d)
    current = seen - mass
    confident = (jnp.exp(jnp.max(current, axis=-1)) >= threshold) & (threshold < 1)  # 1: only the cap stops
    stop = ~done & (confident | (depth == cap))
    pred = jnp.where(stop[..., None], current, pred)
    used = jnp.where(stop, depth, used)
    return pred, used, done | stop, jnp.int32(depth), seen, mass
