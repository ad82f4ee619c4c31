import json

import pytest

from vdjax.cli.main import main


def test_main_job_quick_run_prints_and_writes_results(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["spirals", "--quick", "--max-depth", "6", "--seeds", "0", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "d_opt (95% rule) =" in text and "pruned to d <=" in text
    results = json.loads((out / "results.json").read_text())
    assert len(results["seeds"]) == 2
    for seed in results["seeds"]:
        assert len(seed["q"]) == 7 and abs(sum(seed["q"]) - 1) < 1e-5
        assert 0 <= seed["d_opt"] <= 6
        assert len(seed["test"]["per_depth_log_lik"]) == 7
    for name in ("depth_posterior.png", "decision_function.png", "params_seed0.msgpack"):
        assert (out / name).stat().st_size > 1000
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_bad_arguments_give_a_clear_error(tmp_path, capsys):
    assert main(["spirals", "--max-depth", "-1", "--out", str(tmp_path)]) == 2
    assert "argument --max-depth: must be an integer >= 0, got -1" in capsys.readouterr().err
    assert main(["spirals", "--width", "0", "--out", str(tmp_path)]) == 2
    assert "argument --width: must be an integer >= 1, got 0" in capsys.readouterr().err


def test_a_finished_run_survives_its_output_directory_vanishing(tmp_path, monkeypatch, capsys):
    """--out passes the check, then becomes a file during training: the results still land (in
    the fallback directory), both messages name where, and the file is left alone. The same
    command as the quick run above, so nothing compiles again."""
    import vdjax.studies.experiment

    out, fallback = tmp_path / "run", tmp_path / "fallback"
    monkeypatch.setenv("VDJAX_FALLBACK_DIR", str(fallback))
    train = vdjax.studies.experiment.run_in_memory

    def sabotaged(*args, **kwargs):
        run = train(*args, **kwargs)
        out.rmdir()
        out.write_text("someone else's file")
        return run

    monkeypatch.setattr(vdjax.studies.experiment, "run_in_memory", sabotaged)
    assert main(["spirals", "--quick", "--max-depth", "6", "--seeds", "0", "1", "--out", str(out), "--no-plots"]) == 3
    captured = capsys.readouterr()
    assert out.read_text() == "someone else's file"
    results = next(fallback.rglob("results.json"))
    assert f"could not write {out / 'results.json'} ({out} is a file); wrote it to {results} instead" in captured.err
    assert f"wrote {results}, {results.parent / 'params_seed0.msgpack'}" in captured.out
    assert "2 output file(s) went to the fallback directory" in captured.err and "exit status 3" in captured.err
    record = json.loads(results.read_text())
    assert [s["seed"] for s in record["seeds"]] == [0, 1]
    # What the numbers depend on is recorded with them.
    env = record["environment"]
    assert env["seeds_in_batch"] == 2 and env["chunk_epochs"] == 250 and env["platform"] == "cpu"
    assert env["devices"] >= env["seed_devices"] >= 1 and {"jax", "jaxlib", "flax", "cpu_isa"} <= set(env)


def test_a_rerun_loads_its_programs_from_the_compilation_cache(tmp_path):
    """The main job keeps its compiled programs on disk: run again (a new process), it loads the
    training loop from the cache instead of compiling it."""
    import os
    import subprocess
    import sys

    inherited = {k: v for k, v in os.environ.items() if k != "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"}  # the command's own
    env = {**inherited, "VDJAX_COMPILATION_CACHE": str(tmp_path / "cache")}
    entries = []
    for name in ("first", "second"):
        cmd = [sys.executable, "-m", "vdjax", "spirals", "--max-depth", "2", "--seeds", "0", "--max-epochs", "10",
               "--no-plots", "--out", str(tmp_path / name)]
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        entries.append({p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()})
    # `vdjax.training.feeds._compiled_until`: the spirals epochs' compiled while_loop.
    assert any(n.startswith("jit_until-") for n in entries[0]), "the training loop was not stored"
    # Every program of the second run was found in the cache: none was added, none written again.
    assert entries[1] == entries[0]
    first, second = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("first", "second"))
    assert first["seeds"][0]["q"] == second["seeds"][0]["q"]  # the loaded program computes the same numbers


def test_the_compilation_cache_can_be_turned_off_and_a_bad_directory_only_warns(tmp_path, monkeypatch):
    from vdjax.runtime import CACHE_ENV, use_compilation_cache

    monkeypatch.setenv(CACHE_ENV, "off")
    assert use_compilation_cache() is None
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocked / "cache"))
    with pytest.warns(RuntimeWarning, match="no compilation cache"):
        assert use_compilation_cache() is None
