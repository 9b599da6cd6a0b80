"""The agent protocol (searchr2.protocol): prompt, tag parsing, document formatting, messages."""
import json

import pytest

from searchr2 import protocol
from searchr2.models import PROTOCOL_TAGS, train_tiny_tokenizer
from searchr2.protocol import (CORRECTION_MESSAGE, FINAL_TURN_MESSAGE, NO_DOCUMENTS, build_chat_ids, build_prompt_ids,
                               extract_answer, extract_search, format_documents, normalize_question,
                               observation_text)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    with open(path, "w") as f:
        for i in range(100):
            f.write(json.dumps({"id": str(i), "contents": f'"Place {i}"\nPlace {i} lies near Orvane Bay, café Zoë.'})
                    + "\n")
    t = train_tiny_tokenizer(path, 300)
    t.padding_side = "left"
    return t


def test_question_is_stripped_and_ends_with_a_question_mark():
    assert normalize_question("  who founded Orvane Bay \n") == "who founded Orvane Bay?"
    assert normalize_question("Who founded it?") == "Who founded it?"
    with pytest.raises(ValueError, match="empty"):
        normalize_question("   ")
    with pytest.raises(TypeError):
        normalize_question(None)


def test_prompt_uses_the_chat_template_and_explains_the_tags(tok):
    ids = build_prompt_ids(tok, " who founded Orvane Bay ")
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    assert "Question: who founded Orvane Bay?<|im_end|>" in text
    for tag in PROTOCOL_TAGS:
        assert tag in text, tag
    assert len(protocol.INSTRUCTIONS.split()) < 90          # short: every token is paid on every turn
    assert tok.decode(build_chat_ids(tok, "hello")) == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"


def test_prompt_without_chat_template_is_plain_text(tok):
    plain = tok.__class__(tokenizer_object=tok.backend_tokenizer)
    plain.add_tokens(list(PROTOCOL_TAGS))
    assert not plain.chat_template
    text = plain.decode(build_prompt_ids(plain, "who founded Orvane Bay"))
    assert text == protocol.prompt_text("who founded Orvane Bay") + "\n"
    assert "<|im_start|>" not in text


def test_the_prompt_without_search_offers_no_search_tool(tok):
    text = protocol.prompt_text("who founded Orvane Bay", search=False)
    assert protocol.SEARCH_OPEN not in text and protocol.INFO_OPEN not in text
    assert protocol.THINK_OPEN in text and protocol.ANSWER_OPEN in text and text.endswith("Question: who founded Orvane Bay?")
    assert build_prompt_ids(tok, "who founded Orvane Bay", search=False) == build_chat_ids(tok, text)
    assert build_prompt_ids(tok, "who founded Orvane Bay") != build_prompt_ids(tok, "who founded Orvane Bay", False)


def test_extract_answer_takes_the_last_complete_answer():
    assert extract_answer("<think>hm</think><answer> Mira Tesk </answer>") == "Mira Tesk"
    assert extract_answer("<answer>a</answer> then <answer>b\nc</answer><answer>unclosed") == "b\nc"
    assert extract_answer("no tags at all") is None
    assert extract_answer("<answer>never closed") is None
    assert extract_answer("") is None and extract_answer(None) is None
    assert extract_answer("<answer></answer>") == ""
    # the prompt's example answer is not model output: callers must not pass the prompt
    assert extract_answer(protocol.prompt_text("q")) == "Lake Geneva"


def test_extract_search_takes_the_last_complete_query():
    assert extract_search("<think>x</think><search> Orvane Bay founder </search>") == "Orvane Bay founder"
    assert extract_search("<search>a</search><search>b</search>") == "b"
    assert extract_search("<search>unclosed") is None
    assert extract_search("") is None


def test_environment_messages_hold_no_complete_tags():
    for message in (CORRECTION_MESSAGE, FINAL_TURN_MESSAGE, NO_DOCUMENTS):
        assert extract_answer(message) is None and extract_search(message) is None
        assert "<" not in message


def test_format_documents_one_per_line(tok):
    docs = [{"id": "1", "title": "Orvane Bay", "text": "A bay.\nIt is cold.", "score": 2.0},
            {"id": "2", "title": "Mira Tesk", "text": "A founder.", "score": 1.0}]
    assert format_documents(docs, tok, 1000) == "Doc 1(Title: Orvane Bay) A bay. It is cold.\nDoc 2(Title: Mira Tesk) A founder."
    assert format_documents([], tok, 1000) == NO_DOCUMENTS
    assert observation_text([], tok, 10) == f"\n<information>{NO_DOCUMENTS}</information>\n"
    with pytest.raises(ValueError):
        format_documents(docs, tok, 0)


def test_format_documents_truncates_at_a_token_boundary(tok):
    docs = [{"title": f"Place {i}", "text": "Place lies near café Zoë. " * 5} for i in range(5)]
    full = format_documents(docs, tok, 10_000)
    for budget in (1, 7, 13, 40, 81):
        cut = format_documents(docs, tok, budget)
        assert full.startswith(cut) and cut != full
        assert "\ufffd" not in cut
        assert len(tok(cut, add_special_tokens=False)["input_ids"]) <= budget


def test_truncation_never_splits_a_character(tok):
    # Characters the tokenizer never saw are split into byte tokens; a cut inside one must back off.
    docs = [{"title": "T", "text": "日本語の文書です"}]
    full = format_documents(docs, tok, 10_000)
    n_full = len(tok(full, add_special_tokens=False)["input_ids"])
    seen = set()
    for budget in range(1, n_full):
        cut = format_documents(docs, tok, budget)
        assert full.startswith(cut) and "\ufffd" not in cut
        seen.add(cut)
    assert len(seen) < n_full - 1        # some budgets fell inside a character and backed off
