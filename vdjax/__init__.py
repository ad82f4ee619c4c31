"""vdjax: Variational Depth Search in ResNets (learnt-depth networks) in JAX/Flax."""

from vdjax.models import LDN, Model, ModelConfig, Network
from vdjax.posterior import depth_posterior, log_prior, negative_elbo
from vdjax.prune import d_opt_95, expected_depth, fold_posterior, predict_log_probs, prune
from vdjax.train import TrainConfig, TrainState, evaluate, init_state, make_optimizer, make_train_step

__version__ = "0.1.0"

__all__ = [
    "LDN",
    "Model",
    "ModelConfig",
    "Network",
    "TrainConfig",
    "TrainState",
    "d_opt_95",
    "depth_posterior",
    "evaluate",
    "expected_depth",
    "fold_posterior",
    "init_state",
    "log_prior",
    "make_optimizer",
    "make_train_step",
    "negative_elbo",
    "predict_log_probs",
    "prune",
]
