"""The images notebook executes top to bottom (on quick results), so it cannot rot. One file per
notebook: test files are spread over the pytest workers."""

import pytest
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.one_stack
def test_images_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    """Runs both image scripts (tiny grid, real Fashion-MNIST) through the notebook, then every figure."""
    from helpers import real_fashion_dir

    data_dir = real_fashion_dir()
    monkeypatch.setenv("VDJAX_RESULTS", str(tmp_path))
    monkeypatch.setenv("VDJAX_IMAGE_ARGS", f"--n-train 96 --n-test 64 --max-epochs 1 --batch-size 32 --depths 0 2 "
                                           f"--data-dir {data_dir} --source files")
    nb = nbformat.read(ROOT / "notebooks" / "images.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}},
                   ).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 4  # Figs 4, 9, 10, 11
    files = sorted(p.name for p in (tmp_path / "images" / "fashion_mnist").glob("*.json"))
    assert files == ["ddn_D000_s0.json", "ddn_D002_s0.json", "ldn_D000_s0.json", "ldn_D002_s0.json"]
    figures = sorted(p.name for p in (tmp_path / "images").glob("*.png"))
    assert figures == ["fig10_calibration.png", "fig11_speedup.png", "fig4_posterior_fashion_mnist.png",
                       "fig9_depth_scan.png"]
