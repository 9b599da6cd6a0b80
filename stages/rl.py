"""Stage `rl`: joint Actor–Refiner GRPO from the SFT model (arXiv 2602.03647; docs/method.md#joint-grpo).

Reads the train split, an index and data/models/sft; writes data/models/rl (the model with the best
validation EM: the collapse guard), results/rl.json, per-step curves in results/rl/ (dvclive) and
results/rl/revisions.jsonl (each trajectory the Meta-Refiner revised, before and after).
Resumable: data/checkpoints/rl holds the latest training state while the run goes on. On several
GPUs: `accelerate launch --config_file configs/accelerate/multi-gpu.yaml -m stages.rl`.
"""
from searchr2.data import load_train_records
from searchr2.grpo import DivergenceError
from searchr2.io import write_json
from searchr2.judge import make_judge
from searchr2.models import load_tokenizer
from searchr2.params import load_params
from searchr2.paths import INDEX_DIR, QA_DIR, RESULTS, RL_BEST, RL_CHECKPOINTS, model_dir
from searchr2.remote import open_retriever
from searchr2.rl import train_rl
from searchr2.stage import run_stage


def main():
    p = load_params()
    start = model_dir("sft")
    if not (start / "config.json").exists():
        raise FileNotFoundError(f"{start}: no SFT model; run the `sft` stage (dvc repro sft) first")
    records = load_train_records(QA_DIR, p.data.train_sets)
    tokenizer = load_tokenizer(start)
    retriever = open_retriever(p.retrieval, INDEX_DIR, p.index)
    judge = make_judge(p.reward) if p.reward.process else None
    try:
        summary = train_rl(p.rl, p.rollout, p.refiner, p.reward, records, tokenizer, retriever, judge, start,
                           model_dir("rl"), RL_CHECKPOINTS, RL_BEST, RESULTS / "rl",
                           {f"train:{name}": name for name in p.data.train_sets})
    except DivergenceError as e:
        raise SystemExit(f"[rl] stopped: {e}. The last checkpoint in {RL_CHECKPOINTS} is intact; lower rl.lr or "
                         f"raise rl.kl_coef and rerun.")
    write_json(RESULTS / "rl.json", {"profile": p.profile, **summary})


if __name__ == "__main__":
    run_stage("rl", main)
