"""SQuAD-style answer metrics (searchr2.metrics): EM, F1, cover-EM and their guards."""
import pytest

from searchr2.metrics import cover_exact_match, exact_match, f1_score, normalize_answer


@pytest.mark.parametrize("text, expected", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  a   Tale of  an Apple  ", "tale of apple"),
    ("Theater", "theater"),                    # articles only as whole words
    ("U.S.A.", "usa"),
    ("rock-and-roll", "rockandroll"),          # ASCII punctuation is removed, not turned into spaces
    ("Café Zoë", "café zoë"),                  # accents are letters (SQuAD does not strip them)
    ("l’été — été", "l’été — été"),            # non-ASCII punctuation is kept, like SQuAD
    ("\tNew\nYork ", "new york"),
    ("", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_aliases_punctuation_and_articles():
    golds = ["Orvane Bay", "the Bay of Orvane"]
    assert exact_match("orvane bay.", golds) == 1.0
    assert exact_match("Bay of Orvane", golds) == 1.0
    assert exact_match("An Orvane Bay", golds) == 1.0
    assert exact_match("Orvane", golds) == 0.0
    assert exact_match("Cafe", ["Café"]) == 0.0          # documented: accents are kept
    assert exact_match("CAFÉ", ["café"]) == 1.0


@pytest.mark.parametrize("pred", [None, "", "   \n"])
def test_empty_predictions_score_zero(pred):
    for metric in (exact_match, f1_score, cover_exact_match):
        assert metric(pred, ["x"]) == 0.0


def test_blank_prediction_never_matches_a_gold_that_normalises_to_nothing():
    assert exact_match("  ", ["The"]) == 0.0 and f1_score(" ", ["a"]) == 0.0
    assert exact_match("an", ["The"]) == 1.0            # both normalise to "": SQuAD counts it as equal


def test_gold_answers_must_be_a_list_of_strings():
    for metric in (exact_match, f1_score, cover_exact_match):
        with pytest.raises(TypeError, match="list of strings"):
            metric("paris", "paris")
        with pytest.raises(TypeError, match="must be a str"):
            metric("paris", ["paris", 3])
        with pytest.raises(ValueError, match="empty"):
            metric("paris", [])
        with pytest.raises(TypeError, match="prediction"):
            metric(42, ["paris"])


def test_f1_is_token_overlap_max_over_golds():
    assert f1_score("Mira Tesk", ["Mira Tesk"]) == 1.0
    # pred {mira, jane, tesk} vs gold {mira, tesk}: p=2/3 r=1 -> f1=0.8
    assert f1_score("Mira Jane Tesk", ["Mira Tesk"]) == pytest.approx(0.8)
    assert f1_score("Mira Jane Tesk", ["Kethra", "Mira Tesk"]) == pytest.approx(0.8)
    assert f1_score("the", ["Kethra"]) == 0.0
    # repeated tokens count once per occurrence (Counter intersection)
    assert f1_score("tesk tesk", ["tesk"]) == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_cover_exact_match_needs_whole_tokens():
    assert cover_exact_match("It was founded in Orvane Bay, 1901.", ["orvane bay"]) == 1.0
    assert cover_exact_match("Orvane Bayside", ["Orvane Bay"]) == 0.0
    assert cover_exact_match("Bay Orvane", ["Orvane Bay"]) == 0.0     # order matters
    assert cover_exact_match("Mira", ["Mira Tesk"]) == 0.0             # the gold must be inside the prediction
    assert cover_exact_match("anything", ["The"]) == 0.0               # empty gold never covers
    assert cover_exact_match("anything at all", ["The", "at"]) == 1.0
