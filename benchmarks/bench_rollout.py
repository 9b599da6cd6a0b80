"""Benchmark the rollout engine: agent throughput batched vs one question at a time, in one run.

    python benchmarks/bench_rollout.py                       # SmolLM2 at data/models/base or /tmp/m/base
    python benchmarks/bench_rollout.py --n-questions 32 --threads 1 --name smollm2-cpu

Both modes play the same questions with the same greedy config; "batched" is one ``rollout`` call
with ``batch_size = n_questions``, "sequential" is one ``rollout`` call per question. Reported per
mode: wall seconds, questions/s, generated tokens/s (tokens under the loss mask, i.e. written by the
model), all tokens appended after the prompt per second, turns and stop reasons, and how many
trajectories are identical between the modes (greedy decoding; left padding can flip a near-tie).

The retriever is the real one when ``data/index/<method>`` exists (``searchr2.retrieval``), else a
fake one that returns fixed fictional passages instantly, so the numbers measure the engine and the
model. A warm-up generate call runs first. Results go to ``benchmarks/results/rollout-<name>.json``.

On a small shared machine set ``--threads`` explicitly: torch's default of one thread per core
thrashes when another process is busy (measured here: 40 s instead of 1 s for 20 tokens).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_info import write_result

PEOPLE = ["Varen Koltho", "Mira Tesk", "Ilsa Marrow", "Doran Quill", "Teodor Vashe", "Anneke Sollis",
          "Bram Ostrava", "Lio Kendrell"]
PLACES = ["Orvane Bay", "Kethra", "Lumsey Dal", "Port Ysell"]
TEMPLATES = ["Where was {p} born", "Who founded the university of {q}", "In which year did {p} first visit {q}",
             "What river flows through {q}"]


def questions(n: int) -> list[str]:
    """``n`` fictional questions (the answers exist nowhere, as in the embedded world)."""
    out = []
    for i in range(n):
        t = TEMPLATES[i % len(TEMPLATES)]
        out.append(t.format(p=PEOPLE[i % len(PEOPLE)], q=PLACES[(i // len(TEMPLATES)) % len(PLACES)]))
    return out


class FixedPassages:
    """A fake retriever: the same kind of fictional passages for every query, no latency."""

    def search(self, queries: list[str], k: int) -> list[list[dict]]:
        return [[{"id": f"p{j}", "title": PLACES[j % len(PLACES)],
                  "text": f"{PLACES[j % len(PLACES)]} is a harbour town founded in {1840 + 7 * j} by "
                          f"{PEOPLE[j % len(PEOPLE)]}, who was born in {PLACES[(j + 1) % len(PLACES)]}. "
                          f"The river Sall flows through it.", "score": float(k - j)} for j in range(k)]
                for _ in queries]


def pick_retriever(method: str):
    index = ROOT / "data" / "index"
    if method == "auto":
        method = next((m for m in ("bm25", "dense") if (index / m).exists()), "fake")
    if method == "fake":
        return FixedPassages(), "fake (fixed fictional passages)"
    from searchr2.retrieval import IndexConfig, load_retriever

    return load_retriever(method, index, IndexConfig()), f"{method} ({index / method})"


def summarise(trajs, seconds: float) -> dict:
    generated = sum(sum(t.loss_mask) for t in trajs)
    appended = sum(len(t.token_ids) - t.prompt_len for t in trajs)
    return {"seconds": round(seconds, 2), "questions": len(trajs),
            "questions_per_s": round(len(trajs) / seconds, 4),
            "generated_tokens": generated, "generated_tokens_per_s": round(generated / seconds, 2),
            "appended_tokens_per_s": round(appended / seconds, 2),
            "mean_turns": round(sum(t.turns for t in trajs) / len(trajs), 3),
            "mean_searches": round(sum(len(t.searches) for t in trajs) / len(trajs), 3),
            "stop_reasons": dict(Counter(t.stop_reason for t in trajs)),
            "answered": sum(t.answer is not None for t in trajs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_model = ROOT / "data" / "models" / "base"
    ap.add_argument("--model", default=str(default_model if default_model.exists() else "/tmp/m/base"))
    ap.add_argument("--n-questions", type=int, default=32)
    ap.add_argument("--max-turns", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-obs-tokens", type=int, default=200)
    ap.add_argument("--retriever", default="auto", choices=["auto", "fake", "bm25", "dense"])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: leave torch's default)")
    ap.add_argument("--name", default="smollm2-cpu")
    args = ap.parse_args()

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    import torch
    import transformers

    from searchr2.models import load_model, load_tokenizer
    from searchr2.rollout import RolloutConfig, rollout

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model(args.model), load_tokenizer(args.model)
    retriever, retriever_label = pick_retriever(args.retriever)
    qs = questions(args.n_questions)
    cfg = RolloutConfig(max_turns=args.max_turns, max_new_tokens=args.max_new_tokens,
                        max_obs_tokens=args.max_obs_tokens, batch_size=args.n_questions, do_sample=False)

    warm = tok(["warm up"], return_tensors="pt")
    model.generate(**warm, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)

    print(f"batched: {len(qs)} questions in one rollout call (batch_size={cfg.batch_size}) ...", flush=True)
    t0 = time.perf_counter()
    batched = rollout(model, tok, retriever, qs, cfg)
    batched_s = time.perf_counter() - t0
    print(f"  {batched_s:.1f} s; sequential: one question per call ...", flush=True)
    single_cfg = replace(cfg, batch_size=1)
    t0 = time.perf_counter()
    sequential = [rollout(model, tok, retriever, [q], single_cfg)[0] for q in qs]
    sequential_s = time.perf_counter() - t0

    b, s = summarise(batched, batched_s), summarise(sequential, sequential_s)
    result = {
        "name": args.name, "model": args.model, "model_type": model.config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()), "retriever": retriever_label,
        "rollout_config": asdict(cfg), "torch_threads": torch.get_num_threads(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "transformers": transformers.__version__},
        "batched": b, "sequential": s,
        "speedup_questions_per_s": round(b["questions_per_s"] / s["questions_per_s"], 2),
        "speedup_generated_tokens_per_s": round(b["generated_tokens_per_s"] / s["generated_tokens_per_s"], 2),
        "identical_trajectories": sum(x.token_ids == y.token_ids for x, y in zip(batched, sequential)),
        "example_response": batched[0].response_text(tok)[:1500],
    }
    out = ROOT / "benchmarks" / "results" / f"rollout-{args.name}.json"
    write_result(out, result)
    print(f"\n{'mode':<11} {'seconds':>8} {'q/s':>8} {'gen tok/s':>10} {'turns':>6} stop reasons")
    for mode, r in (("batched", b), ("sequential", s)):
        print(f"{mode:<11} {r['seconds']:>8.1f} {r['questions_per_s']:>8.3f} {r['generated_tokens_per_s']:>10.1f} "
              f"{r['mean_turns']:>6.2f} {r['stop_reasons']}")
    print(f"speedup: {result['speedup_questions_per_s']}x questions/s, "
          f"{result['speedup_generated_tokens_per_s']}x generated tokens/s; "
          f"identical trajectories {result['identical_trajectories']}/{len(qs)}; written to {out}")


if __name__ == "__main__":
    main()
