"""How many labelled examples does the Meta-Refiner's warm-up need before it tells flawed trajectories apart?

    python benchmarks/bench_refiner_warmup.py --examples 300                 # from data/models/sft
    python benchmarks/bench_refiner_warmup.py --examples 300 --top-k 0       # full three-document prompts
    python benchmarks/bench_refiner_warmup.py --examples 600 --clean-share 0.5 --epochs 2
    python benchmarks/bench_refiner_warmup.py --examples 300 --clean-share 0.5 --top-k 1 --rounds 3   # the curve

Builds ``--examples`` labelled meta prompts with the ``sft_data`` stage's own code (the params'
world, index, teacher and corruptions; the same 60 held-out examples as the pipeline, checked),
fine-tunes ``--model`` on them alone with the ``sft`` stage's loop and params (``--lr`` / ``--epochs`` /
``--freeze-layers`` override), and scores the held-out examples before and after (and, after, as many
of the examples it was trained on: whether it fits them at all). Besides the
stage's metrics (exact first flawed step, accept/revise agreement) it reports the one number that
does not depend on the revise threshold: the AUC of P(0) between clean and flawed trajectories, in all
and for each kind of flaw against the clean ones
(``auc``; 0.5: no discrimination, 1.0: every clean trajectory gets a higher P(accept) than every flawed one).
Results: ``benchmarks/results/refiner_warmup_<examples>_ep<epochs x rounds>_top<k>.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_info import write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=300, help="labelled meta prompts to train on")
    ap.add_argument("--clean-share", type=float, default=None, help="share labelled 0 (default: the params')")
    ap.add_argument("--model", default="data/models/sft", help="model to start from")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per round")
    ap.add_argument("--rounds", type=int, default=1,
                    help="train --epochs on the examples this many times in a row (each round a fresh warm-up and decay "
                         "from the previous round's model), scoring the held-out set after each: the learning curve")
    ap.add_argument("--top-k", type=int, default=None,
                    help="documents per search in the training examples (sft_data.refiner_top_k; held-out unchanged)")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--freeze-layers", type=int, default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    os.chdir(ROOT)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from searchr2.evaluation import load_labelled_meta_prompts
    from searchr2.io import write_jsonl
    from searchr2.models import load_model, load_tokenizer
    from searchr2.params import load_params
    from searchr2.refiner import accuracy, decision_auc, decision_distributions
    from searchr2.retrieval import load_retriever
    from searchr2.sft import load_sft_data, train_sft
    from searchr2.sft_data import build_warmup_data
    from searchr2.paths import INDEX_DIR, QA_DIR, SFT_REFINER_HELDOUT
    from searchr2.data import load_train_records

    p = load_params()
    data_cfg = dataclasses.replace(p.sft_data, actor_examples=0, refiner_examples=args.examples,
                                   refiner_clean_share=(p.sft_data.refiner_clean_share if args.clean_share is None
                                                        else args.clean_share),
                                   refiner_top_k=p.sft_data.refiner_top_k if args.top_k is None else args.top_k)
    sft_cfg = dataclasses.replace(p.sft, **{k: v for k, v in (("epochs", args.epochs), ("lr", args.lr),
                                                                ("freeze_layers", args.freeze_layers)) if v is not None})
    tokenizer = load_tokenizer(args.model)
    retriever = load_retriever(p.retrieval.method, INDEX_DIR, p.index)
    t0 = time.perf_counter()
    _, refiner, heldout, summary = build_warmup_data(load_train_records(QA_DIR, p.data.train_sets), tokenizer,
                                                     retriever, p.rollout, p.refiner, data_cfg)
    build_s = time.perf_counter() - t0
    pipeline_heldout = load_labelled_meta_prompts(SFT_REFINER_HELDOUT)
    if [r["token_ids"] for r in heldout] != [r["token_ids"] for r in pipeline_heldout]:
        raise SystemExit(f"the held-out examples differ from {SFT_REFINER_HELDOUT}: rerun `dvc repro sft_data`")
    def score(model_dir, examples) -> dict:
        model = load_model(model_dir, "float32", "cpu")
        labels = [r["label"] for r in examples]
        probs = decision_distributions(model, tokenizer, [r["token_ids"][:-1] for r in examples],
                                       [r["n_steps"] for r in examples], p.refiner.batch_size)
        p0 = {"clean": [q[0] for q, y in zip(probs, labels) if y == 0],
              "flawed": [q[0] for q, y in zip(probs, labels) if y > 0]}
        kinds = sorted({str(r["corruption"]) for r in examples if r["label"] > 0})
        by_kind = {k: decision_auc(*zip(*[(q, y) for q, y, r in zip(probs, labels, examples)
                                          if y == 0 or str(r["corruption"]) == k])) for k in kinds}
        return {**accuracy(probs, labels, p.refiner), "auc_by_corruption": by_kind,
                "mean_p0_clean": round(sum(p0["clean"]) / len(p0["clean"]), 4),
                "mean_p0_flawed": round(sum(p0["flawed"]) / len(p0["flawed"]), 4)}

    before = score(args.model, heldout)
    print(f"[bench] before: {before}", flush=True)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="refiner_warmup_") as tmp:
        path = Path(tmp) / "refiner.jsonl"
        write_jsonl(path, refiner)
        data = load_sft_data([path], len(tokenizer), sft_cfg.max_seq_len, decision_weight=sft_cfg.refiner_loss_weight)
        start, train_s = args.model, 0.0
        for k in range(1, args.rounds + 1):
            t0 = time.perf_counter()
            train = train_sft(sft_cfg, data, start, Path(tmp) / f"model{k}", Path(tmp) / f"ckpt{k}")
            train_s += time.perf_counter() - t0
            after = score(Path(tmp) / f"model{k}", heldout)
            rounds.append({"round": k, "example_passes": k * sft_cfg.epochs * len(refiner),
                           "train_seconds": round(train_s, 1), "auc": after["auc"], "exact": after["exact"]})
            print(f"[bench] round {k}: {rounds[-1]}", flush=True)
            start = Path(tmp) / f"model{k}"
        # as many of its own training examples as there are held-out ones: fitted, or not even that?
        fitted = score(start, refiner[:len(heldout)])
    print(f"[bench] after: {after}\n[bench] on {len(heldout)} of its training examples: {fitted}", flush=True)
    result = {
        "examples": len(refiner), "labels": summary["refiner_labels"], "corruptions": summary["refiner_corruptions"],
        "tokens": summary["refiner_tokens"], "start_model": args.model,
        "sft": {k: v for k, v in dataclasses.asdict(sft_cfg).items()},
        "build_seconds": round(build_s, 1), "train_seconds": round(train_s, 1),
        "train": {k: train.get(k) for k in ("steps", "train_tokens", "tokens_per_s", "first_loss", "final_loss") if k in train},
        "top_k": data_cfg.refiner_top_k or p.rollout.top_k, "rounds": rounds,
        "heldout_before": before, "heldout_after": after, "train_examples_after": fitted,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__},
    }
    out = Path(args.out or f"benchmarks/results/refiner_warmup_{len(refiner)}_ep{sft_cfg.epochs * args.rounds}"
                           f"_top{data_cfg.refiner_top_k or p.rollout.top_k}.json")
    write_result(out, result, indent=1)
    print(f"[bench] wrote {out}")


if __name__ == "__main__":
    main()
