"""The spirals notebook executes top to bottom, on quick results and on the committed records,
so it cannot rot. One file per notebook: test files are spread over the pytest workers."""

import pytest
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
FINDINGS_HEADER = "| figure | the paper | ours | test | n | effect | 95% CI |"


def _run(monkeypatch, figures: Path, results: Path | None = None) -> nbformat.NotebookNode:
    monkeypatch.setenv("VDJAX_FIGURES", str(figures))
    if results is not None:
        monkeypatch.setenv("VDJAX_RESULTS", str(results))
    else:
        monkeypatch.delenv("VDJAX_RESULTS", raising=False)
    nb = nbformat.read(ROOT / "notebooks" / "spirals.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}},
                   ).execute()
    return nb


def _outputs(nb, kind: str) -> list[str]:
    return [o["data"][kind] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if kind in o.get("data", {})]


@pytest.mark.one_stack
def test_spirals_notebook_runs_top_to_bottom_on_quick_results(tmp_path, monkeypatch):
    monkeypatch.setenv("VDJAX_QUICK_ARGS", "--quick --repeats 1 --max-epochs 50")
    nb = _run(monkeypatch, tmp_path / "figures", tmp_path / "results")
    assert len(_outputs(nb, "image/png")) == 6  # Figs 2 (left), 3, 2 (right), 5, 6 (left), 6 (right)
    for name in ("scan_max_depth_spirals", "scan_width_spirals", "scan_data_amount", "scan_spiral_complexity"):
        assert len(list((tmp_path / "results" / name).glob("*.json"))) == 3
    assert len(list((tmp_path / "figures").glob("*.png"))) == 5  # the notebook's own; Fig 3 is the script's
    (table,) = [t for t in _outputs(nb, "text/markdown") if t.startswith(FINDINGS_HEADER)]
    assert table.count("\n| Fig") >= 10  # a row per finding the quick grids allow


def test_on_the_committed_records_its_verdicts_are_the_studies_own(tmp_path, monkeypatch):
    """By default the notebook reads the committed records the results page reads (each scan's
    rerun where it exists), and its verdict table is the one `vdjax.studies.spirals_study`
    computes from those records."""
    from vdjax.io import read_json
    from vdjax.studies.spirals_study import DDN_SCAN, SCANS, all_findings, committed_folder, findings_table

    nb = _run(monkeypatch, tmp_path)
    (table,) = [t for t in _outputs(nb, "text/markdown") if t.startswith(FINDINGS_HEADER)]
    records = {name: [read_json(p) for p in sorted(committed_folder(ROOT, name).glob("*.json"))]
               for name in (DDN_SCAN, *SCANS)}
    assert all(records.values())
    assert table.strip() == findings_table(all_findings(records)).strip()
