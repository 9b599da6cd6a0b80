"""What the benchmark scripts record about a run (benchmarks/run_info.py)."""
import json
import os
import platform
from pathlib import Path

from benchmarks.run_info import ROOT, loadavg_fields, lscpu, machine_line, model_label, write_result


def test_model_label_is_repo_relative_inside_the_repo(tmp_path):
    assert model_label(ROOT / "data" / "models" / "sft") == "data/models/sft"
    assert model_label(tmp_path / "m") == str((tmp_path / "m").resolve())


def test_machine_line_and_loadavg_fields():
    assert machine_line() == f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    fields = loadavg_fields((1.234, 0.5, 2.0))
    assert list(fields) == ["loadavg_before", "loadavg_after"]
    assert fields["loadavg_before"] == [1.23, 0.5, 2.0] and len(fields["loadavg_after"]) == 3


def test_lscpu_names_the_processor_by_its_numbers():
    """The CPU count and vendor/family/model come from lscpu's own fields (read here from the same source)."""
    cpu = lscpu()
    assert cpu["cpus"] == str(os.cpu_count())
    vendor, family, model = cpu["vendor_family_model"].split("/")
    first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]            # the first processor's block
    cpuinfo = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first.splitlines() if ":" in line)}
    assert vendor == cpuinfo["vendor_id"]
    assert (family, model) == (cpuinfo["cpu family"], cpuinfo["model"])
    assert set(cpu["flags_of_note"]) <= set(cpuinfo["flags"].split())


def test_write_result_makes_the_folder_and_ends_with_a_newline(tmp_path):
    out = tmp_path / "results" / "x.json"
    write_result(out, {"b": 1, "a": [1]})
    assert out.read_text() == json.dumps({"b": 1, "a": [1]}, indent=2) + "\n"
    write_result(out, {"b": 1}, indent=1)
    assert out.read_text() == '{\n "b": 1\n}\n'


def test_decode_step_benchmark_counts_the_bytes_its_cache_holds(tmp_path):
    """bench_decode_step's bound rests on kv_bytes: it must equal the bytes of keys and values the filled
    cache really holds, and the timed steps must grow that cache by one column each."""
    import pytest
    torch = pytest.importorskip("torch")
    from conftest import make_tiny_model

    from benchmarks.bench_decode_step import filled_cache, kv_bytes, time_steps
    from searchr2.models import load_model

    lm = load_model(make_tiny_model(tmp_path, seed=0), "float32")
    cache, head_dim = filled_cache(torch, lm, rows=3, context=40, dtype=torch.float32)
    held = sum(layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
               for layer in cache.layers)
    assert cache.get_seq_length() == 40
    assert kv_bytes(lm, 3, 40, head_dim, 4) == held
    r = time_steps(torch, lm, rows=3, context=40, steps=2, dtype=torch.float32, profile=True)
    assert r["rows"] == 3 and r["context"] == 40 and r["step_seconds"] > 0
    assert abs(r["attention_share"] + r["linear_share"] + r["other_share"] - 1) < 1e-3
    assert r["attention_share"] > 0 and r["linear_share"] > 0


def test_decode_step_benchmark_compares_packed_and_plain_products_per_layer_shape(tmp_path):
    import pytest
    torch = pytest.importorskip("torch")
    from conftest import make_tiny_model

    from benchmarks.bench_decode_step import packed_agreement
    from searchr2.models import load_model
    from searchr2.packing import packing_available

    lm = load_model(make_tiny_model(tmp_path, seed=0), "bfloat16")
    found = packed_agreement(torch, lm, [1, 2, 64])
    if not packing_available():
        assert found == {}
        return
    shapes = {f"{m.weight.shape[0]}x{m.weight.shape[1]}" for m in lm.modules() if isinstance(m, torch.nn.Linear)}
    assert set(found) == shapes and all(set(rows) <= {1, 2, 64} for rows in found.values())


def test_revision_benchmark_splits_revisions_by_whether_the_group_could_answer():
    """bench_revision: ``group_em`` counts the revised trajectory itself, so a revision that found the answer
    in a group where nobody else did is still a question no other sample answered."""
    from benchmarks.bench_revision import others_answered, summarize

    def rev(before, after, group_em):
        return {"reward_before": before, "reward_after": after, "group_em": group_em}

    assert not others_answered(rev(0.0, 1.0, 0.2), 5)          # only itself, after revising
    assert others_answered(rev(0.0, 1.0, 0.4), 5) and others_answered(rev(0.0, 0.0, 0.2), 5)
    assert not others_answered(rev(0.0, 0.0, 0.0), 5)
    revisions = [rev(0.0, 1.0, 0.2), rev(0.0, 0.0, 0.0), rev(0.0, 2.0, 0.6), rev(1.0, 0.0, 0.4)]
    out = summarize(revisions, 5, seed=0)
    assert out["all"]["n"] == 4 and out["all"]["better"] == 2 and out["all"]["worse"] == 1
    assert out["others_answered"]["n"] == 2 and out["others_answered"]["diff"] == 0.5
    assert out["none_answered"]["n"] == 2 and out["none_answered"]["better"] == 1


def test_revision_benchmark_reads_stricter_margins_off_one_run():
    """bench_revision's what-if table: a stricter margin revises the subset of this run's revisions whose P(0)
    is low enough (revise when 1 - P(0) >= P(0) + margin); margins looser than the run's are not readable."""
    from benchmarks.bench_revision import what_if
    from searchr2.refiner import RefinerConfig

    def review(p_accept, revised, before, after):
        return {"p_accept": p_accept, "revised": revised, "reward_before": before, "reward_after": after}

    reviews = [review(0.9, False, 1.0, 1.0), review(0.3, True, 0.0, 1.0), review(0.6, True, 1.0, 0.0),
               review(0.45, True, 0.0, 0.0)]
    rows = what_if(reviews, RefinerConfig(margin=-0.4), [0.0, -0.4, -0.8], seed=0)
    assert [r["margin"] for r in rows] == [0.0, -0.4]            # -0.8 is looser than the run's -0.4
    strict, own = rows
    assert strict["acceptance_rate"] == 0.5 and strict["effect"]["n"] == 2 and strict["rewarded_revised"] == 0
    assert strict["effect"]["better"] == 1 and strict["effect"]["worse"] == 0
    assert own["acceptance_rate"] == 0.25 and own["rewarded_revised"] == 1 and own["effect"]["worse"] == 1
    assert what_if(reviews, RefinerConfig(revise_score="best"), [0.0], seed=0) == []
