"""Batched multi-turn rollouts of the search agent, with token-level loss masks (Search-R1's protocol;
docs/method.md#agent-protocol).

One call to :func:`rollout` plays many questions at once. Each round:

1. every live trajectory is extended by one assistant turn: all of them are generated together,
   left-padded, in batches of ``batch_size``, with Hugging Face ``generate`` and a per-row stopping
   criterion (a row stops at its first ``</search>`` / ``</answer>``, at EOS, or at its own token
   limit; the other rows go on);
2. the queries of all rows that searched go to the retriever as ONE batch call;
3. each row gets its tool output appended: the retrieved documents in ``<information>`` tags, or
   a corrective message after a turn that neither searched nor answered.

After ``max_turns`` searchable turns the model is told to answer, and gets one last turn in which
only ``</answer>`` (or EOS) stops it; a search written there is not executed.

Why token by token. Training needs to know exactly which tokens the model produced: losses are
masked to them (retrieved text is never trained on). Decoding a trajectory to text and tokenising it
again does not give back the same ids (merges across the boundary between generated text and an
observation differ), which silently misaligns the mask. So here the trajectory is only ever
extended by appending ids: the ids the model generated, as generated (mask 1), and the ids of the
environment's text, tokenised on its own (mask 0). The ids a trainer sees are the ids the model
was conditioned on during the rollout.

How a stop is detected. Tokenizers differ: the tiny smoke tokenizer has each tag as one token,
SmolLM2's splits ``</search>`` into ``</`` ``search`` ``>`` (or `` </`` … when a space precedes), and a
model may spell a tag through other merges. Matching token ids would need every spelling, so the
stopping criterion decodes the last few generated tokens of each row (a window a little longer than
the longest stop string) after every step and looks for the stop strings in that text. The turn
ends with the token that completes the tag; if that token also carries a few characters after the
tag, they stay (the ids are kept exactly as generated).

Turns reuse the KV cache. A batch keeps its keys and values from one round to the next, so a new
turn feeds the model only what was appended since (the tool output), not the whole context again;
on CPU the repeated prefill was most of the time. The cache grows in place
(:mod:`searchr2.kv_cache`): Hugging Face's default copies it whole at every decoded token.
``reuse_cache=False`` re-encodes every turn from
scratch (less memory; the batches are then regrouped by length each round). Greedy results are the
same either way (a test checks it).

Shared starts are fed once. Every prompt begins with the same instructions, and the ``group_size``
rollouts of a GRPO question share their whole prompt. With ``share_prefix`` a batch's first round
feeds the ids all its rows begin with once, as a batch of one, copies their keys and values to every
row, and then feeds each row only its own remainder (:func:`_shared_prefix`). Same tokens, up to
float rounding (a test checks the scores).

Scoring a review from the cache. With ``review`` given (the Meta-Refiner's ``inline`` layout, see
:func:`searchr2.refiner.review_hook`), each trajectory, once finished, gets one more block fed on
top of its cached keys and values: a short review request. The next-token distribution after it,
restricted to the candidate answer tokens, is stored as ``review_probs``; the refiner reads its
decision there instead of re-encoding the whole trajectory. The rows are copied out of the batch's
cache for this (the batch goes on unchanged). Without a cache (``reuse_cache=False``) nothing is
scored here and the refiner encodes the trajectory itself.

Another back-end. ``model`` may also be a generation engine of :mod:`searchr2.engine` (vLLM,
``rollout.engine: vllm``): each round then sends every live trajectory's ids as one request, seeded by
the trajectory, and the engine's own paged cache and prefix caching replace the batches, the cache
reuse and the shared starts above; the review is left to the refiner.

Retrieval runs in one persistent worker thread (so a JVM-backed retriever such as pyserini attaches
that thread once), with a timeout, retries with exponential backoff, and a clear
:class:`RetrievalError` at the end. A hung call is abandoned, never waited for.
"""
from __future__ import annotations

import contextlib
import copy
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from transformers import StoppingCriteria

from searchr2.engine import ENGINES, VLLMConfig
from searchr2.generation import by_length, eos_ids, eval_mode, generation_config, left_pad, pad_id
from searchr2.kv_cache import growing_cache
from searchr2.params import check_types
from searchr2.protocol import (ANSWER_CLOSE, CORRECTION_MESSAGE, FINAL_STOPS, FINAL_TURN_MESSAGE, SEARCH_CLOSE,
                               TURN_STOPS, build_prompt_ids, extract_answer, extract_search, normalize_question,
                               observation_text)

STOP_REASONS = ("answer", "turn_budget", "context_cap")


class RetrievalError(RuntimeError):
    """The retriever failed (raised, hung, or answered malformed results) after all retries."""


@dataclass(frozen=True)
class RolloutConfig:
    """How trajectories of the multi-turn search agent are generated (the ``rollout`` params section;
    ``docs/method.md``, "Agent protocol"). Token counts are in tokens of the policy's tokenizer."""

    max_turns: int = 4                 # assistant turns that may search; then one final answer-only turn. 0: no
                                       # search at all, the prompt offers none and the one turn answers (the
                                       # R1-base rung: `-S rollout.max_turns=0 -S refiner.enabled=false
                                       # -S reward.process=false`; it applies to every evaluated agent too)
    max_new_tokens: int = 64           # generation limit of one assistant turn, in tokens
    max_obs_tokens: int = 400          # token budget of the documents in one <information> block (Search-R1: 500)
    max_context_tokens: int = 4096     # a trajectory (prompt included) never grows past this; reaching it stops it
    top_k: int = 3                     # documents retrieved per search (Search-R1 found 3 better than 1 or 5); also
                                       # the k of the rag baseline
    do_sample: bool = True             # True: sampling (RL rollouts); False: greedy decoding (the evaluate stage and
                                       # validation force it)
    temperature: float = 1.0           # sampling temperature (used only when do_sample)
    top_p: float = 1.0                 # nucleus sampling mass, 1.0 = off (used only when do_sample)
    batch_size: int = 64               # trajectories generated together in one generate call (a decoding step of
                                       # SmolLM2 on 2 cores: 111 ms for 16 rows, 276 ms for 64; docs/measurements.md)
    reuse_cache: bool = True           # keep each batch's KV cache between turns, so a turn prefills only the
                                       # newly appended tokens (memory: KV of all live trajectories at once)
    share_prefix: bool = True          # a batch's first prefill computes the tokens its rows share at the start
                                       # (the instructions; a GRPO group's whole prompt) once and copies their
                                       # keys and values to every row; same results up to float rounding
    seed: int = 0                      # seeds the sampler; same inputs + seed give identical trajectories
    retries: int = 2                   # extra attempts after a failed or timed-out retrieval call
    retry_backoff_s: float = 0.5       # seconds before the first retry, doubled before each next one
    search_timeout_s: float = 30.0     # seconds one retrieval call may take before it is abandoned (never hangs)
    engine: str = "hf"                 # what generates the turns (searchr2.engine): hf (Hugging Face generate, the
                                       # default) | vllm (vLLM in the same process: paged KV cache, prefix caching;
                                       # the GPU choice, docs/scale-out.md). reuse_cache, share_prefix and
                                       # batch_size's batching are the hf engine's; vLLM batches and caches itself
    vllm: VLLMConfig = field(default_factory=VLLMConfig)   # how the vllm engine starts (searchr2.engine.VLLMConfig)

    def __post_init__(self):
        check_types(self, "rollout config: ")

        def need(cond: bool, what: str):
            if not cond:
                raise ValueError(f"rollout config: {what}")

        need(self.max_turns >= 0, f"max_turns must be >= 0, got {self.max_turns}")
        for name in ("max_new_tokens", "max_obs_tokens", "max_context_tokens", "top_k", "batch_size"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(self.retries >= 0, f"retries must be >= 0, got {self.retries}")
        need(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        need(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        need(self.retry_backoff_s >= 0, f"retry_backoff_s must be >= 0, got {self.retry_backoff_s}")
        need(self.search_timeout_s > 0, f"search_timeout_s must be > 0, got {self.search_timeout_s}")
        need(self.engine in ENGINES, f"engine must be one of {ENGINES}, got {self.engine!r}")


@dataclass
class Trajectory:
    """One question's rollout: token ids with their loss mask, and what happened along the way.

    ``steps`` lists the token spans after the prompt in order, as absolute indices into
    ``token_ids`` (``token_ids[start:end]``): ``{"kind": "assistant", "start", "end", "action"}`` for a
    generated turn (``action`` is ``"search"``, ``"answer"`` or ``"invalid"``; ``"search"`` in the final
    turn is not executed, so it counts as ``"invalid"`` there) and ``{"kind": "tool", "start", "end",
    "search"}`` for the text the environment appended after it (``search`` indexes ``searches`` and
    ``documents`` when the text carries retrieved documents, else None). Every assistant step but
    possibly the last is followed by exactly one tool step.
    """

    question: str
    token_ids: list[int]                 # prompt + everything after it
    loss_mask: list[int]                 # 1 exactly on tokens the model generated; 0 on prompt and tool text
    prompt_len: int                      # number of prompt tokens at the start of token_ids
    steps: list[dict] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)            # executed queries, in order
    documents: list[list[dict]] = field(default_factory=list)    # retrieved documents, one list per search
    answer: str | None = None            # last complete <answer> of the generated text
    turns: int = 0                       # assistant turns generated (the final answer-only turn included)
    finished: bool = False               # True once the rollout has ended it; False for a prefix to continue
    stop_reason: str = ""                # "answer" | "turn_budget" | "context_cap" ("" while unfinished)
    review_probs: list[float] | None = None   # the refiner's P(answer = 0..turns) when the rollout scored it

    def response_text(self, tokenizer) -> str:
        """Everything after the prompt (generated turns and tool text), decoded as one string."""
        return tokenizer.decode(self.token_ids[self.prompt_len:], skip_special_tokens=False)

    def generated_text(self, tokenizer) -> str:
        """Only the model's own turns, decoded and concatenated (what answer extraction reads)."""
        return "".join(tokenizer.decode(self.token_ids[s["start"]:s["end"]], skip_special_tokens=False)
                       for s in self.steps if s["kind"] == "assistant")

    def truncate(self, n_turns: int) -> "Trajectory":
        """A prefix keeping the first ``n_turns`` assistant turns and the tool output each triggered.

        The kept token ids and mask are identical to this trajectory's; the result is unfinished,
        ready to be continued by :func:`rollout` (the refiner's cut-and-regenerate keeps steps
        ``1..j-1``, i.e. ``truncate(j - 1)``).
        """
        if not isinstance(n_turns, int) or not 0 <= n_turns <= self.turns:
            raise ValueError(f"n_turns must be an int in 0..{self.turns}, got {n_turns!r}")
        kept: list[dict] = []
        seen = 0
        for step in self.steps:
            if step["kind"] == "assistant":
                if seen == n_turns:
                    break
                seen += 1
            kept.append(dict(step))
        end = kept[-1]["end"] if kept else self.prompt_len
        n_search = 1 + max((s["search"] for s in kept if s["kind"] == "tool" and s["search"] is not None), default=-1)
        return Trajectory(question=self.question, token_ids=list(self.token_ids[:end]),
                          loss_mask=list(self.loss_mask[:end]), prompt_len=self.prompt_len, steps=kept,
                          searches=list(self.searches[:n_search]), documents=copy.deepcopy(self.documents[:n_search]),
                          answer=None, turns=n_turns, finished=False, stop_reason="")

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (for jsonl outputs)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> "Trajectory":
        return cls(**record)

    # ---- building (the engine, and scripted teachers that must produce the same layout) ---------

    def add_turn(self, ids: Sequence[int], action: str) -> None:
        """Append one assistant turn: ``ids`` as written by the model (loss mask 1)."""
        self._append(ids, 1, {"kind": "assistant", "action": action})
        self.turns += 1

    def add_tool_output(self, ids: Sequence[int], query: str | None = None, docs: list[dict] | None = None) -> None:
        """Append the environment's reply to the last turn (loss mask 0); a search's query and documents are recorded."""
        search_index = None
        if query is not None:
            search_index = len(self.searches)
            self.searches.append(query)
            self.documents.append(docs)
        self._append(ids, 0, {"kind": "tool", "search": search_index})

    def _append(self, ids: Sequence[int], mask: int, step: dict) -> None:
        start = len(self.token_ids)
        self.token_ids.extend(int(i) for i in ids)
        self.loss_mask.extend([mask] * len(ids))
        self.steps.append({**step, "start": start, "end": len(self.token_ids)})


# ----------------------------------------------------------------------------------- retrieval

class _Worker:
    """One daemon thread that runs retrieval calls, so a JVM (pyserini) attaches to one thread once.

    Daemon, so a call that never returns cannot keep the interpreter from exiting. When a call
    times out, the worker is retired (it finishes its hung call, if ever, then exits) and the next
    call gets a fresh one.
    """

    def __init__(self):
        self.jobs: queue.Queue = queue.Queue()
        self.retired = False
        self.thread = threading.Thread(target=self._loop, name="searchr2-retrieval", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.retired:
            fn, box, done = self.jobs.get()
            try:
                box["result"] = fn()
            except BaseException as e:  # handed to the caller's thread
                box["error"] = e
            finally:
                done.set()

    def call(self, fn: Callable, timeout: float):
        box: dict = {}
        done = threading.Event()
        self.jobs.put((fn, box, done))
        if not done.wait(timeout):
            self.retired = True
            raise TimeoutError(f"no reply within {timeout:g} s (call abandoned)")
        if "error" in box:
            raise box["error"]
        return box["result"]


_worker: _Worker | None = None
_worker_lock = threading.Lock()


def _call_in_worker(fn: Callable, timeout: float):
    global _worker
    with _worker_lock:
        if _worker is None or _worker.retired:
            _worker = _Worker()
        worker = _worker
    return worker.call(fn, timeout)


def _check_results(results, n: int) -> list[list[dict]]:
    if not isinstance(results, (list, tuple)) or len(results) != n:
        got = f"{type(results).__name__} of length {len(results)}" if hasattr(results, "__len__") else repr(results)
        raise RetrievalError(f"retriever.search returned {got} for {n} queries; expected one list per query")
    for i, docs in enumerate(results):
        if not isinstance(docs, (list, tuple)) or not all(isinstance(d, dict) for d in docs):
            raise RetrievalError(f"retriever.search result {i} is not a list of dicts: {docs!r:.200}")
    return [list(docs) for docs in results]


def search_batch(retriever, queries: list[str], k: int, cfg: RolloutConfig) -> list[list[dict]]:
    """``retriever.search(queries, k)`` as one call, with timeout, retries and backoff.

    A call that raises or exceeds ``cfg.search_timeout_s`` counts as a failure; after
    ``1 + cfg.retries`` failures a :class:`RetrievalError` names the batch size and the last error.
    At most ``k`` documents per query are kept.
    """
    queries = list(queries)
    if not queries:
        return []
    attempts = 1 + cfg.retries
    last: BaseException | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(cfg.retry_backoff_s * 2 ** (attempt - 1))
        try:
            results = _call_in_worker(lambda: retriever.search(list(queries), k), cfg.search_timeout_s)
        except Exception as e:
            last = e
            continue
        return [docs[:k] for docs in _check_results(results, len(queries))]
    raise RetrievalError(f"retrieval failed for a batch of {len(queries)} queries after {attempts} attempt(s); "
                         f"last error: {type(last).__name__}: {last}") from last


# ---------------------------------------------------------------------------------- generation

class _TurnStop(StoppingCriteria):
    """Per-row stop: a stop string in the row's newly generated text, an EOS id, or the row's limit.

    Records for each row how many new tokens it had when it first stopped (``done_at``): rows that
    stopped early are padded by ``generate`` afterwards, and the pad id may equal the EOS id, so the
    padding cannot be told apart from real tokens afterwards without this record.
    """

    def __init__(self, tokenizer, start: int, stops: list[tuple[str, ...]], limits: list[int], eos_ids: set[int]):
        self.tokenizer, self.start, self.stops, self.limits, self.eos_ids = tokenizer, start, stops, limits, eos_ids
        longest = max((len(s) for row in stops for s in row), default=1)
        self.window = longest + 2  # every token decodes to >= 1 character (or byte) of an ASCII tag
        self.done_at: list[int | None] = [None] * len(stops)

    def __call__(self, input_ids, scores=None, **kwargs):
        import torch

        n_new = input_ids.shape[1] - self.start
        last = input_ids[:, -1].tolist()
        for r, done in enumerate(self.done_at):
            if done is not None:
                continue
            hit = last[r] in self.eos_ids or n_new >= self.limits[r]
            if not hit and self.stops[r]:
                tail = input_ids[r, max(self.start, input_ids.shape[1] - self.window):].tolist()
                text = self.tokenizer.decode(tail, skip_special_tokens=False)
                hit = any(s in text for s in self.stops[r])
            if hit:
                self.done_at[r] = n_new
        return torch.tensor([d is not None for d in self.done_at], dtype=torch.bool, device=input_ids.device)


def _run_generate(model, tokenizer, input_ids, attention, cache, limits: list[int], stops: list[tuple[str, ...]],
                  cfg: RolloutConfig, seed: int):
    """One ``generate`` call on a left-padded batch; returns (each row's new ids cut at its stop, output).

    ``cache`` holds the keys and values of all but the last columns of ``input_ids`` (or is None);
    ``generate`` then feeds only the columns the cache does not cover.
    """
    import torch
    from transformers import StoppingCriteriaList

    eos = eos_ids(model, tokenizer)
    width = input_ids.shape[1]
    device = getattr(model, "device", torch.device("cpu"))
    stopper = _TurnStop(tokenizer, width, stops, limits, eos)
    # Sampling is set completely here (top_k=0: off) so a model's own generation_config defaults
    # (e.g. top_k=50) cannot silently change the policy the trainer assumes.
    sampling = dict(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=0) if cfg.do_sample else {
        "do_sample": False}
    gen_cfg = generation_config(tokenizer, eos, max(limits), return_dict_in_generate=True, use_cache=True,
                                **sampling)
    cuda = [device.index or 0] if getattr(device, "type", "cpu") == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.inference_mode():
        torch.manual_seed(seed)
        # synced_gpus off: a process never waits on another's generation length (under ZeRO-3, which turns it
        # on by default, the trainers gather the whole weights before generating: searchr2.distributed)
        out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                             past_key_values=cache, generation_config=gen_cfg,
                             stopping_criteria=StoppingCriteriaList([stopper]), synced_gpus=False)
    sequences = out.sequences.cpu()
    result = []
    for r, row in enumerate(sequences[:, width:].tolist()):
        n = stopper.done_at[r] if stopper.done_at[r] is not None else len(row)
        result.append(row[:min(n, limits[r])])
    return result, sequences, out.past_key_values


class _Group:
    """Trajectories generated together, one row each, in every round they are alive.

    With ``reuse_cache`` a group lives for the whole rollout and keeps what it has fed the model
    (``ids``/``mask``, left-padded) and the model's KV cache between rounds, so a round feeds only
    the tokens appended since the last one (the tool output) instead of the whole context again.
    Rows differ in how much they generated and got appended, so the running sequence has masked
    holes: the padding left of each row's new block and the tokens generated after a row's stop.
    Position ids come from the attention mask (cumulative count of real tokens), so every real token
    sits at the position it has in the trajectory and the result equals a fresh forward pass.
    """

    def __init__(self, members: list[int]):
        self.members = members                 # trajectory indices, in row order
        self.ids = self.mask = self.cache = None
        self.synced: dict[int, int] = {}       # trajectory index -> how many of its tokens `ids` holds

    def step(self, model, tokenizer, trajs: list["Trajectory"], live: set[int], limits: dict[int, int],
             stops: dict[int, tuple[str, ...]], cfg: RolloutConfig, seed: int) -> dict[int, list[int]]:
        import torch

        keep = [k for k, i in enumerate(self.members) if i in live]
        if self.ids is not None and len(keep) < len(self.members):
            index = torch.tensor(keep, dtype=torch.long)
            self.ids, self.mask = self.ids[index], self.mask[index]
            self.cache.batch_select_indices(index.to(getattr(model, "device", "cpu")))
        self.members = [self.members[k] for k in keep]
        if not self.members:
            return {}
        tails = [trajs[i].token_ids[self.synced.get(i, 0):] for i in self.members]
        if self.ids is None and cfg.share_prefix:
            self.ids, self.mask, self.cache, tails = _shared_prefix(model, tails)
        if self.cache is None:
            self.cache = growing_cache(model.config)     # grows in place (searchr2.kv_cache)
        block, block_mask = left_pad(tails, pad_id(tokenizer))
        ids = block if self.ids is None else torch.cat([self.ids, block], dim=1)
        mask = block_mask if self.mask is None else torch.cat([self.mask, block_mask], dim=1)
        new, sequences, cache = _run_generate(model, tokenizer, ids, mask, self.cache,
                                              [limits[i] for i in self.members], [stops[i] for i in self.members],
                                              cfg, seed)
        if cfg.reuse_cache:
            gen_mask = torch.zeros((len(new), sequences.shape[1] - ids.shape[1]), dtype=torch.long)
            for r, n in enumerate(new):
                gen_mask[r, :len(n)] = 1
            self.ids, self.mask, self.cache = sequences, torch.cat([mask, gen_mask], dim=1), cache
            for i, n in zip(self.members, new):
                self.synced[i] = len(trajs[i].token_ids) + len(n)
        return dict(zip(self.members, new))

    def review(self, model, tokenizer, trajs: list["Trajectory"], rows: list[int], review: Callable) -> None:
        """Fill ``review_probs`` of the finished trajectories ``rows`` (members of this group) from the cache.

        Each row's block is what the cache lacks of its trajectory (the last sampled token, and a tool
        output appended after the last round) plus the review suffix; the rows are copied out of the cache (:func:`_cache_rows`), fed their blocks in one
        forward pass, and the distribution over the candidate answers is read at the last position.
        """
        import torch

        if self.cache is None or not rows:
            return
        device = getattr(model, "device", torch.device("cpu"))
        keep = [self.members.index(i) for i in rows]
        asks = [review(trajs[i]) for i in rows]
        tails = [trajs[i].token_ids[self.synced.get(i, 0):] + list(suffix) for i, (suffix, _) in zip(rows, asks)]
        block, block_mask = left_pad(tails, pad_id(tokenizer))
        index = torch.tensor(keep, dtype=torch.long)
        covered = self.cache.get_seq_length()            # generate leaves its last sampled column out of the cache
        block = torch.cat([self.ids[index, covered:], block], dim=1)
        mask = torch.cat([self.mask[index], block_mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -block.shape[1]:]
        with torch.inference_mode():
            logits = model(input_ids=block.to(device), attention_mask=mask.to(device),
                           position_ids=positions.to(device), past_key_values=_cache_rows(self.cache, index.to(device)),
                           use_cache=True, logits_to_keep=1).logits[:, -1].float()
        logp = torch.log_softmax(logits, dim=-1).cpu()
        for r, (i, (_, answers)) in enumerate(zip(rows, asks)):
            trajs[i].review_probs = torch.softmax(logp[r, list(answers)], dim=0).tolist()


#: a shared start shorter than this is fed with the rows (one more forward call would cost more than it saves)
MIN_SHARED_PREFIX = 16


def common_prefix_length(rows: list[list[int]]) -> int:
    """How many ids all ``rows`` begin with, at most the shortest row's length minus one (so that every row
    keeps at least one id of its own for ``generate`` to feed)."""
    if not rows:
        return 0
    first, limit = rows[0], min(len(r) for r in rows) - 1
    n = 0
    while n < limit and all(r[n] == first[n] for r in rows):
        n += 1
    return n


def _shared_prefix(model, tails: list[list[int]]):
    """``(ids, mask, cache, rest)`` for a batch's first round when its rows begin with the same ids.

    The shared ids are fed once, as a batch of one, and their keys and values are copied to every row;
    ``ids``/``mask`` hold them for every row (what the cache covers) and ``rest`` what each row still has
    to feed. The running sequence then has a hole of padding between the shared part and a shorter row's
    own part; positions come from the attention mask, so each token sits where it sits in its trajectory
    and the result equals feeding each row whole, up to float rounding. With fewer than two rows or less
    than :data:`MIN_SHARED_PREFIX` shared ids: ``(None, None, None, tails)``.
    """
    import torch

    n = common_prefix_length(tails)
    if len(tails) < 2 or n < MIN_SHARED_PREFIX:
        return None, None, None, tails
    device = getattr(model, "device", torch.device("cpu"))
    shared = torch.tensor([tails[0][:n]], dtype=torch.long)
    cache = growing_cache(model.config)
    with torch.inference_mode():
        model(input_ids=shared.to(device), attention_mask=torch.ones_like(shared).to(device), past_key_values=cache,
              use_cache=True, logits_to_keep=1)
    cache.batch_repeat_interleave(len(tails))
    ids = shared.expand(len(tails), n).clone()
    return ids, torch.ones_like(ids), cache, [t[n:] for t in tails]


def _cache_rows(cache, index):
    """A new cache holding only rows ``index`` of ``cache``, which is left as it was.

    Dynamic cache layers select rows by rebinding their tensors (``keys = keys[index]``, a copy), so
    shallow copies of the cache and of its layers can be narrowed without touching the originals.
    """
    sub = copy.copy(cache)
    sub.layers = [copy.copy(layer) for layer in cache.layers]
    sub.batch_select_indices(index)
    return sub


# ------------------------------------------------------------------------------------ the loop

def classify_turn(text: str, final: bool) -> tuple[str, str | None]:
    """``(action, query)`` of one generated turn: "answer", "search" (with its query) or "invalid"."""
    if ANSWER_CLOSE in text and extract_answer(text) is not None:
        return "answer", None
    if not final and SEARCH_CLOSE in text:
        query = extract_search(text)
        if query:
            return "search", query
    return "invalid", None


def new_trajectory(tokenizer, question: str, search: bool = True) -> Trajectory:
    """An empty trajectory: just the agent's prompt for ``question`` (offering no search tool when
    ``search`` is false)."""
    ids = build_prompt_ids(tokenizer, question, search)
    return Trajectory(question=question, token_ids=list(ids), loss_mask=[0] * len(ids), prompt_len=len(ids))


def tool_output_ids(tokenizer, docs: list[dict] | None, turns: int, cfg: RolloutConfig) -> list[int]:
    """Token ids of what the environment appends after assistant turn number ``turns``.

    ``docs`` not None: the retrieved documents in information tags; None: the correction message
    for a turn that neither searched nor answered. After the last searchable turn
    (``turns == cfg.max_turns``) the notice that no searches are left follows.
    """
    text = CORRECTION_MESSAGE if docs is None else observation_text(docs, tokenizer, cfg.max_obs_tokens)
    ids = encode_text(tokenizer, text)
    if turns == cfg.max_turns:
        ids += encode_text(tokenizer, FINAL_TURN_MESSAGE)
    return ids


def _start(tokenizer, question: str, prefix: "Trajectory | None", cfg: RolloutConfig) -> Trajectory:
    if prefix is None:
        return new_trajectory(tokenizer, question, search=cfg.max_turns > 0)
    if not isinstance(prefix, Trajectory):
        raise TypeError(f"a prefix must be a Trajectory or None, got {type(prefix).__name__}")
    problems = []
    if prefix.question != question:
        problems.append(f"its question {prefix.question!r} is not {question!r}")
    if prefix.finished:
        problems.append("it is finished (cut it with Trajectory.truncate first)")
    if len(prefix.token_ids) != len(prefix.loss_mask):
        problems.append("token_ids and loss_mask differ in length")
    if prefix.turns > cfg.max_turns:
        problems.append(f"it already has {prefix.turns} turns, more than max_turns={cfg.max_turns}")
    if prefix.steps and prefix.steps[-1]["kind"] != "tool":
        problems.append("it ends in an assistant turn, not after the tool output")
    end = prefix.steps[-1]["end"] if prefix.steps else prefix.prompt_len
    if end != len(prefix.token_ids):
        problems.append(f"its steps end at {end} but it has {len(prefix.token_ids)} tokens")
    if problems:
        raise ValueError("cannot continue from prefix: " + "; ".join(problems))
    return copy.deepcopy(prefix)


def finish_trajectory(traj: Trajectory, reason: str, tokenizer) -> None:
    traj.finished, traj.stop_reason = True, reason
    traj.answer = extract_answer(traj.generated_text(tokenizer))


def encode_text(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def rollout(model, tokenizer, retriever, questions: list[str], cfg: RolloutConfig,
            prefixes: list[Trajectory | None] | None = None, review: Callable | None = None,
            timings: dict | None = None) -> list[Trajectory]:
    """Play every question to the end (answer, turn budget or context cap); see the module docstring.

    ``prefixes[i]``, when given, is a trajectory of ``questions[i]`` produced by this engine and cut
    at a step boundary (:meth:`Trajectory.truncate`): generation continues after it, its ids and mask
    are kept unchanged, and its turns count against ``max_turns``. The model is put in eval mode for
    the call and its previous mode restored. Raises :class:`RetrievalError` when the retriever keeps
    failing (see :func:`search_batch`); the caller's torch RNG state is left untouched.

    ``review`` (``traj -> (suffix ids, candidate answer ids)``): score each finished trajectory's
    review from the KV cache into ``review_probs`` (module docstring); it changes no trajectory.
    ``timings``, when given, gets the seconds spent on those reviews added under ``"review"``.
    """
    if isinstance(questions, str):
        raise TypeError("questions must be a list of strings, not one string")
    questions = list(questions)
    if prefixes is None:
        prefixes = [None] * len(questions)
    if len(prefixes) != len(questions):
        raise ValueError(f"got {len(prefixes)} prefixes for {len(questions)} questions")
    for q in questions:
        normalize_question(q)  # fail early on empty / non-string questions
    trajs = [_start(tokenizer, q, p, cfg) for q, p in zip(questions, prefixes)]
    engine = hasattr(model, "generate_turns")        # a back-end of searchr2.engine (vLLM) instead of a model

    with contextlib.nullcontext() if engine else eval_mode(model):
        round_no, groups = 0, None
        while True:
            live = []
            for i, t in enumerate(trajs):
                if t.finished:
                    continue
                if len(t.token_ids) >= cfg.max_context_tokens:
                    finish_trajectory(t, "context_cap", tokenizer)
                else:
                    live.append(i)
            if review is not None and groups is not None and cfg.reuse_cache:
                t0 = time.perf_counter()
                for group in groups:
                    group.review(model, tokenizer, trajs, [i for i in group.members if trajs[i].finished
                                                           and trajs[i].review_probs is None], review)
                if timings is not None:
                    timings["review"] = timings.get("review", 0.0) + time.perf_counter() - t0
            if not live:
                break
            final = {i: trajs[i].turns >= cfg.max_turns for i in live}
            limits = {i: min(cfg.max_new_tokens, cfg.max_context_tokens - len(trajs[i].token_ids)) for i in live}
            stops = {i: FINAL_STOPS if final[i] else TURN_STOPS for i in live}
            if not engine and (groups is None or not cfg.reuse_cache):
                # shortest contexts together (live is in index order), so rows of one batch need little padding
                groups = [_Group([live[k] for k in batch])
                          for batch in by_length([trajs[i].token_ids for i in live], cfg.batch_size)]
            generated: dict[int, list[int]] = {}
            if engine:   # one request per trajectory, seeded by the trajectory, not by what it is batched with
                generated = dict(zip(live, model.generate_turns(
                    [trajs[i].token_ids for i in live], [limits[i] for i in live], [stops[i] for i in live],
                    eos_ids(model, tokenizer), cfg.do_sample, cfg.temperature, cfg.top_p,
                    [(cfg.seed * 1_000_003 + round_no * 7919 + i) % 2 ** 31 for i in live])))
            for g, group in enumerate(groups or []):
                seed = (cfg.seed * 1_000_003 + round_no * 7919 + g) % 2 ** 63
                generated.update(group.step(model, tokenizer, trajs, set(live), limits, stops, cfg, seed))
            new_ids = [generated[i] for i in live]
            round_no += 1

            pending: list[tuple[int, str]] = []   # (trajectory, query) awaiting retrieval
            corrections: list[int] = []
            for i, ids in zip(live, new_ids):
                t = trajs[i]
                text = tokenizer.decode(ids, skip_special_tokens=False)
                action, query = classify_turn(text, final[i])
                t.add_turn(ids, action)
                if action == "answer":
                    finish_trajectory(t, "answer", tokenizer)
                elif final[i]:
                    finish_trajectory(t, "turn_budget", tokenizer)
                elif action == "search":
                    pending.append((i, query))
                else:
                    corrections.append(i)

            results = search_batch(retriever, [q for _, q in pending], cfg.top_k, cfg) if pending else []
            replies = [(i, query, docs) for (i, query), docs in zip(pending, results)]
            replies += [(i, None, None) for i in corrections]
            for i, query, docs in sorted(replies, key=lambda x: x[0]):
                t = trajs[i]
                ids = tool_output_ids(tokenizer, docs, t.turns, cfg)
                if len(t.token_ids) + len(ids) > cfg.max_context_tokens:
                    finish_trajectory(t, "context_cap", tokenizer)
                    continue
                t.add_tool_output(ids, query, docs)
    return trajs
