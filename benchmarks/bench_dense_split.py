"""Where dense search time goes: query encoding vs FAISS search, for a flat and an HNSW index.

Reuses the vectors of a flat index built by `build_dense_index` (no re-encoding of the corpus): reads
DENSE_DIR (meta.json, faiss.index) and the questions under QA_DIR, builds
an HNSW index in memory, and prints as JSON the timings and how often the two indexes agree on the
top passage. Writes no file.

    python benchmarks/bench_dense_split.py /tmp/bench_world200k/index/dense /tmp/bench_world200k/qa
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dense_dir", type=Path, metavar="DENSE_DIR",
                    help="a dense index directory (data/index/dense or a benchmark's)")
    ap.add_argument("qa_dir", type=Path, metavar="QA_DIR", help="<qa_dir>/<dataset>/<split>.jsonl questions")
    ap.add_argument("--n-queries", type=int, default=1000)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-search", type=int, default=64)
    args = ap.parse_args()
    import faiss
    import numpy as np

    from searchr2.encoder import TextEncoder
    from searchr2.io import read_jsonl

    meta = json.loads((args.dense_dir / "meta.json").read_text())
    if meta["index_type"] != "flat":
        sys.exit(f"{args.dense_dir} holds a {meta['index_type']} index; this benchmark compares HNSW with flat")
    questions = [r["question"] for f in sorted(args.qa_dir.glob("*/*.jsonl")) for _, r in read_jsonl(f)]
    queries = (questions * (args.n_queries // max(len(questions), 1) + 1))[:args.n_queries]
    cfg = meta["config"]
    enc = TextEncoder(cfg["encoder"], cfg["pooling"], cfg["normalize"], cfg["max_length"], 256)
    enc.encode(queries[:16], cfg["query_prefix"])  # warm-up
    t = time.perf_counter(); q = enc.encode(queries, cfg["query_prefix"]); t_enc = time.perf_counter() - t
    flat = faiss.read_index(str(args.dense_dir / "faiss.index"))
    shape = (flat.ntotal, flat.d)
    emb = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(shape)  # the flat index's own vectors
    t = time.perf_counter(); _, i_flat = flat.search(q, 3); t_flat = time.perf_counter() - t
    t = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(shape[1], args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    for s in range(0, shape[0], 65536):
        hnsw.add(np.ascontiguousarray(emb[s:s + 65536]))
    t_build = time.perf_counter() - t
    hnsw.hnsw.efSearch = args.ef_search
    t = time.perf_counter(); _, i_hnsw = hnsw.search(q, 3); t_hnsw = time.perf_counter() - t
    n = len(queries)
    out = {"passages": shape[0], "queries": n, "encode_s": round(t_enc, 2), "encode_q_per_s": round(n / t_enc, 1),
           "flat_search_s": round(t_flat, 2), "flat_total_q_per_s": round(n / (t_enc + t_flat), 1),
           "hnsw_build_s": round(t_build, 1), "hnsw_search_s": round(t_hnsw, 3),
           "hnsw_total_q_per_s": round(n / (t_enc + t_hnsw), 1),
           "hnsw_top1_agrees_with_flat": round(float((i_flat[:, 0] == i_hnsw[:, 0]).mean()), 4)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
