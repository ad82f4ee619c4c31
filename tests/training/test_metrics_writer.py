"""Per-epoch metrics stream out while training runs, and say what the results say."""

import json

import numpy as np
import pytest

from vdjax.data import spirals_dataset
from vdjax.training.metrics_writer import JsonlWriter, create_writer, read_metrics
from vdjax.nn.models import ModelConfig
from vdjax.training.config import RunOptions, TrainConfig
from vdjax.training.runner import fit


class Recorder:
    """A writer that keeps its calls, and what had been written when each came."""

    def __init__(self):
        self.calls = []

    def write(self, step, scalars):
        self.calls.append((step, dict(scalars)))

    def close(self):
        pass


def test_the_spirals_loop_writes_every_chunk_as_it_trains():
    data = spirals_dataset()
    rec = Recorder()
    result = fit(ModelConfig("mlp", 2, 2, (2,), width=4), TrainConfig(max_epochs=60, patience=60), data, [3, 5],
                 RunOptions(chunk_epochs=20, metrics_writer=rec))
    assert [step for step, _ in rec.calls] == [20, 40, 60]  # one write per chunk, while training
    last = rec.calls[-1][1]
    assert last["ldn-s3/epochs"] == 60 and last["ldn-s5/epochs"] == 60
    np.testing.assert_allclose([last["ldn-s3/best_train_loss"], last["ldn-s5/best_train_loss"]],
                               np.asarray(result.state.best_loss), rtol=1e-6)


def test_the_image_trainer_writes_every_epoch_of_every_network(tmp_path):
    from helpers import fake_mnist

    from vdjax.data import load_images

    fake_mnist(tmp_path, 64, 16)
    data = load_images("fashion_mnist", tmp_path, source="files")
    rec = Recorder()
    tc = TrainConfig(batch_size=16, max_epochs=3, patience=3, stop_on="val", val_fraction=0.25)
    result = fit(ModelConfig("cnn", 1, 10, data.input_shape, width=4, bottleneck=2), tc, data,
                 [("ldn", 0), ("ddn", 0)], RunOptions(metrics_writer=rec))
    assert [step for step, _ in rec.calls] == [0, 1, 2]
    for (epoch, scalars) in rec.calls:
        for name, history in zip(("ldn-s0", "ddn-s0"), result.histories):
            row = history[epoch]
            assert scalars[f"{name}/train_loss"] == row["train_loss"] and scalars[f"{name}/val_loss"] == row["val_loss"]


def test_jsonl_rows_are_readable_while_the_file_is_open(tmp_path):
    w = JsonlWriter(tmp_path / "m" / "metrics.jsonl")
    w.write(0, {"a": 1.0, "b": float("nan")})
    assert read_metrics(tmp_path / "m" / "metrics.jsonl") == [{"step": 0, "a": 1.0, "b": None}]
    w.write(1, {"a": 2.0})
    assert [r["step"] for r in read_metrics(w.path)] == [0, 1]
    w.close()
    writer = create_writer(tmp_path / "tb", tensorboard=False)
    writer.write(5, {"x": 0.5})
    writer.close()
    assert json.loads((tmp_path / "tb" / "metrics.jsonl").read_text()) == {"step": 5, "x": 0.5}


@pytest.mark.float_sensitive
def test_the_main_job_streams_its_metrics(tmp_path):
    """Where the seed stops (patience 100 or --quick's 300 epochs) moves with the CPU's floats:
    the stream is checked against what the run itself reports, not against a stopping epoch."""
    from vdjax.cli.main import main

    assert main(["spirals", "--quick", "--max-depth", "2", "--no-plots", "--out", str(tmp_path / "out"),
                 "--metrics-dir", str(tmp_path / "metrics")]) == 0
    rows = read_metrics(tmp_path / "metrics" / "metrics.jsonl")
    seed = json.loads((tmp_path / "out" / "results.json").read_text())["seeds"][0]
    assert seed["epochs"] == 300 or seed["epochs"] == seed["best_epoch"] + 100 + 1
    steps = [row["step"] for row in rows]
    assert steps == sorted(set(steps)) and seed["epochs"] <= steps[-1] <= 300  # one row per chunk, the last one's end
    assert rows[-1]["ldn-s0/epochs"] == seed["epochs"] and rows[-1]["ldn-s0/best_train_loss"] == seed["best_loss"]
