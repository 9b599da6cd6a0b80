"""The two non-agent baselines of the paper's Table 2: Direct inference and RAG.

Both answer in one generation, with no search during it: Direct sees only the question, RAG sees
the top-k passages retrieved for the question itself. They reuse the agent's rollout engine (a
prompt-only prefix continued for one answer-only turn, ``max_turns=0``), so batching, stopping and
answer extraction are the same code as the agent's and the numbers are comparable.
"""
from __future__ import annotations

import dataclasses

from searchr2.protocol import build_chat_ids, format_documents, normalize_question
from searchr2.rollout import RolloutConfig, Trajectory, rollout, search_batch

DIRECT_INSTRUCTIONS = (
    "Answer the question below from what you know. Write only the answer itself inside <answer> and "
    "</answer>, for example <answer>Lake Geneva</answer>."
)
RAG_INSTRUCTIONS = (
    "Answer the question below using the documents. Write only the answer itself inside <answer> and "
    "</answer>, for example <answer>Lake Geneva</answer>."
)


def _prompt_only(tokenizer, question: str, content: str) -> Trajectory:
    ids = build_chat_ids(tokenizer, content)
    return Trajectory(question=question, token_ids=ids, loss_mask=[0] * len(ids), prompt_len=len(ids))


def direct_prompt(question: str) -> str:
    return f"{DIRECT_INSTRUCTIONS}\nQuestion: {normalize_question(question)}"


def rag_prompt(question: str, documents_text: str) -> str:
    return f"{RAG_INSTRUCTIONS}\nDocuments:\n{documents_text}\nQuestion: {normalize_question(question)}"


def answer_direct(model, tokenizer, questions: list[str], cfg: RolloutConfig) -> list[Trajectory]:
    """One greedy answer per question, no retrieval."""
    prefixes = [_prompt_only(tokenizer, q, direct_prompt(q)) for q in questions]
    return rollout(model, tokenizer, None, questions, dataclasses.replace(cfg, max_turns=0), prefixes=prefixes)


def answer_rag(model, tokenizer, retriever, questions: list[str], cfg: RolloutConfig) -> list[Trajectory]:
    """Retrieve top-k for each question (one batched call), then one greedy answer per question."""
    docs = search_batch(retriever, [normalize_question(q) for q in questions], cfg.top_k, cfg)
    prefixes = []
    for q, d in zip(questions, docs):
        prefix = _prompt_only(tokenizer, q, rag_prompt(q, format_documents(d, tokenizer, cfg.max_obs_tokens)))
        prefix.searches, prefix.documents = [normalize_question(q)], [d]
        prefixes.append(prefix)
    return rollout(model, tokenizer, None, questions, dataclasses.replace(cfg, max_turns=0), prefixes=prefixes)
