"""Results written by the library load back as records, stamped with their schema version."""

import pytest

from vdjax.io import SCHEMA_VERSION, write_json, write_text
from vdjax.studies import load_results


def test_every_results_file_loads_back_with_its_schema_version(tmp_path):
    write_json(tmp_path / "scan" / "width=0002.json", {"meta": {"width": 2}, "mean": {"d_opt": 9.5}})
    write_json(tmp_path / "results.json", {"mean": {"d_opt": 7.0}})
    write_text(tmp_path / "old.json", '{"mean": {"d_opt": 3.0}}')  # a file from before schema versions
    write_text(tmp_path / "notes.txt", "not a result")
    records = load_results(tmp_path)
    assert [r["path"] for r in records] == ["old.json", "results.json", "scan/width=0002.json"]
    assert [r["schema_version"] for r in records] == [0, SCHEMA_VERSION, SCHEMA_VERSION]
    assert [r["mean"]["d_opt"] for r in records] == [3.0, 7.0, 9.5]


def test_as_a_data_frame_nested_fields_become_columns(tmp_path):
    pd = pytest.importorskip("pandas")
    write_json(tmp_path / "a.json", {"meta": {"width": 2}, "mean": {"d_opt": 9.5}})
    write_json(tmp_path / "b.json", {"meta": {"width": 16}, "mean": {"d_opt": 4.0}})
    frame = load_results(tmp_path, as_frame=True)
    assert isinstance(frame, pd.DataFrame) and frame["meta.width"].tolist() == [2, 16]
    assert frame["mean.d_opt"].tolist() == [9.5, 4.0]


def test_a_missing_folder_and_a_non_object_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results folder"):
        load_results(tmp_path / "nope")
    with pytest.raises(TypeError, match="one JSON object"):
        write_json(tmp_path / "rows.json", [1, 2])
