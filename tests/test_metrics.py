"""captcha_edge.metrics, the one home of edit distance, greedy texts, accuracy, CER and confusions,
and the old names in train/ctc.py and export/verify.py that now lead to it."""
from __future__ import annotations

import functools

import numpy as np
import pytest
from captcha_edge import metrics
from captcha_edge.export import verify
from captcha_edge.train import ctc
from hypothesis import given, settings
from hypothesis import strategies as st


def levenshtein_oracle(a: str, b: str) -> int:
    """The textbook recursion, memoised: independent of the table walk under test."""

    @functools.lru_cache(maxsize=None)
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


@settings(max_examples=300, deadline=None)
@given(st.text("abcx", max_size=8), st.text("abcy", max_size=8))
def test_edit_ops_are_a_minimal_edit_script(truth: str, pred: str) -> None:
    dist, ops = metrics.edit_ops(truth, pred)
    assert dist == levenshtein_oracle(truth, pred) == metrics.edit_distance(truth, pred)
    assert len(ops) == dist
    deleted = sum(1 for t, p in ops if p == "")
    inserted = sum(1 for t, p in ops if t == "")
    assert all(t != p for t, p in ops)
    assert len(truth) - deleted + inserted == len(pred)


def test_edit_ops_name_the_characters() -> None:
    assert metrics.edit_ops("abcde", "abxde") == (1, [("c", "x")])
    assert metrics.edit_ops("abc", "ac") == (1, [("b", "")])
    assert metrics.edit_ops("ac", "abc") == (1, [("", "b")])
    assert metrics.edit_ops("", "") == (0, [])


def _onehot(paths: list[list[int]], classes: int) -> np.ndarray:
    out = np.full((len(paths), len(paths[0]), classes), 0.01, np.float32)
    for n, path in enumerate(paths):
        out[n, np.arange(len(path)), path] = 0.9
    return out


def test_greedy_texts_merge_repeats_and_drop_the_blank() -> None:
    probs = _onehot([[0, 0, 2, 0, 1, 1, 2], [2, 2, 2, 2, 2, 2, 2]], 3)
    assert metrics.greedy_texts(probs, "ab") == ["aab", ""]
    assert metrics.greedy_texts(probs[:, :, [2, 0, 1]], "ab", blank=0) == ["aab", ""]
    with pytest.raises(ValueError, match=r"probs must be \(N, T, 3\)"):
        metrics.greedy_texts(probs[0], "ab")


def test_score_and_tally() -> None:
    assert metrics.score(["abcd", "xyz"], ["abcd", "xy"]) == {"seq_acc": 0.5, "cer": 1 / 7}
    assert metrics.score([], []) == {"seq_acc": 0.0, "cer": 0.0}
    with pytest.raises(ValueError, match="same length"):
        metrics.score(["a"], [])
    tally = metrics.Tally()
    tally.add_all(["mn", "mm", "ab"], ["nn", "nm", "ab"])
    assert (tally.sequences, tally.correct, tally.edits, tally.chars) == (3, 1, 2, 6)
    assert metrics.confusions(["mn", "mm", "ab"], ["nn", "nm", "ab"]) == [(("m", "n"), 2)]


def test_old_names_lead_to_the_metrics_module() -> None:
    probs = _onehot([[0, 2, 0, 1]], 3)
    assert ctc.greedy_decode(probs, "ab") == metrics.greedy_texts(probs, "ab") == ["aab"]
    assert ctc.edit_ops is metrics.edit_ops and ctc.score is metrics.score
    diverged = np.full((1, 4, 3), np.nan, np.float32)
    assert ctc.greedy_decode(diverged, "ab") == ["a"]  # all-zero frames: first class, merged
    assert ctc.confusions(["mn", "mm"], ["nn", "nm"]) == [{"truth": "m", "pred": "n", "count": 2}]
    assert verify.edit_distance is metrics.edit_distance
    assert verify.greedy(np.array([0, 0, 2, 0, 1]), "ab", 2) == "aab"
    assert verify.scores(probs, ["aab"], "ab", 2) == (1.0, 0.0)
    assert verify.scores(probs, ["ab"], "ab", -1) == (0.0, 0.5)
