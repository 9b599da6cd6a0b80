"""Stage `index_bm25`: a Lucene BM25 index of the corpus, built with pyserini (data/index/bm25).

Reads data/corpus/corpus.jsonl and the `index.bm25` params; writes the index to data/index/bm25 and
its build statistics (passages, seconds) to results/index_bm25.json. BM25's k1 and b are
search-time settings, so they do not rebuild this index.
"""
from searchr2.io import write_json
from searchr2.params import load_params
from searchr2.retrieval import build_bm25_index
from searchr2.paths import BM25_INDEX, CORPUS, RESULTS
from searchr2.stage import run_stage


def main():
    params = load_params()
    stats = build_bm25_index(CORPUS, BM25_INDEX, params.index.bm25)
    write_json(RESULTS / "index_bm25.json", stats)


if __name__ == "__main__":
    run_stage("index_bm25", main)
