"""Study results for notebooks and scripts: every results file under a folder, as records."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vdjax.io import read_json


def load_results(directory: str | os.PathLike, as_frame: bool = False) -> Any:
    """Every results file (`*.json` holding one object) under `directory`, recursively, in path
    order. Each record gains `path` (relative to `directory`) and keeps its `schema_version`
    (0 for files written before results carried one).

    With `as_frame`, one pandas DataFrame row per file, nested fields flattened to dotted
    columns (`mean.d_opt`, `environment.cpu_isa`) and lists kept as cells; pandas is optional,
    so this is the only call that needs it."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"no results folder {root}")
    records = []
    for path in sorted(root.rglob("*.json")):
        data = read_json(path)
        if isinstance(data, dict):
            records.append({"schema_version": 0, **data, "path": str(path.relative_to(root))})
    if not as_frame:
        return records
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("load_results(..., as_frame=True) needs pandas: pip install pandas") from None
    return pd.json_normalize(records, max_level=2)
