"""What every trainer shares: the checkpoint cadence (at most every `every_s` seconds, never
more than 5% of the time spent saving) and run ids."""

import numpy as np
import pytest

from vdjax.training import checkpoints


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(checkpoints.time, "monotonic", lambda: now[0])
    return now


def test_saves_at_most_every_interval(clock):
    cadence = checkpoints.SaveCadence(60.0)
    clock[0] += 59.0
    assert not cadence.due()
    clock[0] += 1.0
    assert cadence.due()
    started = clock[0]
    clock[0] += 0.5  # a save of half a second
    cadence.saved(started)
    clock[0] += 59.9
    assert not cadence.due()
    clock[0] += 0.1
    assert cadence.due()


def test_a_slow_save_spaces_the_next_one_to_twenty_times_its_cost(clock):
    cadence = checkpoints.SaveCadence(60.0)
    started = clock[0]
    clock[0] += 10.0  # a 10 s save: the next may come only after 200 s
    cadence.saved(started)
    clock[0] += 199.0
    assert not cadence.due()
    clock[0] += 1.0
    assert cadence.due()


def test_zero_saves_whenever_asked(clock):
    cadence = checkpoints.SaveCadence(0.0)
    assert cadence.due()
    cadence.saved(clock[0])
    assert cadence.due()


def test_a_run_id_names_only_the_settings_that_differ_from_their_defaults():
    """A field added later, left at its default, changes no run id; setting it does."""
    from vdjax.nn.models import ModelConfig
    from vdjax.training.config import TrainConfig

    base = ModelConfig("mlp", 20, 2, (2,))
    key = checkpoints.config_key
    assert key(base) == "ModelConfig(arch='mlp', max_depth=20, num_classes=2, input_shape=(2,), width=20)"
    assert key(ModelConfig("mlp", 20, 2, (2,), head_norm="per_depth")) == key(base)
    assert "head_norm='shared'" in key(ModelConfig("mlp", 20, 2, (2,), head_norm="shared"))
    assert key(TrainConfig()) == "TrainConfig()"
    a, b = (checkpoints.run_id(base, TrainConfig(max_epochs=e), np.zeros(3)) for e in (10, 20))
    assert a["train_config"] == "TrainConfig(max_epochs=10)" and a != b
