"""Stage `sft_data`: warm-up trajectories for the Actor and labelled examples for the Meta-Refiner.

Reads the train split (data.train_sets), searches the real index (retrieval.method), and writes,
in the rollout engine's token layout for the base model's tokenizer:
  data/sft/actor.jsonl            teacher trajectories with a correct final answer
  data/sft/refiner.jsonl          meta prompts labelled with the first flawed step (0 = none)
  data/sft/refiner_heldout.jsonl  more of them, never trained on (the refiner's accuracy test)
and the counts and mix to results/sft_data.json.
"""
from dataclasses import replace
from pathlib import Path

from searchr2.data import load_train_records
from searchr2.engine import open_engine
from searchr2.io import InputError, atomic_dir, write_json, write_jsonl
from searchr2.models import load_tokenizer, pick_device, resolve_dtype
from searchr2.params import load_params
from searchr2.paths import (BASE_MODEL, INDEX_DIR, QA_DIR, RESULTS, SFT_ACTOR, SFT_DATA, SFT_REFINER,
                            SFT_REFINER_HELDOUT, model_dir)
from searchr2.remote import open_retriever
from searchr2.rollout import rollout
from searchr2.sft_data import build_warmup_data
from searchr2.stage import run_stage


def main():
    p = load_params()
    records = load_train_records(QA_DIR, p.data.train_sets)
    tokenizer = load_tokenizer(BASE_MODEL)
    retriever = open_retriever(p.retrieval, INDEX_DIR, p.index)
    # the warm-up always shows searching, with its own turn budget: a run whose RL and evaluation do not
    # search (rollout.max_turns 0, the R1-base row) starts from the same warm-up as every other run
    teacher = replace(p.rollout, max_turns=p.sft_data.teacher_max_turns)

    def sampler():
        """The rejection teacher's sampler: the named model, sampling rollouts (loaded only if needed)."""
        name = p.sft_data.rejection_model
        path = Path(name) if Path(name).is_dir() else model_dir(name)
        device = pick_device(p.evaluate.device)
        model = open_engine(path, teacher, resolve_dtype(p.evaluate.dtype, device), device)   # rollout.engine
        return lambda questions: rollout(model, tokenizer, retriever, questions, teacher)

    actor, refiner, heldout, stats = build_warmup_data(records, tokenizer, retriever, teacher, p.refiner,
                                                       p.sft_data, sampler)
    if not actor:
        raise InputError(QA_DIR, "the teacher kept no Actor trajectory (see the drop counts above)")
    with atomic_dir(SFT_DATA) as out:
        write_jsonl(Path(out) / SFT_ACTOR.name, actor)
        write_jsonl(Path(out) / SFT_REFINER.name, refiner)
        write_jsonl(Path(out) / SFT_REFINER_HELDOUT.name, heldout)
    write_json(RESULTS / "sft_data.json", {"profile": p.profile, **stats})
    print(f"[sft_data] actor {stats['actor']} (mistakes {stats['actor_with_mistake']}, re-queries "
          f"{stats['actor_with_requery']}), refiner {stats['refiner']}, held-out {stats['refiner_heldout']}; "
          f"dropped {stats['actor_dropped']}")


if __name__ == "__main__":
    run_stage("sft_data", main)
