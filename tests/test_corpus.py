"""The corpus format and its one reader (searchr2.corpus); the wiki-18 source rule is tested with
the data preparation in test_data.py, the pipeline rule with the index builders in test_retrieval.py."""
import gzip
import json

import pytest

from searchr2.corpus import (byte_progress, corpus_texts, format_contents, has_quoted_title, iter_passages,
                             parse_contents, passage_line)
from searchr2.io import InputError


def test_contents_format_round_trips_and_title_rule():
    contents = format_contents("Kestrane River", "The Kestrane River flows.")
    assert contents == '"Kestrane River"\nThe Kestrane River flows.'
    assert parse_contents(contents) == ("Kestrane River", "The Kestrane River flows.")
    assert has_quoted_title(contents) and has_quoted_title('"A "b" c"\ntext')
    for bad in ("no title line", 'Title\ntext', '"\ntext', ' "T"\ntext', '"T"'):
        assert not has_quoted_title(bad), bad


def test_passage_line_is_one_json_line_with_non_ascii_kept():
    line = passage_line("7", format_contents("Zoë", "café"))
    assert line == '{"id": "7", "contents": "\\"Zoë\\"\\ncafé"}\n'
    assert json.loads(line) == {"id": "7", "contents": '"Zoë"\ncafé'}


def test_iter_passages_streams_gz_and_names_the_first_use_of_a_repeated_id(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    rows = [{"id": "a", "contents": '"A"\nx', "extra": 1}, {"id": "10", "contents": '"B"\ny'}]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    assert list(iter_passages(path)) == [(1, "a", '"A"\nx'), (3, "10", '"B"\ny')]
    assert list(corpus_texts(path)) == ['"A"\nx', '"B"\ny']
    with gzip.open(path, "at", encoding="utf-8") as f:
        f.write(json.dumps({"id": "10", "contents": '"C"\nz'}) + "\n")
    with pytest.raises(InputError) as err:
        list(iter_passages(path))
    assert err.value.line == 4 and err.value.field == "id"
    assert "duplicate passage id '10' (first used at line 3)" in str(err.value)


def test_byte_progress_counts_the_file_and_tolerates_a_missing_one(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(passage_line(str(i), f'"T{i}"\ntext') for i in range(5000)))
    with byte_progress(path, "reading") as bar:
        assert [pid for _, pid, _ in iter_passages(path, bar)][-1] == "4999"
        assert bar.n == bar.total == path.stat().st_size
    with byte_progress(tmp_path / "nope.jsonl", "reading") as bar, pytest.raises(InputError, match="file not found"):
        list(iter_passages(tmp_path / "nope.jsonl", bar))
