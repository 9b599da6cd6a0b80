"""Stage `evaluate@<model>`: greedy, Actor-only exact match of the systems that use one model.

    python -m stages.evaluate rl          # base | sft | rl

One stage per model (dvc.yaml's `foreach`), so an experiment that changes only the RL model
re-evaluates only `evaluate@rl`. The systems are those of `evaluate.systems` that answer with this
model: `direct`, `rag` (answer-only, the paper's rows), `direct_tagged`, `rag_tagged` and `agent_base`
with the base model, `agent_sft`, `agent_rl`.

Reads the test sets (data/qa/<dataset>/test.jsonl, or dev where a set has no test split), the index of
`retrieval.method` (data/index/) and the model (data/models/<model>); not the warm-up data (the
model's Meta-Refiner is scored by stage `evaluate_refiner@<model>`). Writes results/eval/<model>/:
  metrics.json                          EM, F1 and cover-EM ×100 per set and on average, per system
  timing.json                           throughput per system, and the dtype and device used
  predictions/<system>/<dataset>.jsonl  one row per question
Stage `metrics` merges the models' files into results/metrics.json.
"""
from pathlib import Path

from searchr2.baselines import answer_baseline
from searchr2.data import load_eval_set
from searchr2.engine import open_engine
from searchr2.evaluation import BASELINES, greedy, run_system, system_model
from searchr2.io import atomic_dir, write_json, write_jsonl
from searchr2.models import load_tokenizer, pick_device, resolve_dtype
from searchr2.params import load_params
from searchr2.paths import EVAL_DIR, INDEX_DIR, MODEL_NAMES, QA_DIR, model_dir
from searchr2.remote import open_retriever
from searchr2.rollout import rollout
from searchr2.stage import run_stage, stage_parser


def score(p, model_name: str, systems: list[str], out: Path) -> tuple[dict, dict]:
    """Answer every eval set with each system (predictions written under ``out``); (metrics, timing)."""
    cfg = greedy(p.rollout)
    sets = {name: load_eval_set(QA_DIR, name, p.evaluate.max_questions) for name in p.data.test_sets}
    retriever = open_retriever(p.retrieval, INDEX_DIR, p.index)
    path, device = model_dir(model_name), pick_device(p.evaluate.device)
    dtype = resolve_dtype(p.evaluate.dtype, device)       # evaluate.dtype auto: bf16 where the CPU/GPU has it
    model, tok = open_engine(path, p.rollout, dtype, device), load_tokenizer(path)   # rollout.engine: hf | vllm
    metrics, timing = {}, {}
    for system in systems:
        if system in BASELINES:
            def answer(qs, system=system):
                return answer_baseline(system, model, tok, retriever, qs, cfg)
        else:
            def answer(qs):
                return rollout(model, tok, retriever, qs, cfg)
        rows, metrics[system], timing[system] = run_system(answer, sets, tok, p.evaluate.chunk_size, system)
        timing[system].update(dtype=dtype, device=device)
        for name, set_rows in rows.items():
            write_jsonl(out / "predictions" / system / f"{name}.jsonl", set_rows)
    return metrics, timing


def main(model_name: str):
    p = load_params()
    systems = [s for s in p.evaluate.systems if system_model(s) == model_name]
    if not systems:
        print(f"[evaluate] evaluate.systems names no system of the {model_name} model; nothing to score")
    with atomic_dir(EVAL_DIR / model_name) as out:
        metrics, timing = score(p, model_name, systems, Path(out)) if systems else ({}, {})
        write_json(Path(out) / "metrics.json", metrics)
        write_json(Path(out) / "timing.json", timing)


if __name__ == "__main__":
    parser = stage_parser()
    parser.add_argument("model", choices=MODEL_NAMES, help="the model whose systems are scored")
    args = parser.parse_args()
    run_stage(f"evaluate@{args.model}", lambda: main(args.model), args)
