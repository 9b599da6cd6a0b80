"""Stage `evaluate`: greedy, Actor-only exact match of every system on the seven eval sets.

Writes results/metrics.json (EM, F1 and cover-EM ×100 per set and on average, per system; what
`dvc exp show` displays), results/eval_timing.json (throughput), and per-question predictions in
results/predictions/<system>/<dataset>.jsonl. For each model an agent system uses, metrics.json
also gets its Meta-Refiner accuracy on the held-out labelled trajectories of stage sft_data
(`refiner.<model>`): finding the first flawed step exactly, and accepting / rejecting correctly.
"""
from pathlib import Path

from searchr2.baselines import answer_direct, answer_rag
from searchr2.evaluation import greedy, load_eval_set, load_labelled_meta_prompts, run_system, score_refiner
from searchr2.io import atomic_dir, write_json, write_jsonl
from searchr2.models import load_model, load_tokenizer, pick_device
from searchr2.params import load_params
from searchr2.retrieval import load_retriever
from searchr2.rollout import rollout
from searchr2.stage import INDEX_DIR, QA_DIR, RESULTS, SFT_REFINER_HELDOUT, model_dir, run_stage

PREDICTIONS = RESULTS / "predictions"


def main():
    p = load_params()
    cfg = greedy(p.rollout)
    sets = {name: load_eval_set(QA_DIR, name, p.evaluate.max_questions) for name in p.data.test_sets}
    retriever = load_retriever(p.retrieval.method, INDEX_DIR, p.index)
    device = pick_device(p.evaluate.device)
    heldout = load_labelled_meta_prompts(SFT_REFINER_HELDOUT)

    metrics, timing, loaded, refiner = {}, {}, {}, {}
    with atomic_dir(PREDICTIONS) as out:
        for system in p.evaluate.systems:
            model_name = "base" if system in ("direct", "rag") else system.removeprefix("agent_")
            if model_name not in loaded:
                path = model_dir(model_name)
                loaded = {model_name: (load_model(path, p.evaluate.dtype, device), load_tokenizer(path))}
            model, tok = loaded[model_name]
            if system.startswith("agent_") and model_name not in refiner and heldout:
                refiner[model_name] = score_refiner(model, tok, heldout, p.refiner, p.refiner.batch_size)
                print(f"[evaluate] refiner accuracy of {model_name}: {refiner[model_name]}")
            answer = {
                "direct": lambda qs: answer_direct(model, tok, qs, cfg),
                "rag": lambda qs: answer_rag(model, tok, retriever, qs, cfg),
            }.get(system, lambda qs: rollout(model, tok, retriever, qs, cfg))
            rows, metrics[system], timing[system] = run_system(answer, sets, tok, p.evaluate.chunk_size, system)
            for name, set_rows in rows.items():
                write_jsonl(Path(out) / system / f"{name}.jsonl", set_rows)
    write_json(RESULTS / "metrics.json", {"profile": p.profile, "world": p.data.source == "world", **metrics,
                                          "refiner": refiner})
    write_json(RESULTS / "eval_timing.json", timing)


if __name__ == "__main__":
    run_stage("evaluate", main)
