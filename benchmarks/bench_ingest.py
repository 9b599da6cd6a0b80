"""Benchmark corpus ingestion: passages/s and peak memory of the prepare path, at two corpus sizes.

    python benchmarks/bench_ingest.py                                   # 200,000 and 2,000,000 lines
    python benchmarks/bench_ingest.py --sizes 2000 20000 --name ingest-tiny
    python benchmarks/bench_ingest.py --sizes 200000 2000000 --bm25 --workdir /tmp/bench_ingest

For each size N it writes a synthetic corpus of N lines in wiki-18's published layout into a scratch
folder (``{"id": "<n>", "contents": "<title line>\\n<text>"}``, about 100 words a passage, articles of
one to five passages, about 12% of title lines bare and the rest in double quotes, as in Search-R1's
and FlashRAG's wiki-18.jsonl; a fixed ``--seed``, so the same N gives the same bytes). Writing it is
not timed. Then, each in a child process of its own (this script re-invoked with ``worker ...``):

* **prepare**: :func:`searchr2.data.prepare_real_data` with no QA sets, so all it does is stream the
  source through :func:`searchr2.corpus.iter_source_passages` (validation, duplicate ids, titles made
  canonical) into the pipeline's ``corpus.jsonl``, then save its offsets
  (:func:`searchr2.docstore.write_offsets`), as the ``world`` stage does for a paper profile;
* **bm25** (with ``--bm25``): :func:`searchr2.retrieval.build_bm25_index` on that corpus, the
  ``index_bm25`` stage's builder (it validates the corpus while writing a temporary copy whose ids
  are row numbers, then runs Anserini in ``java``).

* **faiss** (with ``--faiss-dims``, at sizes up to ``--faiss-max``): for each dimension, random unit
  vectors (seeded) in a float32 matrix file, then :func:`searchr2.retrieval.build_faiss_index` for each
  index type (flat, hnsw, ivf with the paper profile's ``hnsw_m: 32``, ``ivf_nlist: 256``): the file's
  bytes and the memory ``faiss.read_index`` takes to load it. An index's size depends on the number of
  vectors, their dimension and the index settings, not on their values, so no encoder is needed.

The report's disk table divides each artifact's bytes by the passages at the largest size that ran
every phase and projects them to ``--project`` passages (wiki-18: 21,015,324).

Reported per phase: wall seconds, passages/s, and memory in MB: ``hwm_mb``, the child's own peak
resident memory (``VmHWM``, read by the child at the end); for prepare ``hwm_after_imports_mb``, the
same just before the work started, so the difference is what the work itself added;
``peak_tree_rss_mb``, the largest sum of resident memory over the child and its descendants sampled
every 0.1 s (for bm25 this is the figure that counts: Anserini indexes in a ``java`` grandchild); and
``maxrss_mb``, the kernel's ``ru_maxrss`` from ``wait4`` (waited-for descendants merged by max; on
Linux never below this script's own memory when it spawned the child, which is why the script keeps
itself small and writes the corpus in a child too). Streaming means the prepare peak must not scale
with N: the only structure that grows is the set of ids seen (a bitmap, one bit per integer id,
250 kB for 2M). ``prepare_rss_flat`` compares ``hwm_mb`` at the largest and the smallest size: flat
when it grew by less than 10% plus 16 MB. ``bm25_rss_growth`` does the same with ``peak_tree_rss_mb``
(Lucene's and the JVM's memory are expected to grow with the index, so it is reported, not judged).

Disk: about 0.7 GB of source and 0.7 GB of prepared corpus per million passages (lines of about
700 bytes, as wiki-18's; ``--gz`` stores the source in about 0.3 GB), plus the BM25 index with
``--bm25``. The scratch folder is a new temporary folder, removed at the end unless ``--keep``. A
``--workdir`` is kept, and a source corpus already written there for the same N, seed and format is
reused rather than written again (delete it to regenerate); the prepared corpora and indexes in it
are removed after each size. Results go to
``benchmarks/results/<name>.json`` and ``<name>.md``, with the machine and the load average before
and after (the machine may be shared: a busy neighbour makes every figure pessimistic).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import shutil
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_info import loadavg_fields, machine_line, run_worker, write_result

#: share of bare (unquoted) title lines in the published wiki-18 file, measured on a sample of it
BARE_SHARE = 0.12
#: words in a passage (DPR cut Wikipedia into 100-word passages)
WORDS = 100
#: the prepare peak may grow by this share of the smallest size's peak, plus FLAT_SLACK_MB, and still count as flat
FLAT_SHARE, FLAT_SLACK_MB = 0.10, 16.0


# ------------------------------------------------------------------------------ the synthetic corpus

def _vocabulary(rng: random.Random, n: int) -> tuple[list[str], list[float]]:
    """``n`` made-up words of 2 to 9 letters (a few with accents) in random order,
    and Zipf cumulative weights over that order."""
    letters = string.ascii_lowercase * 10 + "éèüöñç"
    lengths = (2, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 6, 6, 7, 8, 9)
    words = sorted({"".join(rng.choices(letters, k=rng.choice(lengths))) for _ in range(n * 2)})
    words = rng.sample(words, n)
    cum, total = [], 0.0
    for rank in range(1, len(words) + 1):
        total += 1.0 / rank
        cum.append(total)
    return words, cum


def write_source(path: Path, n: int, seed: int, bare_share: float = BARE_SHARE) -> dict:
    """Write ``n`` wiki-18 lines to ``path`` (gzip when it ends in .gz); return what was written.

    Articles of 1 to 5 passages share a title. A single-word title is written bare, a title of
    several words (some with a comma or parentheses, as disambiguated Wikipedia titles have) in
    double quotes; about ``bare_share`` of the titles are single words. Passages are ``WORDS`` words
    (plus or minus 10%) with some capitals, punctuation and years.
    """
    rng = random.Random(seed)
    words, cum = _vocabulary(rng, 50_000)
    tmp = path.with_name(path.name + ".partial")
    opener = (lambda p: gzip.open(p, "wt", encoding="utf-8", compresslevel=6)) if path.name.endswith(".gz") \
        else (lambda p: open(p, "w", encoding="utf-8"))
    bare = pid = 0
    with opener(tmp) as f:
        while pid < n:
            is_bare = rng.random() < bare_share
            if is_bare:
                title = rng.choice(words).capitalize()
                title_line = title
            else:
                k = rng.choice((2, 2, 2, 3, 3, 4))
                title = " ".join(w.capitalize() for w in rng.choices(words, cum_weights=cum, k=k))
                if rng.random() < 0.1:
                    title += f" ({rng.choice(words)})"
                elif rng.random() < 0.05:
                    title = title.replace(" ", ", ", 1)
                title_line = f'"{title}"'
            for part in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 5))):
                if pid >= n:
                    break
                pid += 1
                bare += is_bare
                body = rng.choices(words, cum_weights=cum, k=int(WORDS * rng.uniform(0.9, 1.1)))
                for i in range(0, len(body), rng.randint(12, 25)):
                    body[i] = body[i].capitalize()
                    if i:
                        body[i - 1] += "."
                if rng.random() < 0.5:
                    body.insert(rng.randrange(len(body)), f"({rng.randint(1500, 2018)})")
                text = (f"{title} " if part == 0 else "") + " ".join(body) + "."
                f.write(json.dumps({"id": str(pid), "contents": f"{title_line}\n{text}"}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return {"lines": n, "bare_title_lines": bare, "bytes": path.stat().st_size, "seed": seed}


# ------------------------------------------------------------------------------ worker (child side)

def _hwm_mb() -> float:
    """This process's own peak resident memory (``VmHWM``) in MB.

    Not ``getrusage``: Linux carries the ``ru_maxrss`` of the process that forked a child over into
    the child after ``exec``, so a child's ``ru_maxrss`` is never below its parent's memory at the
    spawn. ``VmHWM`` belongs to the new program alone. ``ru_maxrss`` elsewhere (no ``/proc``).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _worker(args: argparse.Namespace) -> None:
    """Run one phase in this (child) process and write its result as JSON."""
    if args.phase == "generate":
        t0 = time.perf_counter()
        meta = write_source(Path(args.source), int(args.lines), int(args.seed))
        meta["write_seconds"] = round(time.perf_counter() - t0, 1)
        Path(args.result).write_text(json.dumps(meta))
        return
    if args.phase == "faiss":
        Path(args.result).write_text(json.dumps(_faiss_bytes(int(args.lines), json.loads(args.dims), Path(args.work),
                                                             int(args.seed))))
        return
    if args.phase == "prepare":
        from searchr2.data import DataConfig, prepare_real_data
        from searchr2.docstore import offsets_path, write_offsets

        work = Path(args.work)
        empty = work / "no_qa_source"
        empty.mkdir(parents=True, exist_ok=True)
        cfg = DataConfig(source="local", local_dir=str(empty), corpus_path=args.source, test_sets=(), train_sets=())
        before = _hwm_mb()
        t0 = time.perf_counter()
        manifest = prepare_real_data(cfg, work / "qa", Path(args.corpus))
        write_offsets(args.corpus)
        seconds = time.perf_counter() - t0
        result = {"passages": manifest["corpus"]["rows_kept"], "hwm_after_imports_mb": before,
                  "corpus_bytes": Path(args.corpus).stat().st_size,
                  "offsets_bytes": offsets_path(args.corpus).stat().st_size}
    else:
        from searchr2.retrieval import BM25Config, build_bm25_index

        t0 = time.perf_counter()
        stats = build_bm25_index(args.corpus, Path(args.work) / "index_bm25", BM25Config(**json.loads(args.bm25_json)))
        seconds = time.perf_counter() - t0
        result = {"passages": stats["n_docs"], "index_bytes": stats["index_bytes"]}
    result.update(seconds=round(seconds, 2), passages_per_second=round(result["passages"] / seconds, 1),
                  hwm_mb=_hwm_mb())
    Path(args.result).write_text(json.dumps(result))


#: run in a fresh interpreter: the resident memory that loading one FAISS index adds (a process that has
#: freed an earlier index would reuse those pages and show less)
_LOAD_RSS = ("import os, sys, faiss\n"
             "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
             "before = rss(); index = faiss.read_index(sys.argv[1]); print(rss() - before)")


def _faiss_bytes(n: int, dims: list[int], work: Path, seed: int) -> dict:
    """Bytes on disk and loaded of each FAISS index type over ``n`` random unit vectors of each dimension."""
    import numpy as np

    from searchr2.retrieval import INDEX_TYPES, DenseConfig, build_faiss_index

    rng = np.random.default_rng(seed)
    out: dict = {"passages": n}
    for dim in dims:
        vectors = work / f"vectors_{dim}.f32"
        mm = np.memmap(vectors, dtype=np.float32, mode="w+", shape=(n, dim))
        for start in range(0, n, 1 << 16):
            block = rng.standard_normal((min(1 << 16, n - start), dim), dtype=np.float32)
            mm[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        mm.flush()
        del mm
        for index_type in INDEX_TYPES:
            cfg = DenseConfig(index_type=index_type, hnsw_m=32, ivf_nlist=256, chunk_size=1 << 16)
            path = work / f"{index_type}_{dim}.faiss"
            t0 = time.perf_counter()
            build_faiss_index(vectors, n, dim, cfg, path)
            seconds = time.perf_counter() - t0
            loaded = int(subprocess.check_output([sys.executable, "-c", _LOAD_RSS, str(path)], text=True))
            out[f"{index_type}_{dim}"] = {"bytes": path.stat().st_size, "loaded_rss_bytes": loaded,
                                          "build_seconds": round(seconds, 1)}
            path.unlink()
        vectors.unlink()
    return out


# ------------------------------------------------------------------------------ driver (parent side)

def run_child(argv: list[str], result_path: Path, log_path: Path) -> dict:
    """Run a worker (:func:`benchmarks.run_info.run_worker`): its result plus memory figures."""
    return run_worker(__file__, argv, result_path, log_path)


def _source_for(work: Path, n: int, args: argparse.Namespace) -> tuple[Path, dict]:
    """The synthetic source corpus of ``n`` lines, written unless an identical one is already there."""
    path = work / f"wiki18_synth_{n}_seed{args.seed}.jsonl{'.gz' if args.gz else ''}"
    meta_path = path.with_name(path.name + ".meta.json")
    if path.exists() and meta_path.exists():
        return path, json.loads(meta_path.read_text())
    print(f"[bench] writing a {n:,}-line source corpus to {path} ...", flush=True)
    # in a child, so that this process stays small (see _hwm_mb)
    code = subprocess.call([sys.executable, __file__, "worker", "--phase", "generate", "--source", str(path),
                            "--lines", str(n), "--seed", str(args.seed), "--result", str(meta_path)],
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if code != 0:
        raise SystemExit(f"writing the source corpus {path} failed ({code})")
    return path, json.loads(meta_path.read_text())


def _growth(runs: list[dict], phase: str, key: str) -> dict | None:
    """Growth of the phase's peak memory ``key`` from the smallest to the largest size, and whether it is
    flat (less than FLAT_SHARE of the smaller peak plus FLAT_SLACK_MB); None with fewer than two sizes."""
    have = [r for r in runs if phase in r]
    if len(have) < 2:
        return None
    small, large = have[0][phase][key], have[-1][phase][key]
    return {"measure": key, "from_lines": have[0]["lines"], "to_lines": have[-1]["lines"],
            "from_mb": small, "to_mb": large, "growth_mb": round(large - small, 1),
            "flat": large - small < FLAT_SHARE * small + FLAT_SLACK_MB}


def disk_table(runs: list[dict], project: int) -> dict | None:
    """Bytes per passage of each artifact at the largest size that measured them all, and at ``project``."""
    full = [r for r in runs if "bm25" in r and "faiss" in r]
    if not full:
        return None
    run = full[-1]
    n = run["lines"]
    rows = {"corpus.jsonl": run["prepare"]["corpus_bytes"], "corpus.offsets.npy": run["prepare"]["offsets_bytes"],
            "bm25 (Lucene)": run["bm25"]["index_bytes"]}
    loaded = {}
    for key, value in run["faiss"].items():
        if isinstance(value, dict):
            index_type, dim = key.split("_")
            rows[f"{index_type}, dim {dim}"] = value["bytes"]
            loaded[f"{index_type}, dim {dim}"] = value["loaded_rss_bytes"]
    return {"measured_at": n, "project_to": project,
            "artifacts": {name: {"bytes": b, "bytes_per_passage": round(b / n, 1),
                                 "projected_gb": round(b / n * project / 1e9, 1),
                                 **({"loaded_bytes_per_passage": round(loaded[name] / n, 1),
                                     "projected_ram_gb": round(loaded[name] / n * project / 1e9, 1)}
                                    if name in loaded else {})}
                          for name, b in rows.items()}}


def markdown(report: dict) -> str:
    """The result as a markdown table, one row per size and phase."""
    rows = [f"# {report['name']}", "", f"{report['machine']}; load average before {report['loadavg_before']}, "
            f"after {report['loadavg_after']}", "",
            "| lines | bare titles | phase | seconds | passages/s | peak MB (VmHWM) | after imports MB "
            "| peak tree RSS MB | ru_maxrss MB |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for run in report["runs"]:
        for phase in ("prepare", "bm25"):
            if phase in run:
                r = run[phase]
                rows.append(f"| {run['lines']:,} | {run['source']['bare_title_lines'] / run['lines']:.1%} | {phase} | "
                            f"{r['seconds']} | {r['passages_per_second']:,.0f} | {r['hwm_mb']} | "
                            f"{r.get('hwm_after_imports_mb', '')} | {r['peak_tree_rss_mb']} | {r['maxrss_mb']} |")
    for phase, g in (("prepare", report.get("prepare_rss_flat")), ("bm25", report.get("bm25_rss_growth"))):
        if g:
            verdict = ("flat" if g["flat"] else "NOT flat") if phase == "prepare" else "reported"
            rows += ["", f"{phase} peak memory ({g['measure']}) from {g['from_lines']:,} to {g['to_lines']:,} "
                     f"lines: {g['from_mb']} -> {g['to_mb']} MB, {g['growth_mb']:+} MB ({verdict})"]
    disk = report.get("disk")
    if disk:
        rows += ["", f"Disk per passage at {disk['measured_at']:,} passages, projected to {disk['project_to']:,} "
                 "(RAM: what faiss.read_index took to load the index)", "",
                 "| artifact | bytes | bytes/passage | projected GB | loaded bytes/passage | projected RAM GB |",
                 "|---|---:|---:|---:|---:|---:|"]
        for name, a in disk["artifacts"].items():
            rows.append(f"| {name} | {a['bytes']:,} | {a['bytes_per_passage']} | {a['projected_gb']} | "
                        f"{a.get('loaded_bytes_per_passage', '')} | {a.get('projected_ram_gb', '')} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "worker":
        p = argparse.ArgumentParser()
        p.add_argument("worker")
        for name in ("phase", "source", "corpus", "work", "result", "bm25_json", "lines", "seed", "dims"):
            p.add_argument(f"--{name}")
        return _worker(p.parse_args(argv))

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 2_000_000],
                        help="corpus sizes in lines, run smallest first (default: 200000 2000000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic corpus (default 0)")
    parser.add_argument("--gz", action="store_true", help="write the source corpus as .jsonl.gz (default: plain "
                        ".jsonl, as Search-R1's download script leaves it)")
    parser.add_argument("--bm25", action="store_true", help="also time the BM25 build (Anserini) on each prepared corpus")
    parser.add_argument("--bm25-config", default="{}", help="JSON overrides of BM25Config, e.g. '{\"threads\": 2}'")
    parser.add_argument("--faiss-dims", type=int, nargs="*", default=[],
                        help="also measure the FAISS index bytes at these vector dimensions (e.g. 768 384)")
    parser.add_argument("--faiss-max", type=int, default=200_000,
                        help="measure FAISS bytes only at sizes up to this many passages (default 200000)")
    parser.add_argument("--project", type=int, default=21_015_324,
                        help="passages to project the disk table to (default: wiki-18's 21,015,324)")
    parser.add_argument("--workdir", type=Path, help="scratch folder, kept, its source corpora reused "
                        "(default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary scratch folder")
    parser.add_argument("--name", default="ingest", help="results go to benchmarks/results/<name>.json and .md")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.sizes):
        parser.error("--sizes must be positive")
    sizes = sorted(set(args.sizes))

    work = Path(tempfile.mkdtemp(prefix="bench_ingest_")) if args.workdir is None else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    report: dict = {"name": args.name, "machine": machine_line(), "sizes": sizes, "seed": args.seed,
                    "source_format": "jsonl.gz" if args.gz else "jsonl", "runs": []}
    try:
        for n in sizes:
            source, meta = _source_for(work, n, args)
            run: dict = {"lines": n, "source": meta}
            size_dir = work / f"run_{n}"
            shutil.rmtree(size_dir, ignore_errors=True)
            size_dir.mkdir()
            corpus = size_dir / "corpus.jsonl"
            print(f"[bench] prepare: {n:,} lines ...", flush=True)
            run["prepare"] = run_child(["--phase", "prepare", "--source", str(source), "--corpus", str(corpus),
                                        "--work", str(size_dir), "--result", str(size_dir / "prepare.json")],
                                       size_dir / "prepare.json", size_dir / "prepare.log")
            print(f"[bench] prepare: {run['prepare']}", flush=True)
            if run["prepare"]["passages"] != n:
                raise SystemExit(f"prepare wrote {run['prepare']['passages']} passages, expected {n}")
            if args.faiss_dims and n <= args.faiss_max:
                print(f"[bench] faiss indexes over {n:,} random vectors of dims {args.faiss_dims} ...", flush=True)
                run["faiss"] = run_child(["--phase", "faiss", "--lines", str(n), "--dims", json.dumps(args.faiss_dims),
                                          "--work", str(size_dir), "--seed", str(args.seed),
                                          "--result", str(size_dir / "faiss.json")],
                                         size_dir / "faiss.json", size_dir / "faiss.log")
                print(f"[bench] faiss: {run['faiss']}", flush=True)
            if args.bm25:
                print(f"[bench] bm25 build: {n:,} passages ...", flush=True)
                run["bm25"] = run_child(["--phase", "bm25", "--corpus", str(corpus), "--work", str(size_dir),
                                         "--result", str(size_dir / "bm25.json"), "--bm25_json", args.bm25_config],
                                        size_dir / "bm25.json", size_dir / "bm25.log")
                print(f"[bench] bm25: {run['bm25']}", flush=True)
            report["runs"].append(run)
            shutil.rmtree(size_dir, ignore_errors=True)       # keep only the source corpora
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep:
            print(f"[bench] scratch folder kept: {work}", flush=True)
    report.update(loadavg_fields(load_before))
    report["prepare_rss_flat"] = _growth(report["runs"], "prepare", "hwm_mb")
    report["disk"] = disk_table(report["runs"], args.project)
    if args.bm25:
        report["bm25_rss_growth"] = _growth(report["runs"], "bm25", "peak_tree_rss_mb")
    out = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    write_result(out, report)
    table = markdown(report)
    out.with_suffix(".md").write_text(table)
    print("\n" + table + f"\nwritten {out} and {out.with_suffix('.md').name}")


if __name__ == "__main__":
    main()
