"""The warm-up set: Actor trajectories and labelled Meta-Refiner examples, with counts of what was kept.

Train questions are shuffled once (by ``seed``) and consumed front to back without reuse: first
the Actor trajectories, then the refiner's training examples; the refiner's held-out examples come
from the back of the list, so no question is in two parts.

* Actor: the oracle teacher (:mod:`searchr2.teacher`) on every record with a hop chain; a share
  ``mistake_share`` of them carries one mistake and its recovery. Records without a hop chain go
  to the rejection sampler. Only trajectories whose final answer is exactly right are kept.
* Refiner: trajectories shown in the meta prompt (:mod:`searchr2.refiner`) with the answer to learn
  as the only trained token: ``0`` for a clean oracle trajectory, ``j`` for one corrupted at step
  ``j``; ``refiner_clean_share`` of them clean.

Every record is ``{"id", "kind", "token_ids", "loss_mask", "decisions", ...}``; the trainer reads only
those fields (``decisions``: positions of the refiner's answer tokens, which weigh
``sft.refiner_loss_weight``), the rest documents the example. With ``actor_decisions`` (inline layout)
an Actor record's ids and mask go on past its trajectory with the review request and the answer 0.
"""
from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from typing import Callable

from tqdm import tqdm

from searchr2.metrics import exact_match
from searchr2.params import check_types
from searchr2.refiner import RefinerConfig, answer_token_ids, meta_prompt_ids, review_suffix_ids
from searchr2.rollout import RolloutConfig, Trajectory
from searchr2.teacher import (CORRUPTIONS, MISTAKES, NotApplicable, Plan, TeacherFailure, corrupted_trajectory,
                              oracle_trajectory, plan_for, rejection_sample)


@dataclass(frozen=True)
class SFTDataConfig:
    """How much warm-up data to write (oracle teacher trajectories for the Actor, labelled meta prompts for
    the Meta-Refiner), and its mix (the ``sft_data`` params section)."""

    seed: int = 0                      # shuffles the train questions and draws every mistake / corruption
    actor_examples: int = 160          # Actor trajectories to keep (fewer if the train set runs out)
    mistake_share: float = 0.2         # share of Actor trajectories with one realistic mistake then a recovery
    train_on_mistakes: bool = False    # also put loss on the mistaken turn (false: it is loss-masked, only the
                                       # recovery is learnt)
    actor_decisions: bool = True       # inline layout: each Actor trajectory without a mistake also trains the
                                       # refiner's answer 0 (accept) in its own row, the review request appended
                                       # (~60 tokens instead of a ~800-token meta prompt of its own; the packed rows
                                       # of RL do the same): the warm-up's clean examples at almost no cost;
                                       # ignored for the numbered layout
    refiner_examples: int = 160        # labelled meta-prompt examples to train on (sft.refiner_passes times each)
    refiner_top_k: int = 1             # documents per search in those training examples (0: rollout.top_k). Fewer
                                       # make a meta prompt shorter (1: ~510 tokens instead of ~820), so the same
                                       # time trains more of them; what is learnt carries over to the rollout's
                                       # three (the held-out examples always use rollout.top_k)
    refiner_clean_share: float = 0.3   # share of them that are clean (label 0); the rest have a flawed step j.
                                       # Low because the Actor's rows already bring the clean side
                                       # (actor_decisions): 0.3 reached held-out AUC 0.98 where 0.5 reached 0.80 for
                                       # the same time (docs/measurements.md, "The default warm-up")
    refiner_heldout: int = 60          # further labelled examples, never trained on: the refiner's accuracy test
    refiner_heldout_clean_share: float = 0.5   # share of the held-out ones that are clean (0.5: balanced, so a
                                               # refiner that always accepts or always revises scores 0.5)
    rejection_model: str = "base"      # records without a hop chain: model sampled from (data/models/<name> or a dir)
    rejection_samples: int = 4         # samples per such record; the first with EM 1 is kept
    rejection_max_questions: int = 256  # at most this many such records are tried (sampling is slow)
    teacher_max_turns: int = 4         # searchable turns of the teacher's trajectories (rollout.max_turns for
                                       # the warm-up only; keep them equal, except for a no-search RL run,
                                       # rollout.max_turns 0, which keeps the searching warm-up)

    def __post_init__(self):
        check_types(self)
        for name in ("actor_examples", "refiner_examples", "refiner_heldout", "rejection_max_questions",
                     "refiner_top_k"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be an int >= 0, got {getattr(self, name)!r}")
        if self.teacher_max_turns < 1:
            raise ValueError(f"teacher_max_turns must be an int >= 1 (the warm-up teaches searching), got "
                             f"{self.teacher_max_turns!r}")
        if self.rejection_samples < 1:
            raise ValueError(f"rejection_samples must be >= 1, got {self.rejection_samples}")
        for name in ("mistake_share", "refiner_clean_share", "refiner_heldout_clean_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


class _Pools:
    """Plausible wrong values: entities and answers seen with the same relation elsewhere in the data."""

    def __init__(self, plans: dict[str, Plan]):
        self.subjects: dict[str, set[str]] = defaultdict(set)
        self.objects: dict[str, set[str]] = defaultdict(set)
        self.answers: set[str] = set()
        for plan in plans.values():
            for hop in plan.hops:
                self.subjects[hop.relation].add(hop.subject)
                self.objects[hop.relation].add(hop.found)
            self.answers.add(plan.answer)

    def distractors(self, plan: Plan) -> list[str]:
        names = set()
        for hop in plan.hops:
            names |= self.subjects.get(hop.relation, set())
        return sorted(n for n in names if n)

    def wrong_answers(self, plan: Plan, record: dict) -> list[str]:
        meta = record.get("metadata") or {}
        options = (meta.get("comparison") or {}).get("options") if isinstance(meta.get("comparison"), dict) else None
        if plan.answer_type == "yes_no" or plan.answer.lower() in ("yes", "no"):
            return ["no" if plan.answer.lower() == "yes" else "yes"]
        if options:
            return [o for o in options if o != plan.answer]
        pool = self.objects.get(plan.hops[-1].relation, set()) if plan.hops else set()
        return sorted(pool or self.answers)


def _actor_record(record: dict, traj: Trajectory, source: str, review: list[int] | None = None, **extra) -> dict:
    """The trajectory's fields; with ``review`` (the inline review request's tokens and the refiner's answer 0),
    ``token_ids`` and ``loss_mask`` go on past the trajectory to train that decision in the same row."""
    out = {"id": record["id"], "kind": "actor", "source": source, "golden_answers": record["golden_answers"],
           **extra, **traj.to_dict()}
    if review:
        out["token_ids"] = out["token_ids"] + review
        out["loss_mask"] = out["loss_mask"] + [0] * (len(review) - 1) + [1]
        out["decisions"] = [len(out["token_ids"]) - 1]
    return out


def _refiner_record(record: dict, traj: Trajectory, label: int, corruption: str | None, tokenizer,
                    cfg: RefinerConfig) -> dict:
    prompt = meta_prompt_ids(tokenizer, traj, cfg)
    answer = answer_token_ids(tokenizer, traj.turns)[label]
    return {"id": record["id"], "kind": "refiner", "question": record["question"], "label": label,
            "n_steps": traj.turns, "corruption": corruption, "trajectory": traj.response_text(tokenizer),
            "token_ids": prompt + [answer], "loss_mask": [0] * len(prompt) + [1], "decisions": [len(prompt)]}


def _accept_review(traj: Trajectory, tokenizer) -> list[int]:
    """The inline layout's review request after ``traj`` and the refiner's answer 0 (accept)."""
    return review_suffix_ids(tokenizer, traj.turns) + [answer_token_ids(tokenizer, traj.turns)[0]]


def build_warmup_data(records: list[dict], tokenizer, retriever, rollout_cfg: RolloutConfig,
                      refiner_cfg: RefinerConfig, cfg: SFTDataConfig,
                      sample_fn: Callable[[], Callable[[list[str]], list[Trajectory]]] | None = None):
    """Write the warm-up set from train ``records``; returns (actor, refiner, heldout records, stats).

    ``sample_fn()`` is called only if some record has no hop chain; it returns the sampler the
    rejection teacher uses (so the model behind it is loaded only when needed).
    """
    start = time.perf_counter()
    records = list(records)
    random.Random(cfg.seed).shuffle(records)
    plans = {r["id"]: plan_for(r) for r in records}
    pools = _Pools({k: v for k, v in plans.items() if v is not None})
    stats: Counter = Counter()

    def rng_for(record, what):
        return random.Random(f"{cfg.seed}:{what}:{record['id']}")

    # ---- Actor trajectories, from the front of the list
    decide = cfg.actor_decisions and refiner_cfg.layout == "inline"
    actor, no_chain, used = [], [], 0
    bar = tqdm(total=cfg.actor_examples, desc="sft_data actor", unit="traj")
    while len(actor) < cfg.actor_examples and used < len(records):
        record = records[used]
        used += 1
        plan = plans[record["id"]]
        if plan is None:
            if len(no_chain) < cfg.rejection_max_questions:
                no_chain.append(record)
            continue
        rng = rng_for(record, "actor")
        mistake = None
        if rng.random() < cfg.mistake_share:
            chain = not plan.comparison and len(plan.hops) > 1
            mistake = rng.choice(MISTAKES if chain else ("vague_query",))
        traj = None
        for attempt in ((mistake, None) if mistake else (None,)):
            try:
                traj = oracle_trajectory(plan, record["question"], tokenizer, retriever, rollout_cfg, mistake=attempt,
                                         rng=rng, distractors=pools.distractors(plan),
                                         train_on_mistake=cfg.train_on_mistakes)
                mistake = attempt
                break
            except NotApplicable:   # this mistake cannot be made here: write the clean trajectory
                stats["mistake_not_applicable"] += 1
            except TeacherFailure as e:
                stats[f"dropped_{e.reason}"] += 1
                break
        if traj is None:
            continue
        if not exact_match(traj.answer, record["golden_answers"]):
            stats["dropped_wrong_answer"] += 1
            continue
        requeries = len(traj.searches) - len(plan.hops) - (mistake is not None)
        review = _accept_review(traj, tokenizer) if decide and mistake is None else None
        actor.append(_actor_record(record, traj, "oracle", review, type=(record.get("metadata") or {}).get("type"),
                                   mistake=mistake, requeries=requeries))
        stats["with_decision"] += review is not None
        stats["with_mistake"] += mistake is not None
        stats["with_requery"] += requeries > 0
        bar.update(1)
    bar.close()
    if no_chain and len(actor) < cfg.actor_examples:
        if sample_fn is None:
            raise ValueError(f"{len(no_chain)} train records have no hop chain and no rejection sampler was given")
        kept = rejection_sample(no_chain, sample_fn(), cfg.rejection_samples)
        stats["rejection_tried"] = len(no_chain)
        stats["rejection_kept"] = len(kept)
        for record in no_chain:
            if record["id"] in kept and len(actor) < cfg.actor_examples:
                traj = kept[record["id"]]
                review = _accept_review(traj, tokenizer) if decide and traj.turns else None
                actor.append(_actor_record(record, traj, "rejection", review,
                                           type=(record.get("metadata") or {}).get("type"), mistake=None, requeries=0))
                stats["with_decision"] += review is not None

    # ---- Meta-Refiner examples: training ones next, held-out ones from the back of the list
    def refiner_examples(pool: list[dict], n: int, what: str, clean_share: float,
                         search: RolloutConfig) -> tuple[list[dict], set[str]]:
        n_clean = round(n * clean_share)
        wanted = [0] * n_clean + [1] * (n - n_clean)          # 0 = clean, 1 = corrupted
        random.Random(f"{cfg.seed}:{what}").shuffle(wanted)
        out, consumed = [], set()
        for record in pool:
            if len(out) == n:
                break
            consumed.add(record["id"])
            plan = plans[record["id"]]
            if plan is None:
                continue
            rng = rng_for(record, what)
            try:
                if wanted[len(out)] == 0:
                    traj = oracle_trajectory(plan, record["question"], tokenizer, retriever, search, rng=rng)
                    out.append(_refiner_record(record, traj, 0, None, tokenizer, refiner_cfg))
                else:
                    chain = not plan.comparison and len(plan.hops) > 1
                    kinds = CORRUPTIONS if chain else tuple(c for c in CORRUPTIONS if c != "wrong_bridge")
                    corruption = rng.choice(kinds)
                    traj, step = corrupted_trajectory(plan, record["question"], tokenizer, retriever, search,
                                                      corruption, rng, pools.distractors(plan),
                                                      pools.wrong_answers(plan, record))
                    out.append(_refiner_record(record, traj, step, corruption, tokenizer, refiner_cfg))
            except (NotApplicable, TeacherFailure):
                stats[f"{what}_skipped"] += 1
        return out, consumed

    rest = records[used:]
    heldout, heldout_ids = refiner_examples(rest[::-1], cfg.refiner_heldout, "heldout", cfg.refiner_heldout_clean_share,
                                            rollout_cfg)
    short = replace(rollout_cfg, top_k=cfg.refiner_top_k) if cfg.refiner_top_k else rollout_cfg
    refiner, _ = refiner_examples([r for r in rest if r["id"] not in heldout_ids], cfg.refiner_examples, "refiner",
                                  cfg.refiner_clean_share, short)
    summary = build_stats(actor, refiner, heldout, stats, used, time.perf_counter() - start)
    return actor, refiner, heldout, summary


def build_stats(actor: list[dict], refiner: list[dict], heldout: list[dict], stats: Counter, tried: int,
                seconds: float) -> dict:
    """Counts and mix of the warm-up set (what DVC shows as the sft_data metrics)."""
    def tokens(rows):
        return sum(len(r["token_ids"]) for r in rows)

    def labels(rows):
        return dict(sorted(Counter(str(r["label"]) for r in rows).items()))

    return {
        "actor": len(actor), "refiner": len(refiner), "refiner_heldout": len(heldout),
        "actor_questions_tried": tried,
        "actor_by_type": dict(sorted(Counter(str(r["type"]) for r in actor).items())),
        "actor_by_source": dict(sorted(Counter(r["source"] for r in actor).items())),
        "actor_with_mistake": stats["with_mistake"], "actor_with_requery": stats["with_requery"],
        "actor_with_decision": stats["with_decision"],
        "actor_dropped": {k.removeprefix("dropped_"): v for k, v in sorted(stats.items()) if k.startswith("dropped_")},
        "rejection": {"tried": stats["rejection_tried"], "kept": stats["rejection_kept"]},
        "refiner_labels": labels(refiner), "heldout_labels": labels(heldout),
        "refiner_corruptions": dict(sorted(Counter(str(r["corruption"]) for r in refiner).items())),
        "actor_tokens": tokens(actor), "actor_trained_tokens": sum(sum(r["loss_mask"]) for r in actor),
        "refiner_tokens": tokens(refiner),
        "mean_actor_tokens": round(tokens(actor) / len(actor), 1) if actor else 0.0,
        "seconds": round(seconds, 2),
    }
