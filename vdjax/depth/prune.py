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


def prune_variables(variables: dict[str, Any], depth: int, per_depth_head: bool = True,
                    config: Model | None = None) -> dict[str, Any]:
    """Keeps blocks 1..depth of the stacked 'blocks' (every leaf has the leading depth axis), the
    stem, the head, and the head statistics of depths 0..depth (all of them when shared). A staged
    `config` keeps the stages up to the one of block `depth`, that one cut after its blocks, with
    its exit's per-depth statistics; later stages go entirely."""
    out = {}
    for collection, tree in variables.items():
        tree = dict(tree)
        if "blocks" in tree:
            tree["blocks"] = _keep_blocks(tree["blocks"], depth)
        if "backbone" in tree and config is not None and config.stages:
            tree["backbone"] = _prune_stages(dict(tree["backbone"]), config, depth, collection == "batch_stats")
            if not tree["backbone"]:  # no statistics left in the stages kept: the tree a fresh init gives
                del tree["backbone"]
        if "blocks" in tree and tree["blocks"] is None:
            del tree["blocks"]
        if collection == "batch_stats" and "head" in tree and per_depth_head:
            tree["head"] = jax.tree_util.tree_map(lambda a: a[: depth + 1], tree["head"])
        out[collection] = tree
    return out


def _keep_blocks(blocks: Any, k: int) -> Any:
    return None if k == 0 else jax.tree_util.tree_map(lambda a: a[:k], blocks)


def _prune_stages(backbone: dict[str, Any], config: Model, depth: int, statistics: bool) -> dict[str, Any]:
    last, kept = config.stage_of(depth)
    for s in range(len(config.stages)):
        name = f"stage_{s}"
        if name not in backbone:
            continue
        if s > last:
            del backbone[name]
            continue
        stage = dict(backbone[name])
        n = kept if s == last else config.stages[s].max_blocks
        if "blocks" in stage:
            stage["blocks"] = _keep_blocks(stage["blocks"], n)
            if stage["blocks"] is None:
                del stage["blocks"]
        if "exit" in stage and statistics:  # exit parameters are shared; statistics have a row per depth read
            stage["exit"] = jax.tree_util.tree_map(lambda a: a[: n + (s == 0)], stage["exit"])
        if stage:
            backbone[name] = stage
        else:  # a stage left with no variables of this collection (its blocks cut, no exit statistics)
            del backbone[name]
    return backbone


def last_head_only(config: Model, variables: dict[str, Any]) -> tuple[Model, dict[str, Any]]:
    """The same network computing only its deepest output (a DDN as deployed): the head's
    per-depth statistics cut to the last row (shared ones kept), and a staged network's last exit
    statistics too. Its logits are row -1 of the full network's."""
    if config.heads == "last":
        return config, variables
    out = {c: dict(t) for c, t in variables.items()}
    stats = out.get("batch_stats", {})
    if "head" in stats and config.head_norm == "per_depth":
        stats["head"] = jax.tree_util.tree_map(lambda a: a[-1:], stats["head"])
    if config.stages and "backbone" in stats:
        stats["backbone"] = dict(stats["backbone"])
        name = f"stage_{len(config.stages) - 1}"
        if "exit" in stats["backbone"].get(name, {}):
            stage = dict(stats["backbone"][name])
            stage["exit"] = jax.tree_util.tree_map(lambda a: a[-1:], stage["exit"])
            stats["backbone"][name] = stage
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
        config=config.truncated(depth),
        variables=prune_variables(variables, depth, config.head_norm == "per_depth", config),
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
