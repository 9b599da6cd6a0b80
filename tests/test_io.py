"""Located input errors and atomic outputs (searchr2.io)."""
import gzip
import hashlib
import json

import pytest

from searchr2.io import (InputError, atomic_dir, atomic_file, open_text, read_jsonl, require_field, require_id,
                         sha256_file, write_jsonl)


def test_read_jsonl_locates_bad_json(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2\n')
    rows = read_jsonl(p)
    assert next(rows) == (1, {"a": 1})
    with pytest.raises(InputError, match=r"x\.jsonl:3: not valid JSON"):
        next(rows)


def test_read_jsonl_rejects_non_objects_and_reads_gz(tmp_path):
    p = tmp_path / "x.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write('{"a": 1}\n[1, 2]\n')
    rows = read_jsonl(p)
    assert next(rows)[1] == {"a": 1}
    with pytest.raises(InputError, match=r":2: expected a JSON object, got list"):
        next(rows)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match="nope.jsonl: file not found"):
        list(read_jsonl(tmp_path / "nope.jsonl"))


def test_require_field_messages():
    with pytest.raises(InputError, match=r"f\.jsonl:7: field 'golden_answers': missing"):
        require_field({}, "golden_answers", list, "f.jsonl", 7)
    with pytest.raises(InputError, match=r"field 'golden_answers': is empty"):
        require_field({"golden_answers": []}, "golden_answers", list, "f.jsonl", 7)
    with pytest.raises(InputError, match=r"field 'question': expected str, got int"):
        require_field({"question": 3}, "question", str, "f.jsonl", 7)
    assert require_field({"q": "x"}, "q", str, "f", 1) == "x"


def test_atomic_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as d:
        (d / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as d:
            (d / "a.txt").write_text("half")
            raise RuntimeError("killed")
    assert (out / "a.txt").read_text() == "first"          # old output untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind
    assert oct(out.stat().st_mode & 0o777) == "0o755"


def test_atomic_file_and_write_jsonl(tmp_path):
    out = tmp_path / "r.jsonl"
    with pytest.raises(ValueError):
        with atomic_file(out) as f:
            f.write("partial")
            raise ValueError
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert write_jsonl(out, [{"a": 1}, {"b": "é"}]) == 2
    assert [json.loads(l) for l in out.read_text().splitlines()] == [{"a": 1}, {"b": "é"}]


def test_require_id_converts_ints_and_refuses_bools_and_blanks():
    assert require_id({"id": 7}, "f.jsonl", 1) == "7" and require_id({"id": "x"}, "f.jsonl", 1) == "x"
    for record, words in (({"id": True}, "expected str or int, got bool"), ({"id": " "}, "is blank"),
                          ({"id": ""}, "is empty"), ({"id": None}, "expected str or int"), ({}, "missing")):
        with pytest.raises(InputError, match=rf"^f\.jsonl:3: field 'id': {words}"):
            require_id(record, "f.jsonl", 3)


def test_sha256_file_hashes_in_blocks_and_can_extend_a_hash(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(bytes(range(256)) * 5000)          # more than one 1 MiB block
    b.write_bytes(b"second")
    assert sha256_file(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    h = hashlib.sha256(b"prefix")
    sha256_file(a, h)
    assert sha256_file(b, h) == hashlib.sha256(b"prefix" + a.read_bytes() + b"second").hexdigest()


@pytest.mark.parametrize("name", ["x.jsonl", "x.jsonl.gz"])
def test_read_jsonl_skips_a_byte_order_mark_only_at_the_start(tmp_path, name):
    p = tmp_path / name
    data = '\ufeff{"a": 1}\n{"b": "\ufeffinside"}\n'.encode("utf-8")
    p.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    assert list(read_jsonl(p)) == [(1, {"a": 1}), (2, {"b": "\ufeffinside"})]


def test_open_text_recognises_gzip_without_the_suffix(tmp_path):
    p = tmp_path / "saved_without_suffix.jsonl"
    p.write_bytes(gzip.compress(b'{"a": 1}\n'))
    assert list(read_jsonl(p)) == [(1, {"a": 1})]
    with open_text(p) as f:
        assert f.read() == '{"a": 1}\n'


def test_read_jsonl_names_undecodable_and_damaged_files(tmp_path):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"latin1\.jsonl: not UTF-8 text \(invalid continuation byte\) after line 0"):
        list(read_jsonl(p))     # decoded in blocks: the bad byte lies after the last line read intact
    whole = gzip.compress(b"".join(b'{"n": %d}\n' % i for i in range(1000)))
    for name, data in (("cut.jsonl.gz", whole[: len(whole) // 2]), ("plain.jsonl.gz", b'{"a": 1}\n')):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match=rf"{name}: gzip data corrupt or cut short after line \d+"):
            list(read_jsonl(tmp_path / name))
