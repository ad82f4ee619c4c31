"""The causal transformer LM demonstration (experiments/lm_fortunes.py) on Debian's fortunes: its
--tiny run end to end (the results file with per-token metrics and perplexity, checked against a
hand computation from the saved weights; the page), its --help, and bad input as one line and
exit status 2."""

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from vdjax.cli import validate
from vdjax.studies import depth_demo

from helpers import REQUIRE_REAL  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

FORTUNES_DIR = "/usr/share/games/fortunes"


def real_fortunes_dir() -> str:
    """Debian's `fortunes` (not `fortunes-min` alone: 3 of the 43 files)."""
    if not os.path.isfile(os.path.join(FORTUNES_DIR, "science")):
        if REQUIRE_REAL:
            pytest.fail(f"{FORTUNES_DIR} is missing or partial: apt-get install fortunes")
        pytest.skip("Debian's fortunes is not installed")
    return FORTUNES_DIR


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import lm_fortunes as script

    out = tmp_path_factory.mktemp("lm_fortunes")
    argv = ["--tiny", "--no-progress", "--corpus", real_fortunes_dir(), "--out", str(out)]
    assert validate.run_main(script.main, argv, prog="script") == 0
    return out, json.loads((out / f"{script.NAME}.json").read_text())


def token_ll(log_probs: np.ndarray, y: np.ndarray) -> float:
    """Mean log-probability of the next tokens over every window's every position."""
    return float(np.take_along_axis(log_probs, y[..., None], axis=-1).mean())


@pytest.mark.one_stack
def test_tiny_run_records_per_token_metrics_and_perplexity(tiny):
    import lm_fortunes as script

    _, res = tiny
    t, depth = script.TINY.seq_len, script.TINY.max_depth
    assert res["demo"] == "lm_fortunes" and res["max_depth"] == depth and res["seeds"] == list(script.TINY.seeds)
    data = res["data"]
    assert data["target_shape"] == [t] and data["inputs"] == "tokens" and data["num_classes"] == 99
    assert (data["n_train"], data["n_val"], data["n_test"]) == (
        script.TINY.n_train, script.TINY.n_val, script.TINY.n_test)
    assert res["settings"]["train"]["stop_on"] == "val"
    assert res["command"].startswith("python3 experiments/lm_fortunes.py --tiny")
    for p in res["ldn"]:
        assert math.isclose(sum(p["q"]), 1.0, rel_tol=1e-5) and len(p["q"]) == depth + 1 and 0 <= p["d_opt"] <= depth
    assert len(res["ddn_depths"]) >= 3 and res["d_opt"]["median_95"] in res["ddn_depths"]
    summary = res["test"]["summary"]
    for name in ("ldn_full", "ldn_pruned", *(f"ddn_{d}" for d in res["ddn_depths"])):
        s = summary[name]
        assert {"log_lik", "error", "ece", "perplexity"} <= set(s) and s["perplexity"]["n"] == len(res["seeds"])
        # per token: a mean log-probability of one of 99 symbols, not a window's sum of T of them
        assert -2 * math.log(99) < s["log_lik"]["mean"] < 0
        assert 0 <= s["error"]["mean"] <= 1 and 0 <= s["ece"]["mean"] <= 1
    for rows in (res["test"]["ldn_full"], res["test"]["ldn_pruned"], *res["test"]["ddn"].values()):
        for r in rows:
            assert r["perplexity"] == pytest.approx(math.exp(-r["log_lik"]), rel=1e-9)
    for seed, curve in zip(res["ldn"], res["early_exit"]):
        assert [r["threshold"] for r in curve] == list(depth_demo.THRESHOLDS)
        assert all(0 <= r["mean_depth"] <= seed["d_opt"] and "perplexity" in r for r in curve)
        assert curve[-1]["mean_depth"] == seed["d_opt"]  # threshold 1 never stops early
    assert all("perplexity" in r for r in res["early_exit_summary"] + res["fixed_depth_summary"])


@pytest.mark.one_stack
def test_tiny_metrics_agree_with_a_hand_computation_per_token(tiny):
    """The full and pruned LDNs' test LL, error and ECE over every window's every position, from the
    saved weights and numpy."""
    import lm_fortunes as script
    from vdjax.depth.metrics import expected_calibration_error
    from vdjax.nn.models import eval_logits

    out, res = tiny
    data = script.load_windows(script.TINY, real_fortunes_dir())
    network = script.make_factory(script.TINY, 99)(script.TINY.max_depth)
    y = data.y_test
    for i, seed in enumerate(res["seeds"]):
        variables, q = depth_demo.load_weights(out, "ldn", res["max_depth"], seed)
        logits = np.asarray(eval_logits(network, variables, data.x_test), np.float64)  # [D+1, N, T, 99]
        assert logits.shape == (script.TINY.max_depth + 1, *y.shape, 99)
        log_p = np.log(softmax(logits, axis=-1))
        full = logsumexp(np.log(q)[:, None, None, None] + log_p, axis=0)
        d = res["ldn"][i]["d_opt"]
        folded = np.append(q[:d], q[d:].sum())  # pruning folds the mass of depths past d_opt onto it
        pruned = logsumexp(np.log(folded)[:, None, None, None] + log_p[: d + 1], axis=0)
        for name, lp in (("ldn_full", full), ("ldn_pruned", pruned)):
            rec = res["test"][name][i]
            assert rec["log_lik"] == pytest.approx(token_ll(lp, y), abs=1e-4)
            assert rec["perplexity"] == pytest.approx(math.exp(-token_ll(lp, y)), rel=1e-4)
            assert rec["error"] == pytest.approx(float(np.mean(lp.argmax(-1) != y)), abs=1e-6)
            ece, _ = expected_calibration_error(np.exp(lp).reshape(-1, 99), y.reshape(-1))  # every token a sample
            assert rec["ece"] == pytest.approx(ece, abs=1e-4)


@pytest.mark.one_stack
def test_tiny_page_reports_perplexity(tiny):
    _, res = tiny
    page = depth_demo.demo_markdown(res)
    for words in ("q(0)", "d_opt (95%)", "LDN pruned at d_opt", "test LL per position", "| perplexity |",
                  "exp(-LL per token)", "mean depth used", "Command: `python3 experiments/lm_fortunes.py"):
        assert words in page, words
    if not all(res["learnt"]["ldn"].values()):  # two epochs: nothing has converged
        assert "**Did not learn.**" in page


def test_help_explains_every_option():
    import lm_fortunes as script

    p = script.parser()
    text = p.format_help()
    assert text.startswith("usage:") and "nice -n 10 python3 experiments/lm_fortunes.py" in text
    for action in p._actions:
        assert action.help, action.option_strings
    d, doc = script.DEFAULT, " ".join(script.__doc__.split())
    for words in (f"D = {d.max_depth} ", f"width {d.width} with {d.heads} attention", f"T = {d.seq_len} ",
                  f"first {d.n_train:,} training", f"first {d.n_val} validation", f"first {d.n_test:,} test",
                  f"SGD lr {d.learning_rate:g}, momentum {d.momentum:g}, batch {d.batch_size}, at most {d.epochs} "
                  f"epochs, patience {d.patience}"):
        assert words in doc, words  # the docstring states the defaults
    for option in ("--tiny", "--out", "--seeds", "--max-depth", "--width", "--heads", "--n-train", "--lr", "--corpus",
                   "--thresholds", "--all-windows"):
        assert option in text, option


@pytest.mark.parametrize("argv", [["--thresholds", "0.5", "1.5"], ["--thresholds", "0"], ["--timing-thresholds", "-1"],
                                  ["--epochs", "-1"], ["--epochs", "0"], ["--lr", "0"], ["--momentum", "1"],
                                  ["--seeds", "0", "0"], ["--ddn-depths", "9"], ["--width", "30", "--heads", "4"],
                                  ["--corpus", "/nonexistent/fortunes"], ["--unknown"]])
def test_bad_input_is_one_line_and_status_2(argv, tmp_path, capsys):
    import lm_fortunes as script

    assert validate.run_main(script.main, [*argv, "--out", str(tmp_path / "out")], prog="script") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("script: error:") and "\n" not in err


def test_a_directory_without_the_corpus_is_one_line_and_status_2(tmp_path, capsys):
    import lm_fortunes as script

    (tmp_path / "empty").mkdir()
    argv = ["--tiny", "--corpus", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]
    assert validate.run_main(script.main, argv, prog="script") == 2
    err = capsys.readouterr().err.strip()
    assert "no fortunes corpus" in err and "apt-get install fortunes" in err and "\n" not in err
