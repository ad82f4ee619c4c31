import json

from vdjax.cli import main


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
    import vdjax.experiment

    out, fallback = tmp_path / "run", tmp_path / "fallback"
    monkeypatch.setenv("VDJAX_FALLBACK_DIR", str(fallback))
    train = vdjax.experiment.run_in_memory

    def sabotaged(*args, **kwargs):
        run = train(*args, **kwargs)
        out.rmdir()
        out.write_text("someone else's file")
        return run

    monkeypatch.setattr(vdjax.experiment, "run_in_memory", sabotaged)
    assert main(["spirals", "--quick", "--max-depth", "6", "--seeds", "0", "1", "--out", str(out), "--no-plots"]) == 0
    captured = capsys.readouterr()
    assert out.read_text() == "someone else's file"
    results = next(fallback.rglob("results.json"))
    assert f"could not write {out / 'results.json'} ({out} is a file); wrote it to {results} instead" in captured.err
    assert f"wrote {results}, {results.parent / 'params_seed0.msgpack'}" in captured.out
    record = json.loads(results.read_text())
    assert [s["seed"] for s in record["seeds"]] == [0, 1]
    # What the numbers depend on is recorded with them.
    env = record["environment"]
    assert env["seeds_in_batch"] == 2 and env["chunk_epochs"] == 250 and env["platform"] == "cpu"
    assert env["devices"] >= env["seed_devices"] >= 1 and {"jax", "jaxlib", "flax"} <= set(env)
