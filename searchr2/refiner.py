"""The Meta-Refiner (arXiv 2602.03647; docs/method.md#meta-refiner): one prompt, one integer answer
about a whole trajectory.

The Actor's own weights play the refiner under a different prompt (the *meta prompt*). It is shown
the question and the trajectory as numbered steps, each step being one assistant turn followed by
the tool output it triggered, and answers one integer ``j``: ``0`` when every step is acceptable
(the discriminator accepts), ``j >= 1`` for the earliest flawed step (the trimmer's cut point).

Its decision is read from the next-token distribution after the meta prompt, restricted to the
candidate answers ``0..n`` (``n`` = the trajectory's number of steps; a step that does not exist
cannot be flawed). Each candidate must be a single token of the tokenizer (digits are, in every
tokenizer this project uses), so one forward pass scores all of them.

Revise or not (docs/method.md#meta-refiner): compare the score of "revise" with the probability of answer 0 and revise
when it is at least as large, minus a margin. "Revise" is scored either as the total probability
of the non-zero answers (``total``, the default) or as the best single non-zero answer (``best``).
When revising, the cut point is drawn from the non-zero answers' distribution, renormalised.

Two layouts of the meta prompt (``layout``):

* ``numbered`` (the paper's numbered steps taken literally): a new conversation whose one user message
  reprints the question and the trajectory as ``Step 1: …``, ``Step 2: …``, each tool output cut to
  ``obs_tokens`` tokens (the refiner needs to see what a search returned, not every word of it).
* ``inline`` (the default; a declared deviation, docs/deviations.md#inline-meta-prompt-layout): the
  trajectory's own conversation, exactly as the Actor wrote it, followed by a short review request that numbers the steps by
  reference ("each assistant turn with the results it got is one step, the first is step 1"). The
  steps and their order are the same; only the numerals are not printed in front of each step.
  Because the meta prompt then *starts with the trajectory's own tokens*, two costs disappear:
  the rollout engine scores the decision from the KV cache it already holds (only the request's
  few dozen tokens are new, see ``review`` in :func:`searchr2.rollout.rollout`), and an accepted
  trajectory and its decision train in ONE forward pass (:func:`searchr2.grpo.pack_shared_prefix`;
  causal attention makes that exact). With ``numbered``, both are a second pass over ~700 tokens.
  ``obs_tokens`` does not apply (the refiner sees the documents the Actor saw).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from searchr2.generation import by_length, eval_mode, left_pad, pad_id
from searchr2.params import check_types
from searchr2.protocol import build_chat_ids, normalize_question, truncate_to_tokens
from searchr2.rollout import RolloutConfig, Trajectory, rollout

REVISE_SCORES = ("total", "best")
LAYOUTS = ("inline", "numbered")

META_INSTRUCTIONS = (
    "You are reviewing a search assistant's attempt at a question. Its work is split into numbered "
    "steps; each step is what the assistant wrote, then what the search tool sent back. Find the "
    "first step that went wrong: a search for the wrong thing, a fact misread from the results, a "
    "wrong entity carried into the next search, or a wrong final answer. Reply with that step's "
    "number only, or 0 if every step is sound."
)

#: The ``inline`` layout's request, appended to the trajectory as the next user message.
REVIEW_REQUEST = (
    "Review the attempt above as numbered steps: each assistant turn, together with the search results "
    "it got back, is one step, and the first turn is step 1. Find the first step that went wrong: a search "
    "for the wrong thing, a fact misread from the results, a wrong entity carried into the next search, or "
    "a wrong final answer. Reply with that step's number only (1 to {n}), or 0 if every step is sound."
)
#: Stands in for the trajectory when the chat template is rendered, to find where the request begins.
_MARK = "@@SEARCHR2-TRAJECTORY-END@@"


@dataclass(frozen=True)
class RefinerConfig:
    """How the Meta-Refiner (the same weights under a meta prompt) is prompted and how its answer becomes a
    decision (the ``refiner`` params section; ``docs/method.md``, "Meta-Refiner")."""

    enabled: bool = True            # false: no refiner during RL rollouts (the Search-R1 rung of the ablation ladder)
    layout: str = "inline"          # inline: the trajectory's own tokens, then a request naming its turns steps 1..n
                                    # (scored from the rollout's KV cache; an acceptance trains in its trajectory's
                                    # row); numbered: a new prompt reprinting the steps "Step 1: ..." (2 extra
                                    # passes) (docs/deviations.md, "Inline meta-prompt layout")
    obs_tokens: int = 240           # numbered layout: tokens of each tool output shown (the rest is cut)
    revise_score: str = "total"     # total: P(any j >= 1) vs P(0); best: max_j P(j) vs P(0) (the paper leaves it open)
    margin: float = 0.0             # revise when score(revise) >= P(0) + margin (0.0: the paper's plain comparison)
    max_revisions: int = 1          # cut-and-regenerate rounds per trajectory (the paper tried 1 to 4)
    batch_size: int = 8             # meta prompts scored together in one forward pass

    def __post_init__(self):
        check_types(self)
        for name in ("max_revisions", "batch_size"):
            value = getattr(self, name)
            if value < (0 if name == "max_revisions" else 1):
                raise ValueError(f"{name} must be an int >= {0 if name == 'max_revisions' else 1}, got {value!r}")
        if self.obs_tokens < 1:
            raise ValueError(f"obs_tokens must be an int >= 1, got {self.obs_tokens!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.revise_score not in REVISE_SCORES:
            raise ValueError(f"revise_score must be one of {', '.join(REVISE_SCORES)}, got {self.revise_score!r}")


def trajectory_steps(traj: Trajectory, tokenizer) -> list[tuple[str, str]]:
    """``(assistant text, tool text)`` per assistant turn, decoded from the trajectory's own spans.

    The tool text is "" for a last turn that nothing answered (e.g. the final answer).
    """
    steps: list[tuple[str, str]] = []
    for span in traj.steps:
        text = tokenizer.decode(traj.token_ids[span["start"]:span["end"]], skip_special_tokens=False)
        if span["kind"] == "assistant":
            steps.append((text, ""))
        elif steps:
            steps[-1] = (steps[-1][0], text)
    return steps


def meta_prompt_text(question: str, steps: list[tuple[str, str]], tokenizer, obs_tokens: int) -> str:
    """The meta prompt's user message: instructions, question, numbered steps, and the request."""
    lines = [META_INSTRUCTIONS, f"Question: {normalize_question(question)}"]
    for n, (written, tool) in enumerate(steps, start=1):
        tool = truncate_to_tokens(tool.strip(), tokenizer, obs_tokens) if tool.strip() else ""
        lines.append(f"Step {n}: {written.strip()}" + (f"\n{tool}" if tool else ""))
    lines.append(f"Which step is the first wrong one (1 to {len(steps)}), or 0 if none?")
    return "\n".join(lines)


def review_suffix_ids(tokenizer, n_steps: int) -> list[int]:
    """The ``inline`` layout's tokens after a trajectory: the Actor's message closed, the review request
    as the next user message (:data:`REVIEW_REQUEST`), and the header of the refiner's reply.

    Rendered with the tokenizer's chat template around a marker in place of the trajectory and
    tokenised on its own, as the rollout engine tokenises tool outputs; without a chat template the
    request sits on its own line.
    """
    request = REVIEW_REQUEST.format(n=n_steps)
    if not getattr(tokenizer, "chat_template", None):
        return [int(i) for i in tokenizer("\n" + request + "\n", add_special_tokens=False)["input_ids"]]
    text = tokenizer.apply_chat_template([{"role": "user", "content": "?"}, {"role": "assistant", "content": _MARK},
                                          {"role": "user", "content": request}], add_generation_prompt=True,
                                         tokenize=False)
    if _MARK not in text or request not in text:
        raise ValueError("the tokenizer's chat template drops an earlier assistant message or rewrites the request; "
                         "use refiner.layout=numbered with this model")
    return [int(i) for i in tokenizer(text[text.index(_MARK) + len(_MARK):], add_special_tokens=False)["input_ids"]]


def meta_prompt_ids(tokenizer, traj: Trajectory, cfg: RefinerConfig) -> list[int]:
    """Token ids of the meta prompt for ``traj`` in ``cfg.layout``, ending where the refiner's answer begins."""
    if cfg.layout == "inline":
        return list(traj.token_ids) + review_suffix_ids(tokenizer, traj.turns)
    steps = trajectory_steps(traj, tokenizer)
    return build_chat_ids(tokenizer, meta_prompt_text(traj.question, steps, tokenizer, cfg.obs_tokens))


def review_hook(tokenizer, cfg: RefinerConfig):
    """What :func:`searchr2.rollout.rollout` needs to score the ``inline`` decision of each trajectory as
    it finishes, from the KV cache it holds: ``traj -> (review suffix ids, answer ids 0..turns)``.
    None for the ``numbered`` layout (its meta prompt shares no prefix with the trajectory)."""
    if cfg.layout != "inline":
        return None
    return lambda traj: (review_suffix_ids(tokenizer, traj.turns), answer_token_ids(tokenizer, traj.turns))


def answer_token_ids(tokenizer, n_steps: int) -> list[int]:
    """The single token id of each candidate answer ``"0".."n_steps"``; a clear error otherwise."""
    ids = []
    for j in range(n_steps + 1):
        toks = tokenizer(str(j), add_special_tokens=False)["input_ids"]
        if len(toks) != 1:
            raise ValueError(f"the refiner's answer {j!r} is {len(toks)} tokens in this tokenizer; answers must be "
                             f"single tokens (keep the number of steps below 10)")
        ids.append(int(toks[0]))
    return ids


def decision_distributions(model, tokenizer, prompts: list[list[int]], n_steps: list[int],
                           batch_size: int = 8) -> list[list[float]]:
    """For each meta prompt, P(answer = j) for j in 0..n_steps, renormalised over those candidates.

    Prompts are left-padded and scored in batches with one forward pass each (no generation).
    """
    import torch

    if len(prompts) != len(n_steps):
        raise ValueError(f"{len(prompts)} prompts but {len(n_steps)} step counts")
    device = getattr(model, "device", torch.device("cpu"))
    with eval_mode(model):
        results: dict[int, list[float]] = {}
        for rows in by_length(prompts, batch_size):
            ids, mask = left_pad([prompts[i] for i in rows], pad_id(tokenizer))
            with torch.inference_mode():
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                               logits_to_keep=1).logits[:, -1].float()
            logp = torch.log_softmax(logits, dim=-1).cpu()
            for r, i in enumerate(rows):
                cand = logp[r, answer_token_ids(tokenizer, n_steps[i])]
                results[i] = torch.softmax(cand, dim=0).tolist()
    return [results[i] for i in range(len(prompts))]


def revise_decision(probs: list[float], cfg: RefinerConfig) -> bool:
    """True when the refiner should cut and regenerate (see the module docstring)."""
    if len(probs) < 2:
        return False
    nonzero = probs[1:]
    score = sum(nonzero) if cfg.revise_score == "total" else max(nonzero)
    return score >= probs[0] + cfg.margin


def cut_distribution(probs: list[float]) -> list[float]:
    """The trimmer's distribution over steps 1..n: the non-zero answers renormalised."""
    nonzero = probs[1:]
    total = sum(nonzero)
    if not nonzero or total <= 0 or not math.isfinite(total):
        raise ValueError("no probability mass on any step to cut at")
    return [p / total for p in nonzero]


def decision_auc(probs: list[list[float]], labels: list[int]) -> float | None:
    """How well P(0) separates clean (label 0) from flawed trajectories, whatever the revise threshold.

    The chance that a random clean trajectory gets a higher P(0) than a random flawed one (ties count
    half): 0.5 is no discrimination, 1.0 perfect. None when one of the two classes is absent.
    """
    clean = [p[0] for p, y in zip(probs, labels) if y == 0]
    flawed = [p[0] for p, y in zip(probs, labels) if y > 0]
    if not clean or not flawed:
        return None
    wins = sum((c > f) + 0.5 * (c == f) for c in clean for f in flawed)
    return round(wins / (len(clean) * len(flawed)), 4)


def accuracy(probs: list[list[float]], labels: list[int], cfg: RefinerConfig) -> dict:
    """How well the refiner finds flawed steps on labelled trajectories.

    ``exact``: the most likely answer equals the label (0 for a clean trajectory);
    ``accept_reject``: the revise decision agrees with whether the trajectory is flawed (label > 0);
    ``flawed_recall`` / ``clean_accept``: that agreement on each class separately; ``auc``: see
    :func:`decision_auc`. All in [0, 1].
    """
    if not labels or len(probs) != len(labels):
        raise ValueError(f"need one distribution per label, got {len(probs)} and {len(labels)}")
    exact = [max(range(len(p)), key=p.__getitem__) == y for p, y in zip(probs, labels)]
    decide = [revise_decision(p, cfg) == (y > 0) for p, y in zip(probs, labels)]
    flawed = [d for d, y in zip(decide, labels) if y > 0]
    clean = [d for d, y in zip(decide, labels) if y == 0]

    def mean(xs):
        return round(sum(xs) / len(xs), 4) if xs else None

    return {"n": len(labels), "exact": mean(exact), "accept_reject": mean(decide),
            "flawed_recall": mean(flawed), "clean_accept": mean(clean),
            "revise_rate": mean([revise_decision(p, cfg) for p in probs]), "auc": decision_auc(probs, labels)}


@dataclass
class Decision:
    """What the refiner did with one trajectory in one round: the training sequence of its meta-action.

    ``action`` is the integer it emitted: 0 (accept) or the sampled cut step. ``token_ids`` is the meta
    prompt followed by that answer's token, ``loss_mask`` marks only that token: RL trains it with the
    advantage of the final trajectory it led to (docs/method.md#joint-grpo).
    """

    index: int                      # which trajectory of the batch
    round: int                      # revision round, 0-based
    action: int                     # 0 = accept; j >= 1 = cut before step j and regenerate
    probs: list[float]              # P(0..n) the decision was read from
    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)


def refine(model, tokenizer, retriever, trajectories: list[Trajectory], rollout_cfg: RolloutConfig,
           cfg: RefinerConfig, rng: random.Random, generate=None) -> tuple[list[Trajectory], list[Decision]]:
    """The Meta-Refiner over a batch of finished trajectories: accept, or cut and regenerate
    (docs/method.md#cut-and-regenerate).

    Each round scores every still-open trajectory's meta prompt (a trajectory whose ``review_probs``
    the rollout engine already filled, see :func:`review_hook`, is not scored again); a trajectory the rule revises is cut
    before a step drawn from the trimmer distribution (``rng``), its prefix kept token for token
    (:meth:`Trajectory.truncate`), and the Actor regenerates the rest with live search under the same
    turn budget, all revised ones in one :func:`~searchr2.rollout.rollout` call. A trajectory leaves
    when accepted or after ``cfg.max_revisions`` rounds. Returns the final trajectories (same order)
    and every decision taken. ``model`` scores; ``generate`` (default: ``model``), a model or a back-end
    of :mod:`searchr2.engine`, regenerates.
    """
    final = list(trajectories)
    decisions: list[Decision] = []
    pending = [i for i, t in enumerate(final) if t.turns >= 1]   # trajectories still to be reviewed
    for round_no in range(cfg.max_revisions):
        if not pending:
            break
        prompts = [meta_prompt_ids(tokenizer, final[i], cfg) for i in pending]
        probs = [final[i].review_probs if cfg.layout == "inline" else None for i in pending]
        todo = [k for k, p in enumerate(probs) if p is None]
        if todo:
            scored = decision_distributions(model, tokenizer, [prompts[k] for k in todo],
                                            [final[pending[k]].turns for k in todo], cfg.batch_size)
            for k, p in zip(todo, scored):
                probs[k] = p
        revise, cuts = [], []
        for i, prompt, p in zip(pending, prompts, probs):
            action = 0
            if revise_decision(p, cfg):
                action = 1 + rng.choices(range(len(p) - 1), weights=cut_distribution(p))[0]
                revise.append(i)
                cuts.append(action)
            answer = answer_token_ids(tokenizer, final[i].turns)[action]
            decisions.append(Decision(index=i, round=round_no, action=action, probs=p, token_ids=prompt + [answer],
                                      loss_mask=[0] * len(prompt) + [1]))
        if revise:
            prefixes = [final[i].truncate(cut - 1) for i, cut in zip(revise, cuts)]
            more = round_no + 1 < cfg.max_revisions      # another round will read the new ones' decisions
            redone = rollout(generate or model, tokenizer, retriever, [final[i].question for i in revise],
                             _reseeded(rollout_cfg, round_no), prefixes,
                             review=review_hook(tokenizer, cfg) if more else None)
            for i, t in zip(revise, redone):
                final[i] = t
        pending = revise
    return final, decisions


def _reseeded(cfg: RolloutConfig, round_no: int) -> RolloutConfig:
    """Another sampling seed per revision round, so a regenerated suffix is not the original again."""
    import dataclasses

    return dataclasses.replace(cfg, seed=(cfg.seed * 31 + 17 * (round_no + 1)) % 2 ** 31)
