"""Where the seconds of one default RL step and of the agent evaluation go, and how close the rollout
gets to the model's plain forward speed.

    python benchmarks/profile_rl.py                                  # params.yaml, data/models/sft
    python benchmarks/profile_rl.py --eval-questions 40 --name profile-rl

Three parts, one process, the machine otherwise idle (the numbers are only meaningful then):

``--engine before`` runs the engine as it was before the issue-17 speed work (see
``benchmarks/bench_speed.py``), ``after`` (the default) as it is.

1. **One RL step** exactly as stage ``rl`` runs step ``--step`` (:func:`searchr2.rl.rl_step`, then
   :func:`searchr2.rl.update_policy` with the stage's learning rate), from ``--model`` with
   ``params.yaml``'s settings.
2. **The agent evaluation**: greedy rollouts of the first ``--eval-questions`` test questions of each
   eval set (what ``evaluate@<model>`` runs for ``agent_*``, in its chunks).
3. **The forward-only bound**: the model's tokens/s for a bare forward pass at the shapes the rollouts
   of parts 1 and 2 used: the median prefill block (rows x new columns, over a cache as long as the
   median context) and decode steps at the median batch over a cache of the median length. The
   rollout's processed tokens (prefill columns plus decoded tokens, padding included as the model
   computes it) divided by the time the bound would take for the same tokens gives its share.

Time is charged exclusively to the innermost of these sections (the code is patched with timers, its
behaviour unchanged): ``prefill`` and ``decode`` (the model's forward inside generation: several new
columns, or one), ``stop_check`` (the per-row stop-string test after each decoded token, its decoding
included), ``generate_other`` (the rest of ``generate``: sampling, the cache update, bookkeeping),
``retrieval``, ``tool_text`` (documents formatted and tokenised), ``detokenise`` (turns decoded to
find their action), ``cache_copy`` (rows selected out of a KV cache), ``review`` (the inline
refiner's scoring, its forward included), ``refine_score`` (meta prompts scored by a forward of
their own), ``judge``, ``reference`` (the frozen model's log-probabilities), ``update_forward``,
``update_backward``, ``optimizer`` (clipping and the step) and ``other`` (whatever is left: Python
between the sections). The phase (``rollout``, ``refine``: the cut-and-regenerate rollouts,
``update``, ``eval``) prefixes each name.

Results: ``benchmarks/results/<name>.json`` and ``.md``, with ``lscpu``'s model and flags.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.run_info import loadavg_fields, lscpu, markdown_head, model_label, write_result  # noqa: E402


ARMS = ("before", "after")


@contextlib.contextmanager
def padding_mask_kept():
    """The update's forward passes get the batch's padding mask, as before
    :func:`searchr2.training.body_attention_mask` dropped it."""
    import searchr2.grpo as grpo_mod

    original = grpo_mod.body_attention_mask
    grpo_mod.body_attention_mask = lambda lm, attention_mask: attention_mask
    try:
        yield
    finally:
        grpo_mod.body_attention_mask = original


@contextlib.contextmanager
def engine(arm: str):
    """The engine of ``arm``: ``before`` swaps the growing cache for transformers' ``DynamicCache`` and
    gives the update's forward passes their padding mask again (:func:`padding_mask_kept`)."""
    import transformers

    import searchr2.rollout as rollout_mod

    if arm == "after":
        yield
        return
    original = rollout_mod.growing_cache
    rollout_mod.growing_cache = lambda config: transformers.DynamicCache(config=config)
    try:
        with padding_mask_kept():
            yield
    finally:
        rollout_mod.growing_cache = original


def rollout_config(p, arm: str):
    return p.rollout if arm == "after" else dataclasses.replace(p.rollout, share_prefix=False, batch_size=32)


class Profile:
    """Exclusive time per section: a section's time excludes the sections opened inside it."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.tokens: dict[str, int] = defaultdict(int)
        self.stack: list[list] = []          # [name, start, time of children]
        self.phase = "other"
        self.shapes: dict[str, list] = defaultdict(list)

    @contextlib.contextmanager
    def section(self, name: str):
        full = f"{self.phase}.{name}"
        self.stack.append([full, time.perf_counter(), 0.0])
        try:
            yield
        finally:
            full, start, children = self.stack.pop()
            spent = time.perf_counter() - start
            self.seconds[full] += spent - children
            self.calls[full] += 1
            if self.stack:
                self.stack[-1][2] += spent

    def inside(self, name: str) -> bool:
        return any(entry[0].endswith("." + name) for entry in self.stack)

    @contextlib.contextmanager
    def in_phase(self, phase: str):
        before, self.phase = self.phase, phase
        start = time.perf_counter()
        try:
            with self.section("other"):
                yield
        finally:
            self.phase = before
            if before != phase:                  # a phase entered again from inside itself is not counted twice
                self.seconds[f"{phase}.wall"] += time.perf_counter() - start


def wrap(owner, name: str, make):
    """Replace ``owner.name`` by ``make(original)``."""
    original = getattr(owner, name)
    setattr(owner, name, make(original))


def instrument(prof: Profile, lm, reference, tokenizer) -> None:
    """Patch timers around the engine's parts (behaviour unchanged)."""
    import transformers.cache_utils as cache_utils

    import searchr2.grpo as grpo
    import searchr2.refiner as refiner
    import searchr2.rl as rl
    import searchr2.rollout as rollout_mod

    def timed(section):
        def make(fn):
            @functools.wraps(fn)
            def run(*args, **kwargs):
                with prof.section(section):
                    return fn(*args, **kwargs)
            return run
        return make

    forward = lm.forward

    # functools.wraps keeps the signature visible: generate inspects forward's parameters to decide what to
    # pass (position ids from the attention mask, logits_to_keep), and a bare (*args, **kwargs) would lose them
    @functools.wraps(forward)
    def lm_forward(*args, **kwargs):
        ids = kwargs.get("input_ids")
        if ids is None or prof.inside("review") or prof.inside("refine_score") or prof.inside("reference"):
            return forward(*args, **kwargs)
        cache = kwargs.get("past_key_values")
        context = cache.get_seq_length() if cache is not None else 0
        kind = "decode" if ids.shape[1] == 1 else "prefill"
        with prof.section(kind):
            out = forward(*args, **kwargs)
        prof.tokens[f"{prof.phase}.{kind}"] += ids.numel()
        prof.shapes[f"{prof.phase}.{kind}"].append((ids.shape[0], ids.shape[1], context))
        return out

    lm.forward = lm_forward
    wrap(rollout_mod, "search_batch", timed("retrieval"))
    wrap(rollout_mod, "tool_output_ids", timed("tool_text"))
    wrap(rollout_mod._TurnStop, "__call__", timed("stop_check"))
    wrap(rollout_mod._Group, "review", timed("review"))
    wrap(rollout_mod, "_cache_rows", timed("cache_copy"))
    wrap(cache_utils.DynamicCache, "batch_select_indices", timed("cache_copy"))
    wrap(rl, "score", timed("judge"))
    wrap(refiner, "decision_distributions", timed("refine_score"))
    wrap(rl, "compute_logprobs", timed("reference"))
    wrap(grpo.TokenLogProbs, "forward", timed("update_forward"))
    decode = tokenizer.decode

    @functools.wraps(decode)
    def detok(*args, **kwargs):
        if prof.inside("stop_check") or prof.inside("tool_text"):
            return decode(*args, **kwargs)
        with prof.section("detokenise"):
            return decode(*args, **kwargs)

    tokenizer.decode = detok
    generate = lm.generate

    @functools.wraps(generate)
    def gen(*args, **kwargs):
        with prof.section("generate_other"):
            return generate(*args, **kwargs)

    lm.generate = gen

    # phases: the refiner's regeneration runs inside refine(); update's parts
    wrap(rl, "rollout", lambda fn: (lambda *a, **k: _phase(prof, "rollout", fn, *a, **k)))
    wrap(refiner, "rollout", lambda fn: (lambda *a, **k: _phase(prof, "refine", fn, *a, **k)))
    wrap(rl, "refine", lambda fn: (lambda *a, **k: _phase(prof, "refine", fn, *a, **k)))


def _phase(prof: Profile, name: str, fn, *args, **kwargs):
    with prof.in_phase(name):
        return fn(*args, **kwargs)


def forward_bound(lm, shapes: list[tuple[int, int, int]], repeats: int = 3) -> dict:
    """Tokens/s of a bare forward at the median of ``shapes`` (rows, new columns, cached context)."""
    rows = int(statistics.median(s[0] for s in shapes))
    cols = int(statistics.median(s[1] for s in shapes))
    context = int(statistics.median(s[2] for s in shapes))
    return timed_forward(lm, rows, cols, context, repeats)


def timed_forward(lm, rows: int, cols: int, context: int, repeats: int = 3) -> dict:
    """Best of ``repeats`` bare forwards of ``rows`` x ``cols`` new tokens over ``context`` cached ones
    (the cache one that grows in place, :mod:`searchr2.kv_cache`, so no cache copy is timed)."""
    import torch

    from searchr2.kv_cache import growing_cache

    vocab = lm.config.vocab_size
    g = torch.Generator().manual_seed(0)
    best = float("inf")
    with torch.inference_mode():
        cache = growing_cache(lm.config)                 # the context is fed once; each timed pass is cropped off
        if context:
            for start in range(0, context, 512):
                lm(input_ids=torch.randint(0, vocab, (rows, min(512, context - start)), generator=g),
                   past_key_values=cache, use_cache=True, logits_to_keep=1)
        for _ in range(repeats + 1):
            ids = torch.randint(0, vocab, (rows, cols), generator=g)
            start = time.perf_counter()
            lm(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            best = min(best, time.perf_counter() - start)
            cache.crop(-cols)
    return {"rows": rows, "new_columns": cols, "context": context, "seconds": round(best, 4),
            "tokens_per_s": round(rows * cols / best, 1)}


def bound_share(prof: Profile, phase: str, bounds: dict) -> dict:
    """The phase's rollout tokens/s and the share of the forward-only bound it reaches."""
    prefill, decode = prof.tokens[f"{phase}.prefill"], prof.tokens[f"{phase}.decode"]
    wall = prof.seconds[f"{phase}.wall"]
    ideal = prefill / bounds["prefill"]["tokens_per_s"] + decode / bounds["decode"]["tokens_per_s"]
    return {"prefill_tokens": prefill, "decode_tokens": decode, "seconds": round(wall, 2),
            "processed_tokens_per_s": round((prefill + decode) / wall, 1),
            "bound_seconds": round(ideal, 2), "share_of_bound": round(ideal / wall, 3)}


def table(prof: Profile, phases: tuple[str, ...]) -> list[str]:
    lines = ["| phase | section | seconds | share of phase | calls |", "|---|---|---:|---:|---:|"]
    for phase in phases:
        wall = prof.seconds.get(f"{phase}.wall", 0.0)
        if not wall:
            continue
        items = sorted(((k.split(".", 1)[1], v) for k, v in prof.seconds.items()
                        if k.startswith(phase + ".") and not k.endswith(".wall")), key=lambda kv: -kv[1])
        for name, seconds in items:
            lines.append(f"| {phase} | {name} | {seconds:.2f} | {seconds / wall:.1%} | {prof.calls[f'{phase}.{name}']} |")
        lines.append(f"| {phase} | **wall** | **{wall:.2f}** | | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "data/models/sft")
    parser.add_argument("--step", type=int, default=1, help="the RL step whose questions and seed are used")
    parser.add_argument("--eval-questions", type=int, default=20, help="test questions per eval set (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engine", choices=ARMS, default="after", help="the engine before or after the speed work")
    parser.add_argument("--decode-sweep", type=int, nargs="*", default=[1, 8, 16, 32, 64, 128],
                        help="also time one decoding step at these batch sizes (over the median context)")
    parser.add_argument("--name", default="profile-rl", help="results go to benchmarks/results/<name>.json and .md")
    args = parser.parse_args()

    import torch

    from searchr2.data import load_eval_set, load_train_records
    from searchr2.distributed import make_accelerator
    from searchr2.evaluation import greedy, run_system
    from searchr2.grpo import TokenLogProbs
    from searchr2.judge import make_judge
    from searchr2.models import load_model, load_tokenizer
    from searchr2.params import load_params
    from searchr2.paths import INDEX_DIR, QA_DIR
    from searchr2.retrieval import load_retriever
    from searchr2.rl import rl_step, split_questions, step_learning_rates, step_questions, update_policy
    from searchr2.training import freeze_bottom, make_optimizer

    torch.set_num_threads(args.threads)
    os.chdir(ROOT)
    p = load_params()
    cfg = p.rl
    tokenizer = load_tokenizer(args.model)
    retriever = load_retriever(p.retrieval.method, INDEX_DIR, p.index)
    pool, _ = split_questions(load_train_records(QA_DIR, p.data.train_sets), cfg)
    accelerator = make_accelerator(cfg.device, cfg.mixed_precision, cfg.max_grad_norm, "rl")
    lm = load_model(args.model, "float32", "cpu")
    freeze_bottom(lm, cfg.freeze_layers, "rl")
    reference = load_model(args.model, "float32", "cpu").eval().requires_grad_(False) if cfg.kl_coef > 0 else None
    model, optimizer = accelerator.prepare(TokenLogProbs(lm), make_optimizer(lm, cfg.lr, cfg.weight_decay))
    judge = make_judge(p.reward)

    prof = Profile()
    instrument(prof, lm, reference, tokenizer)
    wrap(accelerator, "backward", lambda fn: (lambda *a, **k: _timed_call(prof, "update_backward", fn, *a, **k)))
    wrap(optimizer, "step", lambda fn: (lambda *a, **k: _timed_call(prof, "optimizer", fn, *a, **k)))
    wrap(accelerator, "clip_grad_norm_", lambda fn: (lambda *a, **k: _timed_call(prof, "optimizer", fn, *a, **k)))

    load_before = os.getloadavg()
    batch = step_questions(pool, cfg, args.step)
    torch.manual_seed(args.step)
    start = time.perf_counter()
    with engine(args.engine):
        sequences, advantages, weights, metrics, timings = rl_step(lm, tokenizer, retriever, batch, cfg,
                                                                   rollout_config(p, args.engine), p.refiner,
                                                                   p.reward, judge, args.step)
    with prof.in_phase("update"):
        stats = update_policy(accelerator, model, reference, optimizer, step_learning_rates(cfg, args.step),
                              sequences, advantages, weights, cfg, args.step)
    step_seconds = time.perf_counter() - start
    rl_shapes = {k: list(v) for k, v in prof.shapes.items()}

    eval_result = None
    if args.eval_questions:
        sets = {name: load_eval_set(QA_DIR, name, args.eval_questions) for name in p.data.test_sets}
        policy = accelerator.unwrap_model(model).lm.eval()
        from searchr2.rollout import rollout

        answer = lambda qs: rollout(policy, tokenizer, retriever, qs, greedy(rollout_config(p, args.engine)))  # noqa: E731
        start_eval = time.perf_counter()
        with prof.in_phase("eval"), engine(args.engine):
            if args.engine == "after":
                run_system(answer, sets, tokenizer, p.evaluate.chunk_size, "agent")
            else:                                       # before: one eval set at a time
                for name, records in sets.items():
                    run_system(answer, {name: records}, tokenizer, p.evaluate.chunk_size, f"agent {name}")
        seconds = time.perf_counter() - start_eval
        n = sum(len(r) for r in sets.values())
        eval_result = {"questions": n, "seconds": round(seconds, 2), "questions_per_s": round(n / seconds, 4)}

    lm.eval()
    shapes = {k: v for k, v in prof.shapes.items()}
    every = {kind: [s for k, v in shapes.items() if k.endswith(kind) for s in v] for kind in ("prefill", "decode")}
    bounds = {kind: forward_bound(lm, every[kind]) for kind in ("prefill", "decode") if every[kind]}
    context = bounds["decode"]["context"] if "decode" in bounds else 512
    sweep = [timed_forward(lm, rows, 1, context) for rows in args.decode_sweep]
    result = {
        "name": args.name, "engine": args.engine, "model": model_label(args.model), "torch": torch.__version__, "threads": args.threads,
        "cpu": lscpu(), "step": args.step, "questions_per_step": cfg.questions_per_step, "group_size": cfg.group_size,
        "rollout": dataclasses.asdict(p.rollout), "refiner_layout": p.refiner.layout,
        "rl_step_seconds": round(step_seconds, 2), "stage_timings": {k: round(v, 2) for k, v in timings.items()},
        "metrics": {k: round(v, 4) for k, v in metrics.items()}, "trained_share": stats["trained_share"],
        "sequences": len(sequences), "sequence_tokens": sum(len(s.token_ids) for s in sequences),
        "eval": eval_result, "seconds": {k: round(v, 3) for k, v in sorted(prof.seconds.items())},
        "calls": dict(sorted(prof.calls.items())), "tokens": dict(sorted(prof.tokens.items())),
        "forward_bound": bounds, "decode_sweep": sweep,
        "bound_share": {phase: bound_share(prof, phase, bounds) for phase in ("rollout", "refine", "eval")
                        if prof.seconds.get(f"{phase}.wall")},
        "shape_counts": {k: len(v) for k, v in rl_shapes.items()},
        **loadavg_fields(load_before)}
    out = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    write_result(out, result)
    md = [*markdown_head(args.name, result, torch.__version__, args.threads),
          f"RL step {args.step}: {step_seconds:.1f} s ({cfg.questions_per_step} questions x {cfg.group_size}, "
          f"{len(sequences)} update rows, {result['sequence_tokens']} tokens)."
          + (f" Agent evaluation: {eval_result['questions']} questions in {eval_result['seconds']} s "
             f"({eval_result['questions_per_s']} q/s)." if eval_result else ""), "",
          *table(prof, ("rollout", "refine", "update", "eval")), "",
          "| phase | prefill tokens | decode tokens | processed tokens/s | forward-only bound s | share of bound |",
          "|---|---:|---:|---:|---:|---:|"]
    for phase, b in result["bound_share"].items():
        md.append(f"| {phase} | {b['prefill_tokens']} | {b['decode_tokens']} | {b['processed_tokens_per_s']} | "
                  f"{b['bound_seconds']} | {b['share_of_bound']:.1%} |")
    md += ["", "Forward-only bound (bare forward, best of 3): " + "; ".join(
        f"{kind}: {b['rows']} rows x {b['new_columns']} new columns over {b['context']} cached, "
        f"{b['tokens_per_s']} tokens/s" for kind, b in bounds.items())]
    if sweep:
        md += ["", f"One decoding step over {context} cached tokens, by batch size:", "",
               "| rows | seconds | tokens/s |", "|---:|---:|---:|"]
        md += [f"| {b['rows']} | {b['seconds']} | {b['tokens_per_s']} |" for b in sweep]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def _timed_call(prof: Profile, section: str, fn, *args, **kwargs):
    with prof.section(section):
        return fn(*args, **kwargs)


if __name__ == "__main__":
    main()
