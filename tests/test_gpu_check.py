"""The GPU check's dry run (`--tiny`, CPU) fills every section of its JSON with numbers that
hold together, and its verdicts follow from them; bad input is one line and exit status 2."""

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_check  # noqa: E402

from vdjax.cli import validate  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import report  # noqa: E402

# A benchmark script's dry run: .ci/run's second stack leaves it out (the library calls it makes are
# tested on their own there).
pytestmark = pytest.mark.one_stack

SECTIONS = ("environment", "cnn_step", "networks_per_program", "slice", "time_split")


def _has_torch() -> bool:
    if os.environ.get("VDJAX_REQUIRE_TORCH") == "1":  # CI installs it: a missing torch fails there
        import torch  # noqa: F401
        return True
    return gpu_check.torch is not None


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    threads = gpu_check.torch.get_num_threads() if gpu_check.torch is not None else None
    try:
        res = gpu_check.main(["--tiny", "--out", str(out)])
    finally:
        if threads is not None:
            gpu_check.torch.set_num_threads(threads)  # the dry run keeps PyTorch to one thread
    return res, json.loads(out.read_text())


def test_every_section_is_written(dry_run):
    res, saved = dry_run
    from vdjax.io import SCHEMA_VERSION

    assert saved == {"schema_version": SCHEMA_VERSION, **json.loads(json.dumps(res))}  # the file is what main returned
    assert saved["tiny"] is True and saved["precision"]["dtype"] == "float32"
    assert set(saved["sections"]) == set(SECTIONS)
    for name in SECTIONS:
        section = saved["sections"][name]
        assert section["status"] in ("complete", "partial"), (name, section.get("error"))
        assert section["wall_s"] >= 0 and section["budget_s"] >= 0
    env = saved["sections"]["environment"]
    assert env["device_count"] >= 1 and env["versions"]["jax"] and env["vdjax"]["platform"] == env["backend"]
    assert saved["wall_s"] > 0


def test_step_and_throughput_medians(dry_run):
    _, res = dry_run
    torch = _has_torch()
    cnn = res["sections"]["cnn_step"]
    assert [r["max_depth"] for r in cnn["rows"]] == [1, 2] and cnn["cut"] == []
    for r in cnn["rows"]:
        assert r["vdjax_step_s"] > 0 and r["vdjax_compile_s"] > 0
        if torch:
            assert r["torch_step_s"] > 0 and r["speedup"] == pytest.approx(r["torch_step_s"] / r["vdjax_step_s"])
    assert (cnn["torch_skipped"] is None) == torch
    nets = res["sections"]["networks_per_program"]
    assert [r["networks"] for r in nets["rows"]] == [1, 2]
    for r in nets["rows"]:
        assert r["vdjax_program"] > 0
        assert len(nets["times_s"][f"vdjax_{r['networks']}"]) == nets["rounds"]
        if torch:
            assert r["program_vs_torch"] == pytest.approx(r["vdjax_program"] / r["torch_sequential"])
    split = res["sections"]["time_split"]
    assert split["device_step_s"] > 0 and split["host_fed_step_s"] > 0 and split["trainer_step_s"] > 0
    assert split["trainer_vs_device"] == pytest.approx(split["trainer_step_s"] / split["device_step_s"])


def test_slice_networks(dry_run):
    _, res = dry_run
    sl = res["sections"]["slice"]
    assert sorted((n["method"], n["max_depth"]) for n in sl["networks"]) == [("ddn", 1), ("ldn", 1)]
    assert sorted(c["item"] for c in sl["cut"]) == ["ddn D=2", "ldn D=2"]  # the optional depth
    assert sl["schedules"] == {"ldn": "lr 0.1 constant", "ddn": "lr 0.1, x0.1 after epoch 31"}
    for n in sl["networks"]:
        assert 1 <= n["epochs"] <= sl["max_epochs"] and n["stopped"] in ("patience", "max_epochs", "time_budget")
        assert n["lr_drop_epoch"] == (None if n["method"] == "ldn" else 31)
        assert n["test"]["log_lik"] <= 0 and 0 <= n["test"]["error"] <= 1 and 0 <= n["test"]["ece"] <= 1
        assert len(n["history"]) == n["epochs"]
        if n["method"] == "ldn":
            d = n["max_depth"]
            q = np.asarray(n["q"])
            assert q.shape == (d + 1,) and q.sum() == pytest.approx(1.0) and (q >= 0).all()
            assert 0 <= n["entropy"] <= math.log(d + 1) + 1e-9 and n["entropy_max"] == pytest.approx(math.log(d + 1))
            assert n["entropy_fraction"] == pytest.approx(n["entropy"] / n["entropy_max"])
            assert 0 <= n["d_opt"] <= d and 0 <= n["d_expected"] <= d


def test_verdicts_follow_from_the_numbers(dry_run):
    _, res = dry_run
    verdicts = {t["name"]: t for t in res["targets"]}
    assert set(verdicts) == {"cnn_step_speedup", "networks_vs_torch", "ldn_entropy_fraction"}
    for t in verdicts.values():
        if t["value"] is None:
            assert t["met"] is None and t["reason"]
        elif t["name"] == "ldn_entropy_fraction":
            assert t["met"] == (t["value"] <= t["threshold"])
        else:
            assert t["met"] == (t["value"] >= t["threshold"])
    ldn = [n["entropy_fraction"] for n in res["sections"]["slice"]["networks"] if n["method"] == "ldn"]
    assert verdicts["ldn_entropy_fraction"]["value"] == max(ldn)
    measured = _has_torch()
    assert (verdicts["cnn_step_speedup"]["value"] is not None) == measured
    assert (verdicts["networks_vs_torch"]["value"] is not None) == measured


def test_the_report_renders_the_file(dry_run):
    _, res = dry_run
    text = report.gpu_check_markdown(res)
    assert text.startswith("**Dry run")
    for heading in ("**CNN LDN train step**", "**Networks per program**", "**Paper-protocol slice**",
                    "**Where the time goes**", "| target | result |"):
        assert heading in text
    assert "Cut: ldn D=2 (optional; the dry run)" in text
    assert report.gpu_check_not_run().count("\n") == 1


@pytest.mark.parametrize("args", [
    ["--data-dir", "{tmp}/missing", "--out", "{tmp}/out.json"],  # no such directory
    ["--data-dir", "{tmp}", "--out", "{tmp}/out.json"],  # no Fashion-MNIST files in it
    ["--tiny", "--budget-s", "0", "--out", "{tmp}/out.json"],
    ["--tiny", "--out", "{tmp}"],  # a directory where the file goes
])
def test_bad_input_is_one_line_and_status_2(args, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in args]
    assert validate.run_main(gpu_check.main, argv, prog="gpu_check.py") == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu_check.py: error: ") and err.count("\n") == 1
