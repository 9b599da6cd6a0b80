"""Where the pipeline keeps its artifacts, and the names of its models.

Every path is relative to the repository root, where DVC runs the stages; each is a DVC output of
the stage named beside it (see dvc.yaml). Both the stage entry points (``stages/``) and the library
read these, so they live in the library; importing this module has no side effects.
"""
from __future__ import annotations

from pathlib import Path

RAW_DIR = Path("data/raw")                               # the real files a paper profile reads (a dep of stage world)
PARAMS_OK = Path("data/params.ok")                       # stamp: params.yaml is valid (stage params)
QA_DIR = Path("data/qa")                                 # <dataset>/<split>.jsonl (stage world)
CORPUS_DIR = Path("data/corpus")                         # stage world
CORPUS = CORPUS_DIR / "corpus.jsonl"                     # one passage a line (searchr2.corpus)
MODELS_DIR = Path("data/models")                         # one directory per model of MODEL_NAMES
MODEL_NAMES = ("base", "sft", "rl")                      # the pipeline's models, in the order it makes them
BASE_MODEL = MODELS_DIR / "base"                         # stage model
INDEX_DIR = Path("data/index")
BM25_INDEX = INDEX_DIR / "bm25"                          # stage index_bm25
DENSE_INDEX = INDEX_DIR / "dense"                        # stage index_dense
RESULTS = Path("results")
EVAL_DIR = RESULTS / "eval"                              # per-model evaluations (stages evaluate@<model>)
REFINER_EVAL_DIR = RESULTS / "refiner"                   # <model>.json: held-out refiner scores (evaluate_refiner@<model>)
METRICS_JSON = RESULTS / "metrics.json"                  # their merged table, every score (stage metrics)
SUMMARY_JSON = RESULTS / "summary.json"                  # the headline numbers dvc exp show displays (stage metrics)
SFT_DATA = Path("data/sft")                              # warm-up data (stage sft_data)
SFT_ACTOR = SFT_DATA / "actor.jsonl"                     # Actor trajectories
SFT_REFINER = SFT_DATA / "refiner.jsonl"                 # labelled meta prompts, trained on
SFT_REFINER_HELDOUT = SFT_DATA / "refiner_heldout.jsonl"  # labelled meta prompts, never trained on
SFT_CHECKPOINTS = Path("data/checkpoints/sft")           # resumable training state of stage sft (latest only)
RL_CHECKPOINTS = Path("data/checkpoints/rl")             # latest RL training state (stage rl)
RL_BEST = Path("data/checkpoints/rl-best")               # the best-validated RL model so far


def model_dir(name: str) -> Path:
    """Directory of one of the pipeline's models (:data:`MODEL_NAMES`)."""
    return MODELS_DIR / name
