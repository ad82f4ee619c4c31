"""vdjax: Variational Depth Search in ResNets (learnt-depth networks) in JAX/Flax.

The public API is this module's `__all__`: build an LDN (`Network` from your own Flax modules,
or a `ModelConfig` preset), train it (`fit`: the spirals protocol, stopping on the train ELBO;
`fit_networks`: held-out early stopping, LDNs and DDNs in one program; both on one driver), read its posterior over depth, prune it to `d_opt` and
predict. Everything else lives in submodules named by what they do.
"""

from vdjax.data import load_images, spirals_dataset
from vdjax.studies.experiment import run_in_memory
from vdjax.training.loop import fit
from vdjax.training.metrics_writer import create_writer
from vdjax.nn.models import LDN, Model, ModelConfig, Network
from vdjax.depth.posterior import depth_posterior, log_prior, negative_elbo
from vdjax.depth.prune import (PrunedLDN, d_opt_95, eval_logits, expected_depth, fold_posterior, predict_log_probs, prune,
                         select_depth)
from vdjax.studies import load_results
from vdjax.training.train import TrainConfig, TrainState, evaluate, init_state, make_optimizer, make_train_step
from vdjax.training.trainer import IMAGE_PROTOCOL, PAPER_IMAGE_PROTOCOL, fit_networks

__version__ = "0.1.0"

__all__ = [
    "IMAGE_PROTOCOL",
    "LDN",
    "Model",
    "ModelConfig",
    "Network",
    "PAPER_IMAGE_PROTOCOL",
    "PrunedLDN",
    "TrainConfig",
    "TrainState",
    "create_writer",
    "d_opt_95",
    "depth_posterior",
    "eval_logits",
    "evaluate",
    "expected_depth",
    "fit",
    "fit_networks",
    "fold_posterior",
    "init_state",
    "load_images",
    "load_results",
    "log_prior",
    "make_optimizer",
    "make_train_step",
    "negative_elbo",
    "predict_log_probs",
    "prune",
    "run_in_memory",
    "select_depth",
    "spirals_dataset",
]
