"""The spirals notebook executes top to bottom (on quick results), so it cannot rot. One file per
notebook: test files are spread over the pytest workers."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]


def test_spirals_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("VDJAX_RESULTS", str(tmp_path))
    monkeypatch.setenv("VDJAX_QUICK_ARGS", "--quick --repeats 1 --max-epochs 50")
    nb = nbformat.read(ROOT / "notebooks" / "spirals.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}},
                   ).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 6  # Figs 2 (left), 3, 2 (right), 5, 6 (left), 6 (right)
    for name in ("scan_max_depth_spirals", "scan_width_spirals", "scan_data_amount", "scan_spiral_complexity"):
        assert len(list((tmp_path / name).glob("*.json"))) == 3
