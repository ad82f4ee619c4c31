"""A normal (tiny) run of each study script, as a user starts it: it finishes, writes its
results file and figure, and the numbers in them are what the script promises."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from vdjax.cli import validate

from helpers import real_fashion_dir  # noqa: E402  (skips, or fails in CI, without the files)

# Whole study scripts: .ci/run's second stack leaves them out (the library calls they make are tested
# on their own there).
pytestmark = pytest.mark.one_stack

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

TINY_DUN = ["--max-depth", "1", "--width", "8", "--max-epochs", "3", "--patience", "3", "--ensemble-size", "2",
            "--samples", "2", "--no-progress"]
METHODS = ("ldn", "ldn_full", "ddn", "ensemble", "dropout")


def _run(main, argv) -> None:
    assert validate.run_main(main, [str(a) for a in argv], prog="script") == 0


def test_regression_toy(tmp_path):
    import regression_toy

    _run(regression_toy.main, [*TINY_DUN, "--out", tmp_path])
    res = json.loads((tmp_path / "toy_gap.json").read_text())
    assert math.isclose(sum(res["q"]), 1.0, rel_tol=1e-5) and 0 <= res["d_opt"] <= 1
    for m in METHODS:
        assert math.isfinite(res["test"][m]["log_lik"]) and res["test"][m]["rmse"] > 0
        assert res["test_time_seconds"][m] > 0
    assert set(res["regions"]) == {"data", "gaps", "outside"}
    assert (tmp_path / "toy_gap.png").stat().st_size > 1000


def test_dataset_shift(tmp_path):
    import dataset_shift

    _run(dataset_shift.main, [*TINY_DUN, "--n-train", "64", "--n-test", "40", "--bottleneck", "4",
                              "--data-dir", real_fashion_dir(), "--out", tmp_path])
    res = json.loads((tmp_path / "shift_fashion_mnist.json").read_text())
    for m in ("ldn", "ddn", "ensemble", "dropout"):
        rows = res["rotation"][m]
        assert [r["angle"] for r in rows] == list(range(0, 181, 15))
        assert all(0 <= r["error"] <= 1 and 0 <= r["ece"] <= 1 and math.isfinite(r["log_lik"]) for r in rows)
        assert all(0 <= v <= 1 for v in res["ood_auroc"][m].values())
    assert (tmp_path / "shift_fashion_mnist.png").stat().st_size > 1000


def test_compare_search_strategies(tmp_path):
    import compare_search_strategies

    _run(compare_search_strategies.main, ["--datasets", "spirals", "--strategies", "ldn", "grid", "darts1",
                                          "--seeds", "1", "--max-depth", "2", "--search-steps", "20", "--out", tmp_path])
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert [r["strategy"] for r in rows] == ["ldn", "grid", "darts1"]
    for r in rows:
        assert 0 <= r["chosen_depth"] <= 2 and np.isclose(sum(r["distribution"]), 1.0, atol=1e-5)
    assert (tmp_path / "comparison.png").stat().st_size > 1000
