"""Stage `index_dense`: encode the corpus in chunks to an on-disk memmap and build a FAISS index
from it (data/index/dense). Encoder, prefixes, pooling and index type are `index.dense` params.

Reads data/corpus/corpus.jsonl (and the encoder named by the params); writes the passage store, the
embeddings and the FAISS index to data/index/dense, and its build statistics to
results/index_dense.json.
"""
from searchr2.io import write_json
from searchr2.params import load_params
from searchr2.retrieval import build_dense_index
from searchr2.paths import CORPUS, DENSE_INDEX, RESULTS
from searchr2.stage import run_stage


def main():
    params = load_params()
    stats = build_dense_index(CORPUS, DENSE_INDEX, params.index.dense)
    write_json(RESULTS / "index_dense.json", stats)


if __name__ == "__main__":
    run_stage("index_dense", main)
