"""The main job on this checkout lands inside the band around the committed six-seed run.

One seed's floats (and so its d_opt) change with the CPU's instruction set and the library
versions; the method does not. `headline_band` is wide enough for a new machine's draw and
narrow enough that a broken method (a flat q(d), an untrained network, pruning that loses the
function) fails.
"""

import pytest
import json
from pathlib import Path

import numpy as np

from vdjax.cli.main import main
from vdjax.nn.models import ModelConfig
from vdjax.studies.spirals_study import headline_band, per_seed
from vdjax.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
SIX_SEEDS = ROOT / "docs/data/spirals/six_seeds/results.json"


def _config(cls, record: dict):
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()})


@pytest.mark.float_sensitive
def test_the_main_job_lands_inside_the_committed_six_seed_band(tmp_path):
    six = json.loads(SIX_SEEDS.read_text())
    assert len(six["seeds"]) == 6 and six["train_config"]["max_epochs"] == 8000
    band = headline_band(six)
    assert main(["spirals", "--no-plots", "--out", str(tmp_path)]) == 0  # the README's command, seed 0
    run = json.loads((tmp_path / "results.json").read_text())
    # The same settings (a field added since the committed run, at its default, is the same setting).
    assert _config(ModelConfig, run["model_config"]) == _config(ModelConfig, six["model_config"])
    assert _config(TrainConfig, run["train_config"]) == _config(TrainConfig, six["train_config"])
    seed = run["seeds"][0]
    got = {"d_opt": seed["d_opt"], "accuracy": 1 - seed["test"]["error"], "test_log_lik": seed["test"]["log_lik"],
           "pruning_cost": float(per_seed(run, "pruning_cost")[0])}
    for stat, (lo, hi) in band.items():
        assert lo <= got[stat] <= hi, f"{stat} = {got[stat]:.4f} is outside the committed band [{lo:.4f}, {hi:.4f}]"
    # q(d) has learnt: far from uniform over the 21 depths.
    q = np.asarray(seed["q"])
    assert -(q * np.log(q)).sum() < 0.97 * np.log(len(q))


@pytest.mark.float_sensitive
def test_the_band_rejects_a_broken_method():
    """A network that learnt nothing (chance accuracy, d_opt 0) falls outside the band."""
    band = headline_band(json.loads(SIX_SEEDS.read_text()))
    assert not band["accuracy"][0] <= 0.5 and not band["d_opt"][0] <= 0 <= band["d_opt"][1]
