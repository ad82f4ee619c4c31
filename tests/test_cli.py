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
    assert "max_depth must be an integer >= 0" in capsys.readouterr().err
    assert main(["spirals", "--width", "0", "--out", str(tmp_path)]) == 2
    assert "width must be" in capsys.readouterr().err
