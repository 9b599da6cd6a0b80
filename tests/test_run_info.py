"""What the benchmark scripts record about a run (benchmarks/run_info.py)."""
import json
import os
import platform

from benchmarks.run_info import ROOT, loadavg_fields, machine_line, model_label, write_result


def test_model_label_is_repo_relative_inside_the_repo(tmp_path):
    assert model_label(ROOT / "data" / "models" / "sft") == "data/models/sft"
    assert model_label(tmp_path / "m") == str((tmp_path / "m").resolve())


def test_machine_line_and_loadavg_fields():
    assert machine_line() == f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    fields = loadavg_fields((1.234, 0.5, 2.0))
    assert list(fields) == ["loadavg_before", "loadavg_after"]
    assert fields["loadavg_before"] == [1.23, 0.5, 2.0] and len(fields["loadavg_after"]) == 3


def test_write_result_makes_the_folder_and_ends_with_a_newline(tmp_path):
    out = tmp_path / "results" / "x.json"
    write_result(out, {"b": 1, "a": [1]})
    assert out.read_text() == json.dumps({"b": 1, "a": [1]}, indent=2) + "\n"
    write_result(out, {"b": 1}, indent=1)
    assert out.read_text() == '{\n "b": 1\n}\n'
