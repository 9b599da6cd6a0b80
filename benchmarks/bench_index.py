"""Benchmark the retrieval indexes: build time and peak memory, search throughput, recall@k.

    python benchmarks/bench_index.py --world-entities 2500 --name world-default
    python benchmarks/bench_index.py --corpus data/corpus/corpus.jsonl --qa-dir data/qa --name mine

Every build and every search run happens in its own child process (this script re-invoked with
``worker ...``), so each peak-memory number belongs to that run alone. Two memory figures are
recorded per child: ``maxrss_mb``, the kernel's high-water mark of the child (``wait4``; a
grandchild such as Anserini's ``java`` counts as a separate process, its peak merged by max) and
``peak_tree_rss_mb``, the largest sum of resident memory over the child and its descendants,
sampled every 0.1 s (this is what counts for BM25, whose indexing happens in ``java``).

Queries are the world's questions (all test/dev sets, cycled up to ``--n-queries``). Throughput is
measured after one warm-up batch and includes query encoding for dense retrieval. Recall@k counts
a question as found when a supporting passage (``metadata.supporting_passage_ids``) is in the top k:
for nq (single hop) its passage, for hotpotqa any of its passages (and, separately, all of them),
on the eval split and, for a larger sample, the train split.
Results go to ``benchmarks/results/<name>.json`` and a table is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_info import run_worker  # noqa: E402  (after the path is set)

#: question sets whose supporting passages are looked for (the eval split, and train for a larger sample)
RECALL_SETS = ("nq", "hotpotqa")


# ------------------------------------------------------------------------------ worker (child side)

def _worker(args: argparse.Namespace) -> None:
    """Run one build or one search benchmark in this (child) process; write its result as JSON."""
    from searchr2.retrieval import (BM25Config, DenseConfig, IndexConfig, build_bm25_index, build_dense_index,
                                    load_retriever)

    dense = DenseConfig(**json.loads(args.dense_json))
    bm25 = BM25Config(**json.loads(args.bm25_json))
    if args.task == "build":
        build = build_bm25_index if args.method == "bm25" else build_dense_index
        stats = build(args.corpus, Path(args.index_dir) / args.method, bm25 if args.method == "bm25" else dense)
        Path(args.result).write_text(json.dumps(stats))
        return
    queries = json.loads(Path(args.queries).read_text())
    t0 = time.perf_counter()
    retriever = load_retriever(args.method, args.index_dir, IndexConfig(bm25=bm25, dense=dense))
    load_s = time.perf_counter() - t0
    retriever.search(queries[: args.search_batch], args.k)  # warm-up (JIT, caches, thread pools)
    t0 = time.perf_counter()
    for start in range(0, len(queries), args.search_batch):
        retriever.search(queries[start:start + args.search_batch], args.k)
    seconds = time.perf_counter() - t0
    result = {"method": args.method, "n_queries": len(queries), "k": args.k, "search_batch": args.search_batch,
              "seconds": round(seconds, 3), "queries_per_second": round(len(queries) / seconds, 1),
              "load_seconds": round(load_s, 2)}
    recall_sets = json.loads(Path(args.recall).read_text()) if args.recall else {}
    for name, rows in recall_sets.items():
        hits = []
        for start in range(0, len(rows), args.search_batch):
            batch = rows[start:start + args.search_batch]
            hits += retriever.search([r["question"] for r in batch], args.k)
        found_any = [bool(set(r["support"]) & {h["id"] for h in hs}) for r, hs in zip(rows, hits)]
        found_all = [set(r["support"]) <= {h["id"] for h in hs} for r, hs in zip(rows, hits)]
        result[f"recall@{args.k}_{name}_any"] = round(sum(found_any) / len(rows), 4)
        result[f"recall@{args.k}_{name}_all"] = round(sum(found_all) / len(rows), 4)
        result[f"recall_n_{name}"] = len(rows)
    Path(args.result).write_text(json.dumps(result))


# ------------------------------------------------------------------------------ driver (parent side)

def run_child(argv: list[str], result_path: Path, log_path: Path) -> dict:
    """Run a worker (:func:`benchmarks.run_info.run_worker`) and add the load average around it."""
    load_before = os.getloadavg()[0]
    result = run_worker(__file__, argv, result_path, log_path)
    # 1-min load average before/after: > ~2 on 2 cores means other work shared the CPUs
    result.update(loadavg_before=round(load_before, 2), loadavg_after=round(os.getloadavg()[0], 2))
    return result


def load_questions(qa_dir: Path, n: int) -> tuple[list[str], dict]:
    """Benchmark queries (all eval questions, cycled to ``n``) and the recall sets."""
    from searchr2.data import EVAL_SPLIT_ORDER, TRAIN_SPLIT, first_eval_split, qa_path
    from searchr2.io import read_jsonl

    files = sorted(p for p in qa_dir.glob("*/*.jsonl") if p.stem in EVAL_SPLIT_ORDER)
    questions = [rec["question"] for f in files for _, rec in read_jsonl(f)]
    if not questions:
        raise SystemExit(f"no test/dev questions under {qa_dir}")
    queries = [questions[i % len(questions)] for i in range(n)]
    recall = {}
    for name in RECALL_SETS:
        eval_split = first_eval_split(lambda s: qa_path(qa_dir, name, s).exists())
        for split in (eval_split, TRAIN_SPLIT):
            path = qa_path(qa_dir, name, split) if split else None
            if path is not None and path.exists():
                rows = [{"question": rec["question"],
                         "support": rec.get("metadata", {}).get("supporting_passage_ids", [])}
                        for _, rec in read_jsonl(path)]
                rows = [r for r in rows if r["support"]]
                if rows:
                    recall[f"{name}_{split}"] = rows
    return queries, recall


def make_world(n_entities: int, workdir: Path) -> tuple[Path, Path, float]:
    from searchr2.docstore import write_offsets
    from searchr2.world import WorldConfig, generate_world, write_world

    t0 = time.perf_counter()
    cfg = WorldConfig() if n_entities <= 0 else replace(WorldConfig(), n_entities=n_entities)
    qa_dir, corpus = workdir / "qa", workdir / "corpus.jsonl"
    write_world(generate_world(cfg), qa_dir, corpus)
    write_offsets(corpus)                      # as stage world: the indexes read passages back by row
    return qa_dir, corpus, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "worker":
        p = argparse.ArgumentParser()
        p.add_argument("worker")
        for name in ("task", "method", "corpus", "index_dir", "result", "queries", "recall", "bm25_json", "dense_json"):
            p.add_argument(f"--{name}")
        p.add_argument("--k", type=int, default=3)
        p.add_argument("--search-batch", type=int, default=256)
        return _worker(p.parse_args(argv))

    from searchr2.retrieval import BM25Config, DenseConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--corpus", type=Path, help="an existing corpus jsonl (use --qa-dir for its questions)")
    src.add_argument("--world-entities", type=int, help="generate a synthetic world with this many entities "
                     "(0 = WorldConfig() defaults) and benchmark on it")
    parser.add_argument("--qa-dir", type=Path, help="<qa_dir>/<dataset>/<split>.jsonl questions for --corpus")
    parser.add_argument("--name", required=True, help="results go to benchmarks/results/<name>.json")
    parser.add_argument("--workdir", type=Path, help="where the world and indexes are written (default: a temp dir, removed)")
    parser.add_argument("--methods", nargs="+", default=["bm25", "dense"], choices=["bm25", "dense"])
    parser.add_argument("--n-queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--search-batch", type=int, default=256, help="queries per search() call")
    parser.add_argument("--bm25", default="{}", help="JSON overrides of BM25Config, e.g. '{\"threads\": 2}'")
    parser.add_argument("--dense", default="{}", help="JSON overrides of DenseConfig, e.g. '{\"index_type\": \"hnsw\"}'")
    parser.add_argument("--no-recall", action="store_true", help="skip recall@k")
    parser.add_argument("--reuse", action="store_true", help="with --workdir: keep indexes built by an earlier run "
                        "(their build numbers are then taken from that run's build_<method>.json)")
    args = parser.parse_args(argv)
    bm25 = replace(BM25Config(), **json.loads(args.bm25))
    dense = replace(DenseConfig(batch_size=64), **json.loads(args.dense))   # the batch its measurements used

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_index_")
        work = Path(tmp.name)
    else:
        work = args.workdir
        work.mkdir(parents=True, exist_ok=True)
    try:
        report: dict = {"name": args.name, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                       "platform": platform.platform()},
                        "bm25_config": asdict(bm25), "dense_config": asdict(dense), "builds": {}, "search": {}}
        if args.world_entities is not None:
            qa_dir, corpus, seconds = make_world(args.world_entities, work)
            report["world"] = {"n_entities": args.world_entities or "default", "seconds": round(seconds, 1)}
        else:
            corpus, qa_dir = args.corpus, args.qa_dir
        report["corpus"] = str(corpus)
        with open(corpus, "rb") as f:
            report["n_passages"] = sum(1 for line in f if line.strip())
        queries, recall = load_questions(qa_dir, args.n_queries) if qa_dir else (None, {})
        if queries is None:
            raise SystemExit("give --qa-dir with --corpus: the queries are the world's questions")
        (work / "queries.json").write_text(json.dumps(queries))
        recall_path = ""
        if recall and not args.no_recall:
            (work / "recall.json").write_text(json.dumps(recall))
            recall_path = str(work / "recall.json")
        common = ["--bm25_json", json.dumps(asdict(bm25)), "--dense_json", json.dumps(asdict(dense)),
                  "--index_dir", str(work / "index"), "--corpus", str(corpus)]
        for method in args.methods:
            print(f"[bench] building {method} index over {report['n_passages']} passages...", flush=True)
            res = work / f"build_{method}.json"
            if args.reuse and (work / "index" / method / "meta.json").exists() and res.with_suffix(".measured.json").exists():
                report["builds"][method] = json.loads(res.with_suffix(".measured.json").read_text())
                print(f"[bench] reusing the {method} index in {work}", flush=True)
                continue
            report["builds"][method] = run_child(["--task", "build", "--method", method, "--result", str(res), *common],
                                                 res, work / f"build_{method}.log")
            res.with_suffix(".measured.json").write_text(json.dumps(report["builds"][method]))
            print(f"[bench] {method} build: {report['builds'][method]}", flush=True)
        for method in args.methods:
            print(f"[bench] searching {method} ({len(queries)} queries, k={args.k})...", flush=True)
            res = work / f"search_{method}.json"
            report["search"][method] = run_child(
                ["--task", "search", "--method", method, "--result", str(res), "--queries", str(work / "queries.json"),
                 "--recall", recall_path, "--k", str(args.k), "--search-batch", str(args.search_batch), *common],
                res, work / f"search_{method}.log")
            print(f"[bench] {method} search: {report['search'][method]}", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()

    out = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from searchr2.io import write_json

    write_json(out, report)
    print_table(report)
    print(f"\nwritten {out}")


def print_table(report: dict) -> None:
    print(f"\n{report['name']}: {report['n_passages']} passages, {report['machine']['cpus']} CPUs")
    print(f"{'method':<7}{'build s':>9}{'build peak MB':>15}{'q/s':>9}{'search peak MB':>16}  recall@k")
    for method in dict.fromkeys([*report["builds"], *report["search"]]):
        b, s = report["builds"].get(method, {}), report["search"].get(method, {})
        recall = ", ".join(f"{k.split('_', 1)[1]}={v}" for k, v in s.items() if k.startswith("recall@"))
        print(f"{method:<7}{b.get('seconds', float('nan')):>9.1f}{b.get('peak_tree_rss_mb', float('nan')):>15.0f}"
              f"{s.get('queries_per_second', float('nan')):>9.1f}{s.get('peak_tree_rss_mb', float('nan')):>16.0f}  {recall}")


if __name__ == "__main__":
    main()
