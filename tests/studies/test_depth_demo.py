"""The depth demonstration runner (`vdjax.studies.depth_demo`) through the multi-stage ResNet
script's --tiny run: its results file, its page, and its early-exit curve against
`vdjax.early_exit` on the same trained network."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from vdjax.cli import validate
from vdjax.studies import depth_demo

from helpers import real_fashion_dir  # noqa: E402  (skips, or fails in CI, without the files)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

KEYS = {"schema_version", "demo", "about", "command", "machine", "settings", "network", "data", "max_depth",
        "seeds", "ldn", "d_opt", "learnt", "ddn_depths", "ddn", "test", "comparisons", "fixed_depth", "early_exit",
        "early_exit_summary", "fixed_depth_summary", "timing", "training_seconds", "phases_seconds", "wall_seconds",
        "resumed_from_epoch", "notes"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import resnet_stages_fashion_mnist as script

    out = tmp_path_factory.mktemp("resnet_stages")
    argv = ["--tiny", "--no-progress", "--data-dir", str(real_fashion_dir()), "--out", str(out)]
    assert validate.run_main(script.main, argv, prog="script") == 0
    return out, json.loads((out / f"{script.NAME}.json").read_text())


@pytest.mark.one_stack
def test_tiny_run_writes_every_part(tiny):
    _, res = tiny
    assert set(res) == KEYS
    depth, seeds = res["max_depth"], res["seeds"]
    assert depth == 3 and seeds == [0, 1] and res["command"].endswith("--tiny --no-progress --data-dir "
                                                                       f"{real_fashion_dir()} --out {tiny[0]}")
    for p in res["ldn"]:
        assert math.isclose(sum(p["q"]), 1.0, rel_tol=1e-5) and len(p["q"]) == depth + 1
        assert 0 <= p["d_opt"] <= depth and p["d_argmax"] == int(np.argmax(p["q"]))
        assert isinstance(p["learnt"]["learnt"], bool) and p["learnt"]["uniform_bar"] == pytest.approx(0.5)
    assert len(res["ddn_depths"]) >= 3 and res["d_opt"]["median_95"] in res["ddn_depths"]
    assert set(res["ddn"]) == set(res["test"]["ddn"]) == {str(d) for d in res["ddn_depths"]}
    summary = res["test"]["summary"]
    for name in ("ldn_full", "ldn_pruned", *(f"ddn_{d}" for d in res["ddn_depths"])):
        assert summary[name]["error"]["n"] == 2 and 0 <= summary[name]["error"]["mean"] <= 1
    comp = res["comparisons"]
    assert comp["pruned_vs_full"]["log_lik"]["verdict"] and f"pruned_vs_ddn_{comp['ddn_depth']}" in comp
    for curve in res["fixed_depth"]:
        assert [r["depth"] for r in curve] == list(range(depth + 1))
    for seed, curve in zip(res["ldn"], res["early_exit"]):
        assert [r["threshold"] for r in curve] == list(depth_demo.THRESHOLDS)
        assert all(0 <= r["mean_depth"] <= seed["d_opt"] for r in curve)
        assert curve[-1]["mean_depth"] == seed["d_opt"]  # threshold 1 never stops early
    timing = res["timing"]["median"]
    assert set(timing) == {"32", "8"}
    for rows in timing.values():
        assert {"ldn_full", "ldn_pruned", "ddn_3", "early_exit_0.9"} <= set(rows)
        assert all(r["seconds"] > 0 for r in rows.values())
    phases = {"train LDNs", "evaluate", "time", *(f"train DDN-{d}" for d in res["ddn_depths"])}
    assert set(res["phases_seconds"]) == phases


@pytest.mark.one_stack
def test_demo_markdown_renders_the_tiny_run(tiny):
    _, res = tiny
    page = depth_demo.demo_markdown(res)
    for words in ("q(0)", "d_opt (95%)", "LDN pruned at d_opt", "DDN-3", "Paired t-tests", "Holm p", "threshold",
                  "mean depth used", "batch 32", "batch 8", "A batch runs as deep as its deepest example",
                  "Command: `"):
        assert words in page, words
    if not all(res["learnt"]["ldn"].values()):  # two epochs: q(d) stays near uniform
        assert "**Did not learn.**" in page


@pytest.mark.one_stack
@pytest.mark.parametrize("threshold", [0.5, 0.9])
def test_curve_agrees_with_early_exit(tiny, threshold):
    """The runner's curve (exit_depths on the full network's outputs) and vdjax.early_exit (the
    pruned network run block by block, stopping on the device) on the same trained network."""
    import resnet_stages_fashion_mnist as script
    import vdjax
    from vdjax.nn.resnet import staged_resnet

    out, res = tiny
    data = vdjax.load_images("fashion_mnist", real_fashion_dir(), n_train=script.TINY.n_train,
                             n_test=script.TINY.n_test)
    network = staged_resnet(script.TINY.blocks, script.TINY.widths, common=script.TINY.common)
    for i, seed in enumerate(res["seeds"]):
        variables, q = depth_demo.load_weights(out, "ldn", res["max_depth"], seed)
        d_opt = res["ldn"][i]["d_opt"]
        np.testing.assert_allclose(q, res["ldn"][i]["q"], rtol=1e-6)
        exited = vdjax.early_exit(vdjax.prune(network, variables, q, d_opt), data.x_test, threshold, batch_size=64)
        row = next(r for r in res["early_exit"][i] if r["threshold"] == threshold)
        assert np.mean(exited.depth) == pytest.approx(row["mean_depth"], abs=0.02)
        ll = np.take_along_axis(exited.log_probs, data.y_test[:, None], axis=-1).mean()
        assert ll == pytest.approx(row["log_lik"], abs=1e-3)
        assert np.mean(exited.log_probs.argmax(-1) != data.y_test) == pytest.approx(row["error"], abs=0.02)
        assert len(exited.computed) == 2 and max(exited.computed) <= d_opt


def test_ddn_depths_are_three_at_least():
    config = depth_demo.DemoConfig(name="x", max_depth=9, seeds=(0,))
    assert depth_demo.ddn_depths([4, 5, 7], config) == [1, 5, 9]
    assert depth_demo.ddn_depths([9, 9], config) == [1, 4, 9]
    assert depth_demo.ddn_depths([1], depth_demo.DemoConfig(name="x", max_depth=2, seeds=(0,))) == [0, 1, 2]
    assert depth_demo.ddn_depths([3], depth_demo.DemoConfig(name="x", max_depth=9, ddn_depths=(6,))) == [1, 3, 6, 9]


def test_learnt_needs_q_off_uniform_and_a_converged_loss():
    from vdjax.training.config import IMAGE_PROTOCOL

    falling = [{"epoch": e, "val_loss": 2.0 - 0.1 * e} for e in range(8)]
    flat = [{"epoch": e, "val_loss": v} for e, v in enumerate((2.0, 1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9))]
    peaked, uniform = np.array([0.1, 0.7, 0.1, 0.1]), np.full(4, 0.25)
    assert not depth_demo.learnt_record(peaked, falling, "max_epochs", IMAGE_PROTOCOL)["learnt"]
    assert depth_demo.learnt_record(peaked, flat, "max_epochs", IMAGE_PROTOCOL)["learnt"]
    assert depth_demo.learnt_record(peaked, falling, "patience", IMAGE_PROTOCOL)["learnt"]
    r = depth_demo.learnt_record(uniform, flat, "patience", IMAGE_PROTOCOL)
    assert r["converged"] and not r["q_off_uniform"] and not r["learnt"]


def test_convergence_is_read_after_the_last_change_of_learning_rate():
    import dataclasses

    from vdjax.training.config import IMAGE_PROTOCOL

    peaked = np.array([0.1, 0.7, 0.1, 0.1])
    # The first learning rate at epochs 0-3; a drop at epoch 4 takes the loss to 0.8, then flat.
    dropped = [{"epoch": e, "val_loss": v} for e, v in enumerate((2.0, 1.0, 0.95, 0.93, 0.8, 0.8, 0.8, 0.8))]
    drop_at = {"lr_drop_epoch": 4, "lr_drop_methods": ("ldn", "ddn")}
    for at, method_q in [(4, peaked), (7, peaked), (4, None)]:
        train = dataclasses.replace(IMAGE_PROTOCOL, **{**drop_at, "lr_drop_epoch": at})
        r = depth_demo.learnt_record(method_q, dropped, "max_epochs", train)
        settled = [h["epoch"] for h in depth_demo.settled_epochs(dropped, train, "ddn" if method_q is None else "ldn")]
        if at == 4:  # epochs 4-7 at the final rate; their last quarter (epoch 7) improved nothing
            assert settled == [4, 5, 6, 7] and r["settled_from_epoch"] == 4
            assert r["last_quarter_improvement"] == 0.0 and r["learnt"]
        else:  # one epoch at the final rate cannot show convergence
            assert settled == [7] and not r["converged"] and not r["learnt"]
    # A drop inside the run's last quarter: over all 12 epochs its own improvement (0.9 -> 0.7)
    # would read as not converged; the 2 epochs at the final rate improved nothing.
    late = [{"epoch": e, "val_loss": v} for e, v in enumerate([2.0, 1.0] + [0.9] * 8 + [0.7, 0.7])]
    train = dataclasses.replace(IMAGE_PROTOCOL, **{**drop_at, "lr_drop_epoch": 10})
    r = depth_demo.learnt_record(peaked, late, "max_epochs", train)
    assert r["settled_from_epoch"] == 10 and r["last_quarter_improvement"] == 0.0 and r["learnt"]
    r = depth_demo.learnt_record(peaked, late, "max_epochs", dataclasses.replace(IMAGE_PROTOCOL, lr_drop_epoch=None))
    assert r["settled_from_epoch"] == 0 and not r["learnt"]
    assert r["last_quarter_improvement"] == pytest.approx(0.2 / 0.7)


@pytest.mark.parametrize("argv", [["--epochs", "-1"], ["--thresholds", "0.5", "1.5"], ["--timing-thresholds", "0"],
                                  ["--unknown"], ["--seeds", "0", "0"], ["--ddn-depths", "10"]])
def test_bad_input_is_one_line_and_status_2(argv, tmp_path, capsys):
    import resnet_stages_fashion_mnist as script

    assert validate.run_main(script.main, [*argv, "--out", str(tmp_path)], prog="script") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("script: error:") and "\n" not in err


def test_a_resumed_run_reports_each_programs_time_over_all_its_calls():
    result = {"resumed_from_epoch": {"ldn": 14, "ddn_1": None}, "training_seconds": {"ldn": 566.4, "ddn_1": 46.4}}
    said = depth_demo.resumed_markdown(result)
    assert "(LDNs after epoch 14)" in said and "LDNs 566 s, DDN-1 46 s" in said
    assert depth_demo.resumed_markdown({**result, "resumed_from_epoch": {"ldn": None, "ddn_1": None}}) == ""
