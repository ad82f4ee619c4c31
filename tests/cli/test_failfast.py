"""Bad input fails fast and clearly, and nothing already written is lost (issue #15).

Every command-line case runs the entry point's `main` through `run_main`, as `__main__` does,
and asserts: exit status 2, exactly one line on stderr naming the problem, no traceback, no
training started (`no_training`), and the files already in the output directory untouched.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vdjax import fit
from vdjax.cli import validate
from vdjax.data import spirals_dataset
from vdjax.io import SCHEMA_VERSION, read_json, write_json, write_text
from vdjax.nn.models import ModelConfig
from vdjax.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT / "benchmarks"))

SPIRALS = spirals_dataset()
TINY = ModelConfig("mlp", 2, 2, (2,), width=4)
SHORT = TrainConfig(max_epochs=30, patience=30)
PREVIOUS = {"schema_version": SCHEMA_VERSION, "from": "an earlier run"}


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if anything starts to train: every trainer, search and baseline builds
    its parameters through a Flax module's `init`, so that is where this guard sits."""
    import flax.linen as nn

    def refuse(*args, **kwargs):
        raise AssertionError("a network was initialised before the bad input was reported")

    monkeypatch.setattr(nn.Module, "init", refuse)
    monkeypatch.setattr(nn.Module, "init_with_output", refuse)


def test_the_guard_catches_training(no_training):
    """The guard itself: starting any training run trips it."""
    with pytest.raises(AssertionError, match="initialised before the bad input"):
        fit(TINY, SHORT, (SPIRALS.x_train, SPIRALS.y_train), [0])


@pytest.fixture
def earlier(tmp_path):
    """An output directory holding the results of an earlier run, which no failure may touch."""
    out = tmp_path / "out"
    out.mkdir()
    write_json(out / "results.json", PREVIOUS)
    return out


def _fails(capsys, main, argv, *expected) -> str:
    status = validate.run_main(main, [str(a) for a in argv], prog="cmd")
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("cmd: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


def _untouched(out: Path) -> None:
    assert read_json(out / "results.json") == PREVIOUS
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def _vdjax(argv):
    from vdjax.cli.main import _main

    return _main(argv)


# ---------------------------------------------------------------------------- vdjax spirals

SPIRALS_CASES = {
    "negative seed": (["--seeds", "-3"], "argument --seeds: a seed must be an integer in [0, 4294967295], got -3"),
    "seed beyond uint32": (["--seeds", str(2**32)], "a seed must be an integer in [0, 4294967295]"),
    "repeated seeds": (["--seeds", "1", "2", "1"], "--seeds must be unique, 1 given more than once"),
    "not an integer": (["--max-epochs", "abc"], "argument --max-epochs: 'abc' is not an integer"),
    "zero where >= 1": (["--patience", "0"], "argument --patience: must be an integer >= 1, got 0"),
    "negative depth": (["--max-depth", "-1"], "argument --max-depth: must be an integer >= 0, got -1"),
    "NaN argument": (["--rotation", "nan"], "argument --rotation: must be a finite number, got nan"),
    "unknown choice": (["--method", "darts"], "argument --method: invalid choice: 'darts'"),
    "setting out of the data's range": (["--n-train", "5000"], "n_train must be in [1, n_points), got 5000 of 2000"),
}


@pytest.mark.parametrize("argv, message", SPIRALS_CASES.values(), ids=SPIRALS_CASES.keys())
def test_cli_rejects_bad_arguments(argv, message, earlier, no_training, capsys):
    _fails(capsys, _vdjax, ["spirals", *argv, "--out", earlier], message)
    _untouched(earlier)


def test_cli_rejects_an_output_path_that_is_a_file(earlier, no_training, capsys):
    file = earlier / "results.json"
    _fails(capsys, _vdjax, ["spirals", "--out", file], f"argument --out: {file} is a file, not a directory")
    _fails(capsys, _vdjax, ["spirals", "--out", file / "sub"], f"cannot write to {file / 'sub'}",
           "pass a writable directory")
    _untouched(earlier)


def test_cli_rejects_a_results_file_that_is_a_directory(earlier, no_training, capsys):
    (earlier / "params_seed0.msgpack").mkdir()
    _fails(capsys, _vdjax, ["spirals", "--no-plots", "--out", earlier],
           f"{earlier / 'params_seed0.msgpack'} is a directory, but the results file goes there")
    assert read_json(earlier / "results.json") == PREVIOUS


def test_cli_rejects_an_unwritable_output_directory(earlier, no_training, capsys, monkeypatch):
    """The directory refuses new files, as a read-only mount or another user's folder does (root
    writes through permission bits, so the refusal is simulated where the probe file is made)."""
    import tempfile

    make = tempfile.TemporaryFile

    def refuse_in_earlier(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == earlier:
            raise PermissionError(13, "Permission denied")
        return make(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse_in_earlier)
    _fails(capsys, _vdjax, ["spirals", "--out", earlier], f"cannot write to {earlier} (Permission denied)")
    _untouched(earlier)


def test_the_real_command_prints_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    """As a user runs it: `python -m vdjax`, a fresh process (the argument is checked before
    JAX compiles anything, so this costs an import)."""
    cmd = [sys.executable, "-m", "vdjax", "spirals", "--seeds", "-3", "--out", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != validate.DEBUG_ENV}
    plain = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr == ("vdjax: error: argument --seeds: a seed must be an integer in [0, 4294967295], "
                            "got -3 (see vdjax spirals --help)\n")
    # For a bug report, --debug or VDJAX_DEBUG=1 lets the error out with its traceback.
    with pytest.raises(validate.UserError, match="a seed must be"):
        validate.run_main(_vdjax, ["spirals", "--debug", "--seeds", "-3", "--out", str(tmp_path)])
    monkeypatch.setenv(validate.DEBUG_ENV, "1")
    with pytest.raises(validate.UserError, match="a seed must be"):
        validate.run_main(_vdjax, ["spirals", "--seeds", "-3", "--out", str(tmp_path)])


# ---------------------------------------------------------------------------- experiment scripts


def test_spirals_scan_rejects_zero_repeats(earlier, no_training, capsys):
    import scan_width_spirals

    _fails(capsys, scan_width_spirals.main, ["--quick", "--repeats", "0", "--out", earlier],
           "argument --repeats: must be an integer >= 1, got 0")
    _untouched(earlier)


def test_spirals_scan_stops_at_a_damaged_results_file_before_training(tmp_path, no_training, capsys):
    import scan_width_spirals

    write_json(tmp_path / "width=0002.json", PREVIOUS)
    damaged = tmp_path / "width=0016.json"
    damaged.write_text('{"seeds": [')
    _fails(capsys, scan_width_spirals.main, ["--quick", "--out", tmp_path],
           f"{damaged} is not valid JSON", "delete it (that result is then computed again)")
    assert damaged.read_text() == '{"seeds": [' and read_json(tmp_path / "width=0002.json") == PREVIOUS


IMAGE_CASES = {
    "unknown data set": (["--datasets", "cifar"], "unknown image data set 'cifar'; choose one of"),
    "batch size 0": (["--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
    "negative depth": (["--depths", "5", "-1"], "argument --depths: must be an integer >= 0, got -1"),
    "repeated seeds": (["--seeds", "0", "0"], "--seeds must be unique, 0 given more than once"),
    "missing data directory": (["--data-dir", "/nonexistent/fmnist"],
                               "argument --data-dir: /nonexistent/fmnist does not exist"),
    "unknown stopping objective": (["--stop-objective", "mean"], "argument --stop-objective: invalid choice: 'mean'"),
    "marginal objective on the train ELBO": (["--stop-on", "train", "--stop-objective", "marginal"],
                                             "stop_objective 'marginal' needs a held-out split to stop on"),
    "unknown patience rule": (["--patience-rule", "after"], "argument --patience-rule: invalid choice: 'after'"),
    "no lr drop and a method": (["--lr-drop-methods", "none", "ddn"],
                                "argument --lr-drop-methods: 'none' goes alone, got none ddn"),
}


@pytest.mark.parametrize("argv, message", IMAGE_CASES.values(), ids=IMAGE_CASES.keys())
def test_image_scripts_reject_bad_arguments(argv, message, earlier, no_training, capsys):
    import scan_max_depth_images

    _fails(capsys, scan_max_depth_images.main, [*argv, "--out", earlier], message)
    _untouched(earlier)


def test_image_scripts_check_every_data_set_before_training(tmp_path, earlier, no_training, capsys):
    import scan_deterministic_depth_images

    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(capsys, scan_deterministic_depth_images.main,
           ["--datasets", "fashion_mnist", "--source", "files", "--data-dir", empty, "--out", earlier],
           "data set 'fashion_mnist' not found. ", f"{empty}: missing train-images-idx3-ubyte.gz",
           "apt-get install dataset-fashion-mnist")
    _untouched(earlier)


def test_image_scripts_reject_corrupt_data_files(tmp_path, earlier, no_training, capsys):
    import scan_max_depth_images

    data = tmp_path / "data"
    data.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (data / name).write_bytes(b"garbage, not gzip")
    _fails(capsys, scan_max_depth_images.main, ["--source", "files", "--data-dir", data, "--out", earlier],
           f"{data / 'train-images-idx3-ubyte.gz'}: not a readable IDX file")
    _untouched(earlier)


def test_search_comparison_rejects_unknown_strategies_and_data_sets(earlier, no_training, capsys):
    import compare_search_strategies as script

    _fails(capsys, script.main, ["--strategies", "ldn", "foo", "--out", earlier],
           "argument --strategies: invalid choice: 'foo'")
    _fails(capsys, script.main, ["--datasets", "spirals", "cifar", "--out", earlier],
           "unknown image data set 'cifar'")
    _untouched(earlier)


def test_benchmarks_check_their_arguments(earlier, capsys):
    import cnn_step
    import compare
    import image_grid_estimate
    import image_throughput

    _fails(capsys, cnn_step.main, ["--batch", "0"], "argument --batch: must be an integer >= 1, got 0")
    _fails(capsys, image_grid_estimate.main, ["--depths", "10"], "--depths needs at least two depths")
    _fails(capsys, image_throughput.main, ["--networks", "0"], "argument --networks: must be an integer >= 1, got 0")
    _fails(capsys, compare.main, ["--quick", "--out", earlier / "results.json"], "is a file, not a directory")
    _untouched(earlier)


def test_interrupted_command_says_what_is_kept(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    assert validate.run_main(interrupted, [], prog="cmd") == 130
    err = capsys.readouterr().err
    assert err == ("cmd: interrupted; the files already written are kept (an experiment resumes from its last "
                   "checkpoint when run again)\n")


def test_a_bug_keeps_its_traceback():
    def bug(argv):
        raise KeyError("not a user error")

    with pytest.raises(KeyError):
        validate.run_main(bug, [])


# ---------------------------------------------------------------------------- the library


LIBRARY_CASES = {
    "negative seed": ({"seeds": [-1]}, ValueError, r"seeds must be integers in \[0, 4294967295\]"),
    "float seeds": ({"seeds": [0.5]}, ValueError, "seeds must be integers"),
    "string inputs": ({"x": np.full((200, 2), "a")}, TypeError, "x must hold numbers, got dtype <U1"),
    "wrong input shape": ({"x": np.zeros((200, 3))}, ValueError, r"x must have shape \[batch, 2\], got \[200, 3\]"),
    "NaN input": ({"x": np.where(np.arange(400).reshape(200, 2) == 7, np.nan, SPIRALS.x_train)}, ValueError,
                  "x contains 1 NaN or infinite values"),
    "labels out of range": ({"y": SPIRALS.y_train + 1}, ValueError,
                            r"y must lie in \[0, 2\), found values in \[1, 2\]"),
}


@pytest.mark.parametrize("bad, error, message", LIBRARY_CASES.values(), ids=LIBRARY_CASES.keys())
def test_fit_rejects_bad_input_before_compiling(bad, error, message, monkeypatch):
    import vdjax.training.runner

    monkeypatch.setattr(vdjax.training.runner, "_compiled_init", lambda *a: pytest.fail("compiled before checking"))
    args = {"x": SPIRALS.x_train, "y": SPIRALS.y_train, "seeds": [0], **bad}
    with pytest.raises(error, match=message):
        fit(TINY, SHORT, (args["x"], args["y"]), args["seeds"])


def test_a_failed_write_goes_to_the_fallback_and_says_where(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VDJAX_FALLBACK_DIR", str(tmp_path / "fallback"))
    blocker = tmp_path / "was_a_directory"
    blocker.write_text("a file now")
    target = blocker / "results.json"
    written = write_json(target, {"d_opt": 7})
    assert written != target and written.is_relative_to(tmp_path / "fallback") and written.name == "results.json"
    assert read_json(written) == {"schema_version": SCHEMA_VERSION, "d_opt": 7} and blocker.read_text() == "a file now"
    err = capsys.readouterr().err
    assert err == f"vdjax: could not write {target} ({blocker} is a file); wrote it to {written} instead\n"


def test_files_follow_the_umask_and_writes_stay_atomic(tmp_path):
    old = os.umask(0o022)
    try:
        a = write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        b = write_text(tmp_path / "b.txt", "y")
    finally:
        os.umask(old)
    assert (a.stat().st_mode & 0o777, b.stat().st_mode & 0o777) == (0o644, 0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # no temporaries left


def test_a_failed_checkpoint_save_warns_and_training_goes_on(tmp_path, monkeypatch):
    from vdjax.training.checkpoints import Checkpoints

    ckpt = Checkpoints(tmp_path / "ckpt")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.manager, "save", disk_full)
    with pytest.warns(RuntimeWarning, match=r"could not save the checkpoint of step 3 in .*No space left on device"):
        assert ckpt.save(3, {"w": np.zeros(2)}, {}, "run") is False
    ckpt.close()
