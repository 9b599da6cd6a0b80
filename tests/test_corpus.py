"""The corpus format and its one reader (searchr2.corpus): the title convention, the source rule
(wiki-18 lines with quoted or bare titles, title/text lines, BOM, gzip, malformed lines) on files
written in the published formats, and the pipeline rule. The prepare step that calls the source
reader is tested in test_data.py, the index builders that call the pipeline reader in test_retrieval.py."""
import gzip
import json

import pytest

from searchr2.corpus import (byte_progress, corpus_texts, format_contents, iter_passages, iter_source_passages,
                             parse_contents, passage_line)
from searchr2.io import InputError

BOM = "\ufeff"

# Real wiki-18 lines (Search-R1's / FlashRAG's wiki-18.jsonl): the title line is quoted when the
# title has a space or punctuation, bare otherwise.
QUOTED = '{"id": "1", "contents": "\\"Evan Morris\\"\\nEvan L. Morris (January 26, 1977 - July 9, 2015) was a lobbyist."}'
BARE = '{"id": "7", "contents": "Absalon\\nAbsalon (1128 - 1201) was a Danish archbishop and statesman."}'
CANONICAL = [{"id": "1", "contents": '"Evan Morris"\nEvan L. Morris (January 26, 1977 - July 9, 2015) was a lobbyist.'},
             {"id": "7", "contents": '"Absalon"\nAbsalon (1128 - 1201) was a Danish archbishop and statesman.'}]


def write_lines(path, lines, bom=False):
    """Write raw jsonl lines to ``path`` (gzip for .gz), optionally after a UTF-8 byte-order mark."""
    text = (BOM if bom else "") + "".join(line + "\n" for line in lines)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_contents_format_round_trips_and_title_rule():
    contents = format_contents("Kestrane River", "The Kestrane River flows.")
    assert contents == '"Kestrane River"\nThe Kestrane River flows.'
    assert parse_contents(contents) == ("Kestrane River", "The Kestrane River flows.")
    # quoted and bare title lines mean the same title; quotes inside a title are kept
    assert parse_contents('Absalon\nAbsalon was.') == parse_contents('"Absalon"\nAbsalon was.') == ("Absalon", "Absalon was.")
    assert parse_contents('"A "quoted" title"\nx') == ('A "quoted" title', "x")
    assert parse_contents('"Heroes" (TV series)\nx') == ('"Heroes" (TV series)', "x")   # not one surrounding pair
    assert parse_contents(' "T" \r\n  text  \n more ') == ("T", "text  \n more")
    assert parse_contents("\ntext") == ("", "text")
    # the splitter is total: no newline means no title (the source reader refuses such a line)
    assert parse_contents("no title line") == ("", "no title line")
    for title in ("T", "", '"', '""', '"Heroes"', 'A "b" c', "Zoë", "x\ty"):
        for text in ("text", "two\nlines"):
            assert parse_contents(format_contents(title, text)) == (title, text), (title, text)
    with pytest.raises(ValueError, match="one line"):
        format_contents("a\nb", "text")


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


# ----------------------------------------------------------------------------- the source rule

@pytest.mark.parametrize("name", ["wiki.jsonl", "wiki.jsonl.gz"])
@pytest.mark.parametrize("bom", [False, True])
def test_source_reads_quoted_and_bare_titles_plain_gz_and_bom(tmp_path, name, bom):
    path = write_lines(tmp_path / name, [QUOTED, "", BARE], bom=bom)
    assert list(iter_source_passages(path)) == CANONICAL


def test_source_title_text_layout_is_normalised(tmp_path):
    path = write_lines(tmp_path / "psgs.jsonl", [
        json.dumps({"id": 1, "title": "Evan Morris", "text": "Evan L. Morris (January 26, 1977 - July 9, 2015) "
                    "was a lobbyist.", "score": 0.5}),
        json.dumps({"id": "7", "title": " Absalon ", "text": " Absalon (1128 - 1201) was a Danish archbishop "
                    "and statesman.\n"}),
        json.dumps({"id": "8", "title": "", "text": "A passage whose title is empty."}),
    ])
    assert list(iter_source_passages(path)) == [
        *CANONICAL, {"id": "8", "contents": '""\nA passage whose title is empty.'}]


def test_source_contents_with_matching_title_and_text_is_unambiguous(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [
        json.dumps({"id": "1", "contents": '"Evan Morris"\nEvan L. Morris was.', "title": "Evan Morris",
                    "text": "Evan L. Morris was."}),
        json.dumps({"id": "2", "contents": 'Absalon\nAbsalon was.', "title": "Absalon"}),
        json.dumps({"id": "3", "contents": '"Q"\nbody', "title": '"Q"'}),       # the title line as written
        json.dumps({"id": "4", "contents": '"T"\nbody', "text": " body "}),
    ])
    assert [p["contents"] for p in iter_source_passages(path)] == [
        '"Evan Morris"\nEvan L. Morris was.', '"Absalon"\nAbsalon was.', '"Q"\nbody', '"T"\nbody']


def test_source_reading_streams(tmp_path):
    """Passages come out as they are read: the lines before a bad one are yielded before it fails."""
    path = write_lines(tmp_path / "c.jsonl.gz", [QUOTED, BARE, "{broken"])
    passages = iter_source_passages(path)
    assert [next(passages), next(passages)] == CANONICAL
    with pytest.raises(InputError, match=r"c\.jsonl\.gz:3: not valid JSON"):
        next(passages)


@pytest.mark.parametrize("bad, field, words", [
    # not a passage at all
    ('{"id": "9", "contents": ', None, "not valid JSON"),
    ('["9", "Title\\ntext"]', None, "expected a JSON object, got list"),
    # the id
    ('{"contents": "T\\ntext"}', "id", "missing"),
    ('{"id": 9.0, "contents": "T\\ntext"}', "id", "expected str or int, got float"),
    ('{"id": true, "contents": "T\\ntext"}', "id", "expected str or int, got bool"),
    ('{"id": ["9"], "contents": "T\\ntext"}', "id", "expected str or int, got list"),
    ('{"id": " ", "contents": "T\\ntext"}', "id", "is blank"),
    ('{"id": "1", "contents": "T\\ntext"}', "id", "duplicate passage id '1' (first used at line 1)"),
    ('{"id": 7, "title": "T", "text": "x"}', "id", "duplicate passage id '7' (first used at line 2)"),
    # contents
    ('{"id": "9", "contents": ""}', "contents", "is empty"),
    ('{"id": "9", "contents": 5}', "contents", "expected str, got int"),
    ('{"id": "9", "contents": "a passage with no title line"}', "contents", "has no title line"),
    ('{"id": "9", "contents": "\\"Title\\"\\n   "}', "contents", "has a title line but no text"),
    ('{"id": "9", "contents": "Title\\n"}', "contents", "has a title line but no text"),
    # title/text
    ('{"id": "9", "title": "T"}', "text", "missing"),
    ('{"id": "9", "text": "body"}', "title", "missing"),
    ('{"id": "9", "title": "T", "text": " \\n "}', "text", "is blank"),
    ('{"id": "9", "title": "T", "text": ""}', "text", "is empty"),
    ('{"id": "9", "title": null, "text": "body"}', "title", "expected str, got NoneType"),
    ('{"id": "9", "title": "two\\nlines", "text": "body"}', "title", "spans several lines"),
    # both layouts, disagreeing; or neither
    ('{"id": "9", "contents": "\\"T\\"\\nbody", "title": "U", "text": "body"}', "title", "differs from the title line"),
    ('{"id": "9", "contents": "\\"T\\"\\nbody", "text": "other"}', "text", "differs from the text in 'contents'"),
    ('{"id": "9", "contents": "body", "title": "T"}', "contents", "has no title line"),
    ('{"id": "9", "body": "T\\ntext"}', "contents", "missing: a passage needs 'contents'"),
])
@pytest.mark.parametrize("name", ["wiki.jsonl", "wiki.jsonl.gz"])
def test_source_malformed_lines_are_located(tmp_path, name, bad, field, words):
    path = write_lines(tmp_path / name, [QUOTED, BARE, "", bad], bom=True)
    with pytest.raises(InputError) as err:
        list(iter_source_passages(path))
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 4, field)
    assert words in err.value.message


def test_source_damaged_files_are_named(tmp_path):
    whole = write_lines(tmp_path / "wiki.jsonl.gz", [QUOTED, BARE])
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole.read_bytes()[:-12])                      # an interrupted download
    with pytest.raises(InputError, match=r"cut\.jsonl\.gz: gzip data corrupt or cut short"):
        list(iter_source_passages(cut))
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(QUOTED.encode() + b"\n" + BARE.replace("Danish", "D\u00e4nish").encode("latin-1") + b"\n")
    with pytest.raises(InputError, match=r"latin1\.jsonl: not UTF-8 text"):
        list(iter_source_passages(latin1))
    with pytest.raises(InputError, match="file not found"):
        list(iter_source_passages(tmp_path / "nope.jsonl"))


def test_source_duplicate_ids_across_spellings(tmp_path):
    """An id repeated with the other title spelling, or as an int, is still a repeat."""
    path = write_lines(tmp_path / "c.jsonl", [QUOTED, BARE.replace('"7"', "1")])
    with pytest.raises(InputError, match=r"c\.jsonl:2: field 'id': duplicate passage id '1' \(first used at line 1\)"):
        list(iter_source_passages(path))


def test_canonical_copy_reads_back_with_the_same_titles(tmp_path):
    """What the prepare step writes from a mixed source is canonical, passes the pipeline rule, and
    splits into the same (title, text) as the source lines did."""
    src = write_lines(tmp_path / "wiki.jsonl.gz", [QUOTED, BARE], bom=True)
    out = tmp_path / "corpus.jsonl"
    out.write_text("".join(passage_line(p["id"], p["contents"]) for p in iter_source_passages(src)))
    read_back = [(pid, parse_contents(c)) for _, pid, c in iter_passages(out)]
    assert read_back == [(json.loads(line)["id"], parse_contents(json.loads(line)["contents"])) for line in (QUOTED, BARE)]
    assert all(c.startswith('"') for c in corpus_texts(out))
