"""Bootstrap intervals over questions (searchr2.stats): plain and paired, against closed forms."""
import numpy as np
import pytest

from searchr2.stats import (average_interval, decode_scores, encode_scores, interval_text, paired_difference,
                            questions_digest)


def test_scores_round_trip_and_bad_characters_are_named():
    assert encode_scores([1, 0, 1.0, 0.0]) == "1010"
    assert decode_scores("1010").tolist() == [1, 0, 1, 0]
    with pytest.raises(ValueError, match="0 or 1"):
        encode_scores([0.5])
    with pytest.raises(ValueError, match=r"nq.em_by_question: expected a string of 0 and 1"):
        decode_scores("10x1", "nq.em_by_question")


def test_digest_depends_on_ids_and_their_order():
    assert questions_digest(["a", "b"]) == questions_digest(["a", "b"])
    assert questions_digest(["a", "b"]) != questions_digest(["b", "a"])


def test_interval_of_one_set_matches_the_normal_approximation():
    scores = [1] * 30 + [0] * 70                      # p = 0.3, n = 100: se = 4.58 points
    lo, hi = average_interval({"nq": scores}, samples=4000, seed=0)
    half = 1.96 * 100 * (0.3 * 0.7 / 100) ** 0.5
    assert lo < 30 < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)


def test_average_over_sets_narrows_with_more_sets_and_repeats_with_the_seed():
    one = average_interval({"a": [1, 0] * 50}, 2000, 0)
    seven = average_interval({s: [1, 0] * 50 for s in "abcdefg"}, 2000, 0)
    assert (seven[1] - seven[0]) < 0.5 * (one[1] - one[0])    # ~ 1/sqrt(7) of the width
    assert average_interval({"a": [1, 0] * 50}, 2000, 0) == one
    assert average_interval({"a": [1, 0, 0] * 30}, 2000, 1) != average_interval({"a": [1, 0, 0] * 30}, 2000, 2)
    # the same sets in another dict order give the same interval
    assert average_interval({"x": [1, 1, 0], "y": [0, 0, 1, 1]}, 500, 3) == \
        average_interval({"y": [0, 0, 1, 1], "x": [1, 1, 0]}, 500, 3)


def test_a_constant_set_has_a_zero_width_interval():
    assert average_interval({"a": [1] * 20}, 100, 0) == [100.0, 100.0]


def test_paired_interval_is_narrower_than_unpaired_and_counts_discordant_questions():
    rng = np.random.default_rng(0)
    base = (rng.random((7, 100)) < 0.4).astype(int)
    better = base.copy()
    better[:, :6] = 1                                  # A gets 6 more right per set, wherever B was wrong
    a = {f"s{k}": better[k] for k in range(7)}
    b = {f"s{k}": base[k] for k in range(7)}
    d = paired_difference(a, b, 2000, 0)
    gained = int((better != base).sum())
    assert d["a_better"] == gained and d["b_better"] == 0
    assert d["diff"] == pytest.approx(100 * gained / 700, abs=0.01)
    assert 0 < d["ci95"][0] <= d["diff"] <= d["ci95"][1]          # the interval excludes 0
    lo_a, hi_a = average_interval(a, 2000, 0)
    assert d["ci95"][1] - d["ci95"][0] < 0.5 * (hi_a - lo_a)
    same = paired_difference(b, b, 500, 0)
    assert same["diff"] == 0 and same["ci95"] == [0.0, 0.0] and same["a_better"] == same["b_better"] == 0


def test_paired_refuses_different_sets_or_sizes_and_empty_input():
    with pytest.raises(ValueError, match="different sets"):
        paired_difference({"a": [1]}, {"b": [1]}, 10, 0)
    with pytest.raises(ValueError, match="set a: 2 vs 1 questions"):
        paired_difference({"a": [1, 0]}, {"a": [1]}, 10, 0)
    with pytest.raises(ValueError, match="no eval set"):
        average_interval({}, 10, 0)
    with pytest.raises(ValueError, match="set a: needs at least one"):
        average_interval({"a": []}, 10, 0)
    with pytest.raises(ValueError, match="samples must be >= 1"):
        average_interval({"a": [1]}, 0, 0)


def test_interval_text():
    assert interval_text([12.345, 20.0]) == "[12.3, 20.0]" and interval_text(None) == "–"
