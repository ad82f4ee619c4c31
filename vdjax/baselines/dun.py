"""DUN's comparison: an LDN against a DDN, a deep ensemble of DDNs, MC dropout and mean-field VI,
on one footing.

Training: every method is `vdjax.fit` with one protocol (the same optimiser,
batch size, epochs and early-stopping rule: stop once the validation objective has not improved
for `patience` epochs and keep the best parameters). The LDN, the DDN and the ensemble's
members are one vmapped program: members ('ldn', s0), ('ddn', s1..sM) with the DDN being
ensemble member 0. MC dropout is a DDN whose modules use dropout (a preset with
`dropout_rate > 0`, or any `Network` with `uses_dropout`), a second program; MFVI a DDN whose
linear layers are `vdjax.nn.mfvi.MFVILinear` (a preset with `weights='mfvi'`, or any `Network` with
`weights='mfvi'`: a Gaussian posterior over every weight, the KL to the prior / N_train in the
loss), a third. Several splits of one size train together: every network of every split in the
same programs.

Prediction: each method is a `Predictive`, K component predictions with mixture weights
(`vdjax.depth.likelihoods` explains why one mixture serves them all):
- LDN: the network pruned to d_opt (95% rule), its depths 0..d_opt under the folded q(d):
  one forward pass;
- DDN: its last depth, one component: one forward pass;
- ensemble: M members' last depths, weights 1/M: M forward passes (vmapped over members);
- MC dropout: S sampled forward passes with dropout on, weights 1/S;
- MFVI: S forward passes with sampled pre-activations (local reparameterisation), weights 1/S.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from vdjax.training.cost import median_seconds
from vdjax.data.core import Dataset, check_inputs
from vdjax.depth.likelihoods import marginal_metrics, mixture_moments, noise_std, to_original_scale
from vdjax.depth.metrics import expected_calibration_error, marginal_log_probs
from vdjax.nn.models import LDN, Model, ModelConfig
from vdjax.depth.prune import PrunedLDN, last_head_only, prune, select_depth
from vdjax.nn.models import eval_logits
from vdjax.training.config import RunOptions, TrainConfig
from vdjax.training.step import TrainState

METHODS = ("ldn", "ddn", "ensemble", "dropout", "mfvi")


@dataclasses.dataclass(frozen=True)
class Predictive:
    """One method's prediction for N inputs: component outputs [K, N, C] (logits, or Gaussian
    means with C = 1), mixture weights [K] summing to 1, and each component's Gaussian noise
    scale [K] (None for a categorical likelihood)."""

    outputs: np.ndarray
    weights: np.ndarray
    stds: np.ndarray | None = None

    def __post_init__(self):
        chex.assert_rank(self.outputs, 3)
        chex.assert_shape(self.weights, (self.outputs.shape[0],))
        if self.stds is not None:
            chex.assert_shape(self.stds, (self.outputs.shape[0],))

    @property
    def likelihood(self) -> str:
        return "categorical" if self.stds is None else "gaussian"


def _stds(config: Model, states: Sequence[TrainState]) -> np.ndarray | None:
    if config.likelihood != "gaussian":
        return None
    return np.array([float(noise_std(s.params["log_noise"])) for s in states], np.float32)


def ldn_predictive(config: Model, state: TrainState, x: np.ndarray, rule: str | None = "95") -> Predictive:
    """The LDN pruned by `rule` ('95', 'expected'; None: all depths), marginalised over its depths."""
    return pruned_predictive(config, state, prune_by_rule(config, state, rule), x)


def prune_by_rule(config: Model, state: TrainState, rule: str | None = "95") -> PrunedLDN:
    """The deployed network: the LDN cut to the depth `rule` selects (None: all depths)."""
    q = np.asarray(state.q)
    return prune(config, state.variables, q, config.max_depth if rule is None else select_depth(q, rule))


def pruned_predictive(config: Model, state: TrainState, pruned: PrunedLDN, x: np.ndarray) -> Predictive:
    """What a pruned LDN predicts for `x`: one forward pass of its d_opt blocks, marginalised."""
    outputs = eval_logits(pruned.config, pruned.variables, x)
    stds = _stds(config, [state])
    depth = pruned.config.max_depth
    return Predictive(outputs, pruned.q.astype(np.float32), None if stds is None else np.repeat(stds, depth + 1))


def ddn_predictive(config: Model, state: TrainState, x: np.ndarray) -> Predictive:
    """A deterministic-depth network as deployed: its last depth only."""
    cfg, variables = last_head_only(config, state.variables)
    return Predictive(eval_logits(cfg, variables, x), np.ones(1, np.float32), _stds(config, [state]))


def ensemble_predictive(config: Model, states: Sequence[TrainState], x: np.ndarray,
                        batch_size: int = 1024) -> Predictive:
    """A deep ensemble of DDNs: the members' last depths, equally weighted. The members' forward
    passes run as one vmapped program over their stacked parameters."""
    cfg = config.replace(heads="last")
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[last_head_only(config, s.variables)[1] for s in states])
    x = check_inputs(x, config.input_shape)
    fn = _members_forward(cfg)
    out = np.concatenate([np.asarray(fn(stacked, x[i : i + batch_size]))[:, 0] for i in range(0, len(x), batch_size)],
                         axis=1)
    m = len(states)
    return Predictive(out, np.full(m, 1.0 / m, np.float32), _stds(config, states))


@functools.lru_cache(maxsize=16)
def _members_forward(config: Model):
    model = LDN(config)
    return jax.jit(jax.vmap(lambda v, x: model.apply(v, x, train=False), in_axes=(0, None)))


def mc_dropout_predictive(config: Model, state: TrainState, x: np.ndarray, key: jax.Array,
                          n_samples: int = 10, batch_size: int = 1024) -> Predictive:
    """MC dropout: `n_samples` forward passes of the last depth with dropout on (running BatchNorm
    statistics), equally weighted; the samples run as one vmapped program."""
    if not config.uses_dropout:
        raise ValueError("MC dropout needs a network trained with dropout (a preset's dropout_rate > 0, "
                         "or a Network with uses_dropout=True)")
    return _sampled_predictive(config, state, x, key, n_samples, batch_size)


def mfvi_predictive(config: Model, state: TrainState, x: np.ndarray, key: jax.Array, n_samples: int = 10,
                    batch_size: int = 1024) -> Predictive:
    """MFVI: `n_samples` forward passes of the last depth, each drawing every layer's
    pre-activations from the weight posterior (an independent draw per input), equally weighted:
    a Monte-Carlo mixture predictive; the samples run as one vmapped program."""
    if config.weights != "mfvi":
        raise ValueError("an MFVI predictive needs a network with weights='mfvi'")
    return _sampled_predictive(config, state, x, key, n_samples, batch_size)


def _sampled_predictive(config: Model, state: TrainState, x: np.ndarray, key: jax.Array, n_samples: int,
                        batch_size: int) -> Predictive:
    """`n_samples` stochastic forward passes (the network's own noise: dropout or MFVI), equally weighted."""
    cfg, variables = last_head_only(config, state.variables)
    x = check_inputs(x, config.input_shape)
    keys = jax.random.split(key, n_samples)
    fn = _sampled_forward(cfg)
    out = np.concatenate([np.asarray(fn(variables, x[i : i + batch_size], keys))[:, 0]
                          for i in range(0, len(x), batch_size)], axis=1)
    stds = _stds(config, [state])
    return Predictive(out, np.full(n_samples, 1.0 / n_samples, np.float32),
                      None if stds is None else np.repeat(stds, n_samples))


@functools.lru_cache(maxsize=16)
def _sampled_forward(config: Model):
    model = LDN(config)
    mfvi = config.weights == "mfvi"

    def one(v, x, key):
        return model.apply(v, x, train=False, sample_dropout=not mfvi, sample_weights=mfvi,
                           rngs={config.rng_stream: key})

    return jax.jit(jax.vmap(one, in_axes=(None, None, 0)))


# ---------------------------------------------------------------------------- training


@dataclasses.dataclass
class TrainedMethods:
    """The kept states of one comparison's networks: the LDN, the DDNs (member 0 is the DDN, all
    of them the ensemble), the MC-dropout and the MFVI network (None if not trained), and how
    each trained (`FitResult.summary`)."""

    model_config: Model
    dropout_config: Model | None
    ldn: TrainState
    ddns: list[TrainState]
    dropout: TrainState | None
    training: dict[str, dict[str, Any]]
    mfvi_config: Model | None = None
    mfvi: TrainState | None = None

    def summary(self) -> dict:
        """How each network trained: kept epoch, epochs run, why it stopped, program wall time."""
        return self.training


@dataclasses.dataclass(frozen=True)
class Baselines:
    """Which networks `fit_methods` trains beside the LDN. `ensemble_size` DDNs (member 0 is the
    DDN). The MC-dropout network is `dropout_model`, or else a preset LDN config with
    `dropout_rate` (None: no dropout baseline); the MFVI network is `mfvi_model`, or else a preset
    with weights='mfvi' and prior std `mfvi_prior_std` (None: no MFVI baseline)."""

    ensemble_size: int = 5
    dropout_rate: float | None = 0.1
    dropout_model: Model | None = None
    mfvi_prior_std: float | None = None
    mfvi_model: Model | None = None

    def __post_init__(self):
        if self.ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {self.ensemble_size}")


def fit_methods(data: Dataset | Sequence[Dataset], model_config: Model, train_config: TrainConfig,
                seed: int | Sequence[int] = 0, baselines: Baselines = Baselines(),
                options: RunOptions = RunOptions()) -> TrainedMethods | list[TrainedMethods]:
    """Trains the LDN and the `baselines.ensemble_size` DDNs (seeds seed..seed+M-1) as one
    vmapped program, then the MC-dropout DDN and the MFVI DDN, each a program of its own, all
    with `train_config`'s protocol (`options`: progress and log, as for `vdjax.fit`).
    Several data sets of one size (`data` a sequence; set j's seed is `seed[j]`, or seed + 100 j)
    train in the same three programs; one `TrainedMethods` per set comes back."""
    from vdjax.training.runner import fit

    b = baselines
    several = not isinstance(data, Dataset)
    sets = list(data) if several else [data]
    seeds = [int(s) for s in seed] if isinstance(seed, Sequence) else [seed + 100 * j for j in range(len(sets))]
    if len(seeds) != len(sets):
        raise ValueError(f"{len(sets)} data sets need as many seeds, got {seeds}")

    def run(config: Model, members: Callable[[int], list]) -> list[list[tuple]]:
        """Per data set, (kept state, training summary) of each of its networks."""
        result = fit(config, train_config, sets if several else sets[0],
                     [members(s) for s in seeds] if several else members(seeds[0]), options)
        per_set: list[list[tuple]] = [[] for _ in sets]
        for i, j in enumerate(result.data_of):
            per_set[j].append((result.best_state(i), result.summary(i)))
        return per_set

    dropout_config = b.dropout_model or _preset_variant(model_config, "dropout_model", b.dropout_rate,
                                                        dropout_rate=b.dropout_rate)
    mfvi_config = b.mfvi_model or _preset_variant(model_config, "mfvi_model", b.mfvi_prior_std, weights="mfvi",
                                                  prior_std=b.mfvi_prior_std)
    main = run(model_config, lambda s: [("ldn", s)] + [("ddn", s + i) for i in range(b.ensemble_size)])
    none = [[(None, None)]] * len(sets)
    dropout = run(dropout_config, lambda s: [("ddn", s)]) if dropout_config else none
    mfvi = run(mfvi_config, lambda s: [("ddn", s)]) if mfvi_config else none
    out = []
    for m, d, v in zip(main, dropout, mfvi):
        training = {"ldn": m[0][1], **{f"ddn_{i}": r[1] for i, r in enumerate(m[1:])}}
        training.update({k: r[0][1] for k, r in (("dropout", d), ("mfvi", v)) if r[0][0] is not None})
        out.append(TrainedMethods(model_config, dropout_config, m[0][0], [r[0] for r in m[1:]], d[0][0], training,
                                  mfvi_config, v[0][0]))
    return out if several else out[0]


def _preset_variant(model_config: Model, argument: str, setting: float | None, **changes) -> ModelConfig | None:
    """The preset `model_config` with `changes` (a baseline's network), or None if `setting` is unset."""
    if not setting:
        return None
    if not isinstance(model_config, ModelConfig):
        raise ValueError(f"a Network has no {', '.join(changes)} to set: pass the baseline's network as "
                         f"Baselines({argument}=...) (or leave its setting None to skip it)")
    return model_config.replace(**changes)


def method_predictives(trained: TrainedMethods, x: np.ndarray, key: jax.Array, n_dropout_samples: int = 10,
                       timing_repeats: int = 3, n_mfvi_samples: int = 10
                       ) -> tuple[dict[str, Predictive], dict[str, float]]:
    """Every method's predictive for `x`, and the wall seconds each takes (median of
    `timing_repeats` after a compiling warm-up), measured in the same process one after another."""
    cfg = trained.model_config
    # Pruning happens once, before deployment: what is timed is the pruned network's prediction.
    deployed = {rule: prune_by_rule(cfg, trained.ldn, rule) for rule in ("95", None)}
    makers: dict[str, Callable[[], Predictive]] = {
        "ldn": lambda: pruned_predictive(cfg, trained.ldn, deployed["95"], x),
        "ldn_full": lambda: pruned_predictive(cfg, trained.ldn, deployed[None], x),
        "ddn": lambda: ddn_predictive(cfg, trained.ddns[0], x),
        "ensemble": lambda: ensemble_predictive(cfg, trained.ddns, x),
    }
    if trained.dropout is not None:
        makers["dropout"] = lambda: mc_dropout_predictive(trained.dropout_config, trained.dropout, x, key,
                                                          n_dropout_samples)
    if trained.mfvi is not None:
        makers["mfvi"] = lambda: mfvi_predictive(trained.mfvi_config, trained.mfvi, x, jax.random.fold_in(key, 1),
                                                 n_mfvi_samples)
    preds = {k: make() for k, make in makers.items()}
    seconds = {k: time_call(make, timing_repeats) for k, make in makers.items()}
    return preds, seconds


# ---------------------------------------------------------------------------- metrics


def regression_metrics(pred: Predictive, y: np.ndarray, target_scale: tuple[float, float] = (0.0, 1.0)) -> dict:
    """Test log-likelihood (exact mixture) and RMSE in the data's units, and the mean predictive
    std; `y` standardised as the network was trained."""
    means = jnp.asarray(pred.outputs[..., 0])
    y = jnp.asarray(y, jnp.float32)
    m = marginal_metrics(pred.outputs, jnp.asarray(pred.weights), y, "gaussian", jnp.asarray(pred.stds))
    mean, var = mixture_moments(means, jnp.asarray(pred.weights), jnp.asarray(pred.stds))
    _, var_orig, ll_orig = to_original_scale(mean, var, m["log_lik"], target_scale)
    return {"log_lik": float(ll_orig), "rmse": float(m["error"]) * target_scale[1],
            "mean_std": float(jnp.mean(jnp.sqrt(var_orig)))}


def regression_curve(pred: Predictive, target_scale: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Predictive mean and std per input in the data's units (for plots)."""
    mean, var = mixture_moments(jnp.asarray(pred.outputs[..., 0]), jnp.asarray(pred.weights), jnp.asarray(pred.stds))
    mean, var, _ = to_original_scale(mean, var, 0.0, target_scale)
    return np.asarray(mean), np.sqrt(np.asarray(var))


def predictive_probs(pred: Predictive) -> np.ndarray:
    """Class probabilities [N, C] of a categorical predictive."""
    return np.exp(np.asarray(marginal_log_probs(jnp.asarray(pred.outputs), jnp.asarray(pred.weights))))


def classification_metrics(pred: Predictive, y: np.ndarray) -> dict:
    """Log-likelihood, error, ECE and Brier score of a categorical predictive."""
    from vdjax.baselines.shift import brier_score

    m = marginal_metrics(jnp.asarray(pred.outputs), jnp.asarray(pred.weights), jnp.asarray(y), "categorical")
    probs = predictive_probs(pred)
    ece, _ = expected_calibration_error(probs, np.asarray(y))
    return {"log_lik": float(m["log_lik"]), "error": float(m["error"]), "ece": ece,
            "brier": brier_score(probs, np.asarray(y))}


# ---------------------------------------------------------------------------- cost


def time_call(fn: Callable[[], Any], repeats: int = 5) -> float:
    """Median wall seconds of `fn()` after one warm-up call (which compiles): test-time cost
    without compilation. `fn` must block until its result is ready (return host arrays)."""
    return median_seconds(fn, repeats)
