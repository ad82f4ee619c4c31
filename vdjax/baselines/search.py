"""NAS baselines on the depth search space: DARTS, Tensorflow-DARTS mixed ops and SMASH.

Every strategy searches over the depth d in {0..D} of the *same* stacked-block LDN model: one
forward pass gives the logits o_d of every depth ([D+1, B, C]); these are the candidate
"operations" of a single mixed op, and only the search strategy differs:

- 'darts1' / 'darts2': DARTS. The mixed output is sum_d softmax(alpha)_d o_d; the weights
  train on the train split, alpha on the validation split with Adam, first order (alpha's
  gradient at the current weights) or second order (through one unrolled SGD step of the
  weights, w' = w - xi grad_w L_train; exact by autodiff, or DARTS's finite-difference
  Hessian-vector approximation with `hypergradient='finite_difference'`).
- 'binary': BinaryConnect + DARTS (Tensorflow-DARTS BinaryMixedOp): one depth sampled per step
  from softmax(alpha) drives the output; alpha gets the straight-through / ProxylessNAS
  gradient (gates g = onehot + p - stop_gradient(p)).
- 'binary_masked': only `num_eval_samples` sampled depths take part in the architecture
  update (gates renormalised over them); only their alpha entries change.
- 'proxyless': binary_masked with ProxylessNAS's post-processing: the updated entries are
  shifted so the total probability of the sampled set is unchanged.
- 'moving_average': binary_masked, with the loss of the depths not evaluated this step taken
  from an exponential moving average of their past losses, so every alpha entry is updated.
- 'gumbel': Gumbel-softmax relaxed gates softmax((alpha + G) / tau).
- 'smash': SMASH-style one-shot: shared weights trained with a uniformly random depth per
  step; then `smash_samples` random depths are ranked by validation log-likelihood under the
  shared weights (SMASH's HyperNet is replaced by weight sharing across depths, which is
  exact on this search space).

The chosen depth (argmax alpha, or SMASH's best ranked depth) is then retrained from scratch
as a deterministic-depth network on the whole training set, as DARTS and SMASH do.

The cost of a search is counted as it runs (`vdjax.training.cost.Cost` in the state): each function that
runs the network adds its passes. Per step, the weight update is one gradient evaluation; the
architecture update is one forward pass for every strategy whose alpha gradient needs no weight
gradient (darts1 and the sampled/relaxed variants: the logits are constants in alpha), two
gradient evaluations and one Hessian-vector product for exact second-order DARTS, four gradient
evaluations for its finite-difference form, and nothing for SMASH, which ranks depths with one
forward pass over the validation set at the end.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vdjax.training.cost import Cost, clock
from vdjax.nn.models import LDN, Model
from vdjax.depth.posterior import per_depth_nll

STRATEGIES = ("darts1", "darts2", "binary", "binary_masked", "proxyless", "moving_average", "gumbel", "smash")
_MASKED = ("binary_masked", "proxyless", "moving_average")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """How a strategy searches. Weights use the paper's SGD; alpha uses DARTS's Adam."""

    strategy: str
    steps: int = 2000  # weight updates (each paired with one architecture update)
    batch_size: int = 512
    learning_rate: float = 0.1
    momentum: float = 0.5
    arch_learning_rate: float = 3e-3
    arch_weight_decay: float = 1e-3
    unroll_lr: float | None = None  # xi of second-order DARTS; None: the weights' learning rate
    hypergradient: str = "exact"  # darts2: 'exact' (autodiff) or 'finite_difference' (DARTS eq. 8)
    num_eval_samples: int = 2  # masked variants: depths evaluated per architecture update
    gumbel_temperature: float = 1.0
    ema_rate: float = 0.05  # moving_average: weight of the newest loss
    smash_samples: int = 500  # depths sampled (with replacement) for SMASH's ranking
    fd_radius: float = 0.01  # darts2 'finite_difference': the step eps = fd_radius / |grad_w' L_val| (DARTS: 0.01)

    @property
    def xi(self) -> float:
        """Second-order DARTS's inner learning rate: `unroll_lr`, or else the weights' rate."""
        return self.learning_rate if self.unroll_lr is None else self.unroll_lr

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown search strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if self.hypergradient not in ("exact", "finite_difference"):
            raise ValueError(f"hypergradient must be 'exact' or 'finite_difference', got {self.hypergradient!r}")
        if self.num_eval_samples < 2:
            raise ValueError("num_eval_samples must be >= 2 (one sampled depth has no architecture gradient)")
        if self.gumbel_temperature <= 0 or not 0 < self.ema_rate <= 1:
            raise ValueError("gumbel_temperature must be > 0 and ema_rate in (0, 1]")
        if self.fd_radius <= 0:
            raise ValueError(f"fd_radius must be > 0, got {self.fd_radius}")


class SearchState(flax.struct.PyTreeNode):
    params: Any  # the model's weights
    batch_stats: Any
    alpha: jax.Array  # [D+1] architecture logits
    opt_w: optax.OptState
    opt_a: optax.OptState
    ema: jax.Array  # [D+1] moving-average losses (moving_average only)
    key: jax.Array
    step: jax.Array
    cost: Cost  # network passes run so far


def _optimizers(cfg: SearchConfig):
    weights = optax.sgd(cfg.learning_rate, momentum=cfg.momentum)
    arch = optax.chain(optax.add_decayed_weights(cfg.arch_weight_decay),
                       optax.adam(cfg.arch_learning_rate, b1=0.5, b2=0.999))
    return weights, arch


def init_search(key: jax.Array, model_config: Model, cfg: SearchConfig) -> SearchState:
    init_key, key = jax.random.split(key)
    variables = LDN(model_config).init(init_key, jnp.zeros((1, *model_config.input_shape)), train=False)
    alpha = jnp.zeros((model_config.max_depth + 1,), jnp.float32)
    opt_w, opt_a = _optimizers(cfg)
    return SearchState(
        params=variables["params"], batch_stats=variables.get("batch_stats", {}), alpha=alpha,
        opt_w=opt_w.init(variables["params"]), opt_a=opt_a.init(alpha),
        ema=jnp.full_like(alpha, jnp.nan), key=key, step=jnp.zeros((), jnp.int32), cost=Cost.zero(),
    )


def _train_logits(model_config, params, batch_stats, x):
    """Logits of every depth in train mode (batch statistics) and the new running statistics."""
    logits, upd = LDN(model_config).apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                          mutable=["batch_stats"])
    return logits, upd.get("batch_stats", {})


def mixed_loss(logits: jax.Array, labels: jax.Array, gates: jax.Array) -> jax.Array:
    """Cross-entropy of the mixed output sum_d gates_d o_d: the DARTS mixed op over depths."""
    out = jnp.einsum("d,dbc->bc", gates, logits)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(out), labels[:, None], axis=-1))


def _sample_set(key, p, k):
    """k distinct depths drawn without replacement from p, as an index array and a mask."""
    idx = jax.random.choice(key, p.shape[0], (k,), replace=False, p=p)
    return idx, jnp.zeros(p.shape, bool).at[idx].set(True)


def gates(cfg: SearchConfig, alpha: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The mixing weights over depths for one step, and the mask of alpha entries they involve."""
    p = jax.nn.softmax(alpha)
    all_on = jnp.ones(alpha.shape, bool)
    s = cfg.strategy
    if s in ("darts1", "darts2"):
        return p, all_on
    if s == "binary":
        hard = jax.nn.one_hot(jax.random.categorical(key, alpha), alpha.shape[0])
        return hard + p - jax.lax.stop_gradient(p), all_on
    if s in _MASKED:
        k_set, k_pick = jax.random.split(key)
        idx, mask = _sample_set(k_set, jax.lax.stop_gradient(p), min(cfg.num_eval_samples, alpha.shape[0]))
        p_set = jax.nn.softmax(alpha[idx])
        hard = jax.nn.one_hot(jax.random.categorical(k_pick, alpha[idx]), idx.shape[0])
        g = jnp.zeros_like(alpha).at[idx].set(hard + p_set - jax.lax.stop_gradient(p_set))
        return g, mask
    if s == "gumbel":
        g = jax.random.gumbel(key, alpha.shape)
        return jax.nn.softmax((alpha + g) / cfg.gumbel_temperature), all_on
    if s == "smash":
        return jax.nn.one_hot(jax.random.randint(key, (), 0, alpha.shape[0]), alpha.shape[0]), all_on
    raise ValueError(s)


# ---------------------------------------------------------------------------- architecture gradients


Batch = tuple[jax.Array, jax.Array]  # (inputs, labels)


def darts_objective(model_config: Model, params, batch_stats, alpha: jax.Array, batch: Batch) -> jax.Array:
    """DARTS's loss on one batch: the mixed output with softmax(alpha) gates (train-mode BN)."""
    logits, _ = _train_logits(model_config, params, batch_stats, batch[0])
    return mixed_loss(logits, batch[1], jax.nn.softmax(alpha))


def _unrolled(model_config: Model, xi: float, state: SearchState, train: Batch):
    """w' = w - xi grad_w L_train(w, alpha): one SGD step of the weights."""
    g = jax.grad(darts_objective, argnums=1)(model_config, state.params, state.batch_stats, state.alpha, train)
    return jax.tree_util.tree_map(lambda w, gw: w - xi * gw, state.params, g)


def unrolled_val_objective(model_config: Model, xi: float, state: SearchState, train: Batch, val: Batch
                           ) -> jax.Array:
    """L_val(w - xi grad_w L_train(w, alpha), alpha) at the state's weights and alpha: second-order
    DARTS's objective in alpha."""
    return darts_objective(model_config, _unrolled(model_config, xi, state, train), state.batch_stats, state.alpha,
                           val)


def darts2_hypergradient(model_config: Model, cfg: SearchConfig, state: SearchState, train: Batch, val: Batch
                         ) -> jax.Array:
    """The gradient in alpha of `unrolled_val_objective` at xi = `cfg.xi`.

    `cfg.hypergradient` 'exact': autodiff through the unrolled step (a Hessian-vector product).
    'finite_difference': DARTS eq. 8, grad_a L_val(w', a) - xi (grad_a L_train(w+, a) -
    grad_a L_train(w-, a)) / (2 eps), w+- = w +- eps grad_w' L_val(w', a), eps = fd_radius / |grad_w' L_val|
    (DARTS: 0.01). The ReLU kinks make it inexact at that radius (about 10-20% off on spirals).
    """
    xi = cfg.xi
    if cfg.hypergradient == "exact":
        return jax.grad(lambda a: unrolled_val_objective(model_config, xi, state.replace(alpha=a), train, val)
                        )(state.alpha)
    unrolled = _unrolled(model_config, xi, state, train)
    dw, da = jax.grad(darts_objective, argnums=(1, 3))(model_config, unrolled, state.batch_stats, state.alpha, val)
    eps = cfg.fd_radius / jnp.maximum(optax.tree.norm(dw), 1e-12)
    w_plus = jax.tree_util.tree_map(lambda w, v: w + eps * v, state.params, dw)
    w_minus = jax.tree_util.tree_map(lambda w, v: w - eps * v, state.params, dw)
    grad_a = jax.grad(darts_objective, argnums=3)
    hvp = (grad_a(model_config, w_plus, state.batch_stats, state.alpha, train)
           - grad_a(model_config, w_minus, state.batch_stats, state.alpha, train)) / (2 * eps)
    return da - xi * hvp


# Passes run by `darts2_hypergradient`: 'exact' differentiates through the inner weight gradient
# (train) and the validation loss at the unrolled weights, and backpropagates through the inner
# gradient once more; 'finite_difference' takes that inner gradient, the validation gradient
# and two alpha gradients at w +- eps v.
_DARTS2_PASSES = {"exact": {"gradient": 2, "hvp": 1}, "finite_difference": {"gradient": 4}}


def _arch_grad(cfg: SearchConfig, model_config: Model, state: SearchState, key: jax.Array, train: Batch,
               val: Batch):
    """(gradient in alpha, mask of entries to update, new ema, cost of the passes run) for one
    architecture step."""
    xv, yv = val
    if cfg.strategy == "darts2":
        g = darts2_hypergradient(model_config, cfg, state, train, val)
        return g, jnp.ones_like(state.alpha, bool), state.ema, state.cost.add(**_DARTS2_PASSES[cfg.hypergradient])
    # The logits are constants in alpha: one forward pass, no backward pass through the network.
    logits, _ = _train_logits(model_config, state.params, state.batch_stats, xv)
    logits = jax.lax.stop_gradient(logits)
    cost = state.cost.add(forward=1)
    if cfg.strategy == "moving_average":
        _, mask = gates(cfg, state.alpha, key)
        losses = per_depth_nll(logits, yv)
        ema = jnp.where(jnp.isnan(state.ema), losses, state.ema)  # first step: every depth's loss
        ema = jnp.where(mask, (1 - cfg.ema_rate) * ema + cfg.ema_rate * losses, ema)
        est = jnp.where(mask, losses, ema)
        g = jax.grad(lambda a: jnp.sum(jax.nn.softmax(a) * est))(state.alpha)
        return g, jnp.ones_like(state.alpha, bool), ema, cost
    g = jax.grad(lambda a: mixed_loss(logits, yv, gates(cfg, a, key)[0]))(state.alpha)
    return g, gates(cfg, state.alpha, key)[1], state.ema, cost


def search_step(state: SearchState, train: Batch, val: Batch, *, model_config: Model, cfg: SearchConfig):
    """One architecture update on a validation batch, then one weight update on a train batch."""
    xt, yt = train
    opt_w, opt_a = _optimizers(cfg)
    key, k_arch, k_w = jax.random.split(state.key, 3)
    alpha, opt_a_state, ema, cost = state.alpha, state.opt_a, state.ema, state.cost
    if cfg.strategy != "smash":
        g_a, mask, ema, cost = _arch_grad(cfg, model_config, state, k_arch, train, val)
        upd, opt_a_state = opt_a.update(g_a, state.opt_a, state.alpha)
        upd = jnp.where(mask, upd, 0.0)
        new_alpha = state.alpha + upd
        if cfg.strategy == "proxyless":  # keep the sampled set's total probability unchanged
            shift = (jax.nn.logsumexp(jnp.where(mask, state.alpha, -jnp.inf))
                     - jax.nn.logsumexp(jnp.where(mask, new_alpha, -jnp.inf)))
            new_alpha = jnp.where(mask, new_alpha + shift, new_alpha)
        alpha = new_alpha
    g_w = jax.lax.stop_gradient(gates(cfg, alpha, k_w)[0])

    def w_loss(params):
        logits, stats = _train_logits(model_config, params, state.batch_stats, xt)
        return mixed_loss(logits, yt, g_w), stats

    (loss, stats), grads = jax.value_and_grad(w_loss, has_aux=True)(state.params)
    upd_w, opt_w_state = opt_w.update(grads, state.opt_w, state.params)
    return state.replace(
        params=optax.apply_updates(state.params, upd_w), batch_stats=stats, alpha=alpha, opt_w=opt_w_state,
        opt_a=opt_a_state, ema=ema, key=key, step=state.step + 1, cost=cost.add(gradient=1),
    ), loss


@functools.lru_cache(maxsize=32)
def _compiled_steps(model_config: Model, cfg: SearchConfig, n_steps: int, n_train: int, n_val: int):
    bt, bv = min(cfg.batch_size, n_train), min(cfg.batch_size, n_val)
    step = functools.partial(search_step, model_config=model_config, cfg=cfg)

    def run(state, xt, yt, xv, yv):
        def body(state, _):
            key, kt, kv = jax.random.split(state.key, 3)
            it = jax.random.permutation(kt, n_train)[:bt] if bt < n_train else jnp.arange(n_train)
            iv = jax.random.permutation(kv, n_val)[:bv] if bv < n_val else jnp.arange(n_val)
            return step(state.replace(key=key), (xt[it], yt[it]), (xv[iv], yv[iv]))

        return jax.lax.scan(body, state, None, length=n_steps)

    return jax.jit(run)


@dataclasses.dataclass
class SearchResult:
    """The outcome of a search: the chosen depth, the distribution behind it, and the cost."""

    strategy: str
    chosen_depth: int
    distribution: np.ndarray  # softmax(alpha); for SMASH, softmax of the per-depth validation LL
    scores: np.ndarray | None  # SMASH: validation log-likelihood of each depth under the shared weights
    steps: int
    cost: Cost  # the network passes the search ran
    seconds: float  # wall time, compilation included
    compile_seconds: float
    losses: np.ndarray

    def summary(self) -> str:
        """The analogue of DARTS's genotype / Tensorflow-DARTS's architecture_summary()."""
        top = np.argsort(-self.distribution)[:3]
        dist = ", ".join(f"d={d}: {self.distribution[d]:.3f}" for d in top)
        n = self.cost.counts()
        return (f"{self.strategy}: depth {self.chosen_depth} (top: {dist}); {self.steps} search steps, "
                f"{n['gradient_evaluations']} gradient evaluations, {n['forward_passes']} forward passes, "
                f"{self.seconds:.1f} s ({self.compile_seconds:.1f} s compiling)")


def search(model_config: Model, cfg: SearchConfig, train: Batch, val: Batch, seed: int = 0,
           chunk: int = 500) -> SearchResult:
    """Runs one strategy's search on the (inputs, labels) splits `train` and `val` and returns the
    chosen depth."""
    (x_train, y_train), (x_val, y_val) = train, val
    with clock() as wall:
        state = init_search(jax.random.key(seed), model_config, cfg)
        xt, yt, xv, yv = map(jnp.asarray, (x_train, y_train, x_val, y_val))
        losses = []
        done = 0
        while done < cfg.steps:
            n = min(chunk, cfg.steps - done)
            state, loss = _compiled_steps(model_config, cfg, n, len(x_train), len(x_val))(state, xt, yt, xv, yv)
            losses.append(np.asarray(loss))
            done += n
            if not np.all(np.isfinite(losses[-1])):
                raise FloatingPointError(f"{cfg.strategy}: non-finite search loss by step {done}")
        scores = None
        if cfg.strategy == "smash":
            scores = _smash_scores(model_config, state, x_val, y_val)
            state = state.replace(cost=state.cost.add(forward=1))
            sampled = np.random.default_rng(seed).integers(0, model_config.max_depth + 1, cfg.smash_samples)
            chosen = int(sampled[np.argmax(scores[sampled])])
            dist = np.exp(scores - scores.max())  # softmax of the validation log-likelihoods, for display
            dist = dist / dist.sum()
        else:
            dist = np.asarray(jax.nn.softmax(state.alpha))
            chosen = int(np.argmax(dist))
    return SearchResult(
        strategy=cfg.strategy, chosen_depth=chosen, distribution=dist, scores=scores, steps=cfg.steps,
        cost=jax.device_get(state.cost), seconds=wall.seconds, compile_seconds=wall.compile_seconds,
        losses=np.concatenate(losses),
    )


def _smash_scores(model_config: Model, state: SearchState, x_val, y_val) -> np.ndarray:
    """Validation log-likelihood of every depth under the shared weights (eval mode), from one
    forward pass over the whole validation set."""
    from vdjax.depth.metrics import per_depth_metrics
    from vdjax.nn.models import eval_logits

    logits = eval_logits(model_config, {"params": state.params, "batch_stats": state.batch_stats}, x_val,
                         batch_size=len(x_val))
    return np.asarray(per_depth_metrics(jnp.asarray(logits), jnp.asarray(y_val))["log_lik"])
