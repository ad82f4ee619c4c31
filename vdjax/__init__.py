"""vdjax: Variational Depth Search in ResNets (learnt-depth networks) in JAX/Flax.

The public API is this module's `__all__`: build an LDN (`Network` from your own Flax modules,
or a `ModelConfig` preset), train it (`fit`, with a `TrainConfig` protocol: stopping on the train
ELBO as the paper's spirals, or on a held-out split as its images; `RunOptions` for
checkpoints, budgets, meshes and progress), read its posterior over depth, prune it to `d_opt`
and predict. Everything else lives in submodules named by what they do.
"""

from vdjax.data import load_images, spirals_dataset
from vdjax.depth.early_exit import EarlyExit, early_exit, exit_depths
from vdjax.depth.posterior import depth_posterior, log_prior
from vdjax.depth.prune import PrunedLDN, d_opt_95, expected_depth, fold_posterior, predict_log_probs, prune, select_depth
from vdjax.nn.models import LDN, Model, ModelConfig, Network, Stage, eval_logits
from vdjax.studies import load_results
from vdjax.studies.experiment import run_in_memory
from vdjax.training.config import IMAGE_PROTOCOL, PAPER_IMAGE_PROTOCOL, SPIRALS_PROTOCOL, RunOptions, TrainConfig
from vdjax.training.metrics_writer import create_writer
from vdjax.training.objective import Objective, evaluate, negative_elbo
from vdjax.training.runner import FitResult, fit
from vdjax.training.step import TrainState, init_state, make_optimizer, make_train_step

__version__ = "0.1.0"

__all__ = [
    "EarlyExit",
    "FitResult",
    "IMAGE_PROTOCOL",
    "LDN",
    "Model",
    "ModelConfig",
    "Network",
    "Objective",
    "PAPER_IMAGE_PROTOCOL",
    "PrunedLDN",
    "RunOptions",
    "SPIRALS_PROTOCOL",
    "Stage",
    "TrainConfig",
    "TrainState",
    "create_writer",
    "d_opt_95",
    "depth_posterior",
    "early_exit",
    "eval_logits",
    "evaluate",
    "exit_depths",
    "expected_depth",
    "fit",
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
