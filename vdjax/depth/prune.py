"""Choosing d_opt, pruning the stacked block parameters, and marginal prediction.

Pruning to d_opt keeps blocks 1..d_opt (a slice of every stacked leaf), so the pruned model
is a genuine `max_depth = d_opt` network: its forward pass runs d_opt blocks, not D. The
posterior mass of the removed depths is folded onto d_opt, and predictions marginalise over
d <= d_opt, which costs one forward pass of the pruned network.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from vdjax.depth.metrics import marginal_log_probs
from vdjax.nn.models import Model, eval_logits

Rule = Literal["95", "expected"]


def d_opt_95(q: np.ndarray, threshold: float = 0.95) -> int:
    """The shallowest depth whose q(d) reaches `threshold` times the largest q(d)."""
    q = np.asarray(q)
    return int(np.argmax(q >= threshold * q.max()))


def expected_depth(q: np.ndarray) -> int:
    """round(sum_d d q(d)): the paper's alternative pruning depth."""
    q = np.asarray(q)
    return int(np.round(np.sum(np.arange(len(q)) * q)))


def select_depth(q: np.ndarray, rule: Rule = "95") -> int:
    if rule == "95":
        return d_opt_95(q)
    if rule == "expected":
        return expected_depth(q)
    raise ValueError(f"pruning rule must be '95' or 'expected', got {rule!r}")


def fold_posterior(q: np.ndarray, depth: int) -> np.ndarray:
    """q restricted to 0..depth with the mass of every deeper depth added onto `depth`."""
    q = np.asarray(q)
    _check_depth(depth, len(q) - 1)
    folded = np.array(q[: depth + 1], copy=True)
    folded[depth] += q[depth + 1 :].sum()
    return folded


def prune_variables(variables: dict[str, Any], depth: int, per_depth_head: bool = True) -> dict[str, Any]:
    """Keeps blocks 1..depth of the stacked 'blocks' (every leaf has the leading depth axis), the
    stem, the head, and the head statistics of depths 0..depth (all of them when shared)."""
    out = {}
    for collection, tree in variables.items():
        tree = dict(tree)
        if "blocks" in tree:
            if depth == 0:
                del tree["blocks"]
            else:
                tree["blocks"] = jax.tree_util.tree_map(lambda a: a[:depth], tree["blocks"])
        if collection == "batch_stats" and "head" in tree and per_depth_head:
            tree["head"] = jax.tree_util.tree_map(lambda a: a[: depth + 1], tree["head"])
        out[collection] = tree
    return out


def last_head_only(config: Model, variables: dict[str, Any]) -> tuple[Model, dict[str, Any]]:
    """The same network computing only its deepest output (a DDN as deployed): the head's
    per-depth statistics cut to the last row (shared ones kept). Its logits are row -1 of the
    full network's."""
    if config.heads == "last" or config.head_norm == "shared":
        return config.replace(heads="last"), variables
    out = {c: dict(t) for c, t in variables.items()}
    if "head" in out.get("batch_stats", {}):
        out["batch_stats"]["head"] = jax.tree_util.tree_map(lambda a: a[-1:], out["batch_stats"]["head"])
    return config.replace(heads="last"), out


@dataclasses.dataclass(frozen=True)
class PrunedLDN:
    """A network cut to `config.max_depth = d_opt` blocks, with its folded posterior `q`."""

    config: Model
    variables: dict[str, Any]
    q: np.ndarray

    @property
    def d_opt(self) -> int:
        return self.config.max_depth


def prune(config: Model, variables: dict[str, Any], q: np.ndarray, depth: int) -> PrunedLDN:
    """Cuts a trained LDN to `depth` blocks (use `select_depth` for d_opt)."""
    _check_depth(depth, config.max_depth)
    return PrunedLDN(
        config=config.replace(max_depth=depth),
        variables=prune_variables(variables, depth, config.head_norm == "per_depth"),
        q=fold_posterior(q, depth),
    )


def predict_log_probs(
    config: Model, variables: dict[str, Any], q: np.ndarray, x: np.ndarray, batch_size: int = 1024
) -> np.ndarray:
    """Marginal log p(y|x) over the depths of `q` (length max_depth + 1), in eval mode."""
    logits = eval_logits(config, variables, x, batch_size)
    return np.asarray(_marginal(logits, jnp.asarray(q)))


_marginal = jax.jit(marginal_log_probs)


def pruned_log_probs(logits: np.ndarray, q: np.ndarray, depth: int) -> jax.Array:
    """What the network pruned to `depth` predicts, from the full network's eval logits
    [D+1, B, C]: pruning keeps blocks 1..depth, so its logits are the first depth + 1 rows,
    marginalised under the folded posterior."""
    return marginal_log_probs(jnp.asarray(logits)[: depth + 1], jnp.asarray(fold_posterior(q, depth)))


def _check_depth(depth: int, max_depth: int) -> None:
    if not 0 <= depth <= max_depth:
        raise ValueError(f"pruning depth must be in [0, {max_depth}], got {depth}")
