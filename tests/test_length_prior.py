"""The length prior (issue 11): a model that records the label lengths it was trained on is
decoded within that range unless the caller says otherwise; older models behave as before.

The probabilities are built by hand so the expected texts are known without the Recognizer:
greedy reads 6 characters, and the best 5-character reading is found by the exact oracle below.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from captcha_edge import Recognizer, metadata
from captcha_edge.train.runinfo import RunInfo

DATA = Path(__file__).resolve().parent / "data"
INT8 = DATA / "tiny_int8.tflite"


def with_lengths(tmp_path: Path, lengths: tuple[int, int] | None) -> Path:
    """The int8 fixture with ``label_lengths`` re-embedded (the flatbuffer is unchanged)."""
    flat, meta = metadata.load(INT8.read_bytes())
    out = tmp_path / f"prior-{lengths}.tflite"
    out.write_bytes(metadata.embed(flat, dataclasses.replace(meta, label_lengths=lengths)))
    return out


def six_char_probs(charset: str, T: int) -> np.ndarray:
    """(T, C) probabilities whose best path is 6 distinct characters, the 6th one weak."""
    C = len(charset) + 1
    p = np.full((T, C), 0.01, np.float32)
    p[:, -1] = 0.6  # blank everywhere ...
    for k, t in enumerate(range(1, 12, 2)):  # ... except 6 frames, one character each
        p[t, :] = 0.01
        p[t, k] = 0.9 if k < 5 else 0.4
        p[t, -1] = 0.0 if k < 5 else 0.35
    return p / p.sum(axis=1, keepdims=True)


def best_of_length(probs: np.ndarray, charset: str, n: int) -> str:
    """Exact oracle: the n-character text with the largest CTC probability (sum over paths),
    searched over texts made of the characters that appear in the best path."""
    T, C = probs.shape
    best_path = [k for k, _ in itertools.groupby(probs.argmax(1)) if k != C - 1]
    cands = set(itertools.combinations(best_path, n))

    def ctc_prob(labels: tuple[int, ...]) -> float:
        ext = [C - 1]
        for lab in labels:
            ext += [lab, C - 1]
        a = np.zeros(len(ext))
        a[0], a[1] = probs[0, ext[0]], probs[0, ext[1]]
        for t in range(1, T):
            b = a.copy()
            b[1:] += a[:-1]
            for s in range(2, len(ext)):
                if ext[s] != C - 1 and ext[s] != ext[s - 2]:
                    b[s] += a[s - 2]
            a = b * probs[t, ext]
        return float(a[-1] + a[-2])

    best = max(cands, key=ctc_prob)
    return "".join(charset[k] for k in best)


@pytest.fixture
def prior_model(tmp_path: Path) -> Path:
    return with_lengths(tmp_path, (5, 5))


def test_model_without_label_lengths_has_no_prior() -> None:
    rec = Recognizer(INT8)
    assert rec.meta.label_lengths is None and rec.length_prior is None
    probs = six_char_probs(rec.charset, rec.time_steps)
    assert rec.decode(probs) == rec.charset[:6]  # plain greedy, as before the prior existed


def test_prior_keeps_the_text_within_the_trained_lengths(prior_model: Path) -> None:
    rec = Recognizer(prior_model)
    assert rec.length_prior == (5, 5)
    probs = six_char_probs(rec.charset, rec.time_steps)
    greedy = rec.charset[:6]
    got = rec.decode(probs)
    assert got != greedy and got == best_of_length(probs, rec.charset, 5)
    # recognize() agrees, and its alternatives keep to the prior too
    pred = rec._prediction(rec._search(probs, rec._options(top_k=3)))
    assert pred.text == got and all(len(t) == 5 for t, _ in pred.alternatives)


def test_greedy_answer_that_fits_is_kept_unchanged(prior_model: Path) -> None:
    rec = Recognizer(prior_model)
    probs = six_char_probs(rec.charset, rec.time_steps)
    probs[11] = 0.0
    probs[11, -1] = 1.0  # the weak 6th character is gone: greedy reads 5, which fits
    assert rec.decode(probs) == rec.charset[:5]


@pytest.mark.parametrize("kwargs, length", [
    ({"length_prior": False}, 6),            # turned off
])
def test_prior_can_be_turned_off(prior_model: Path, kwargs: dict, length: int) -> None:
    rec = Recognizer(prior_model, **kwargs)
    assert rec.length_prior is None
    assert rec.decode(six_char_probs(rec.charset, rec.time_steps)) == rec.charset[:length]


def test_callers_bounds_override_the_prior(prior_model: Path) -> None:
    rec = Recognizer(prior_model)
    probs = six_char_probs(rec.charset, rec.time_steps)
    assert rec.decode(probs, max_length=6) == rec.charset[:6]      # caller's max wins
    assert len(rec.decode(probs, min_length=4, max_length=4)) == 4  # both given: the prior idles
    assert len(rec.decode(probs, min_length=6)) == 6               # contradicts 5-5: caller wins
    assert Recognizer(prior_model, max_length=6).decode(probs) == rec.charset[:6]


def test_length_prior_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="length_prior"):
        Recognizer(INT8, length_prior="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [[0, 5], [6, 5], [5], "5-5", [5.0, 5]])
def test_bad_label_lengths_metadata_is_refused(bad: object) -> None:
    _, meta = metadata.load(INT8.read_bytes())
    d = meta.to_dict()
    d["label_lengths"] = bad
    with pytest.raises(ValueError, match="label_lengths"):
        metadata.ModelMeta.from_dict(d)


def test_run_info_records_both_ends() -> None:
    d = json.loads((DATA / "export_run" / "model.json").read_text())
    info = RunInfo.from_dict(d)
    assert info.label_lengths == (d["min_label_length"], d["max_label_length"])
    old = {k: v for k, v in d.items() if k != "min_label_length"}  # a run from before the prior
    assert RunInfo.from_dict(old).label_lengths is None
    with pytest.raises(ValueError, match="min_label_length"):
        RunInfo.from_dict({**d, "min_label_length": d["max_label_length"] + 1})


def test_cli_info_shows_the_prior_and_predict_accepts_no_length_prior(prior_model: Path) -> None:
    img = next((DATA / "images" / "good").glob("*.png"))
    run = [sys.executable, "-m", "captcha_edge.cli"]
    info = subprocess.run([*run, "info", "--model", str(prior_model)], capture_output=True,
                          text=True, timeout=120)
    assert info.returncode == 0 and "5-5 characters (length prior" in info.stdout
    with_prior = subprocess.run([*run, "predict", "--json", "--model", str(prior_model), str(img)],
                                capture_output=True, text=True, timeout=120)
    without = subprocess.run([*run, "predict", "--json", "--no-length-prior", "--model",
                              str(prior_model), str(img)], capture_output=True, text=True,
                             timeout=120)
    assert with_prior.returncode == 0 and without.returncode == 0, with_prior.stderr
    assert len(json.loads(with_prior.stdout)["text"]) == 5
    assert json.loads(without.stdout)["text"] == Recognizer(prior_model, length_prior=False
                                                            ).predict(img)


def test_contracts_pickle_and_the_recognizer_keeps_its_prior(prior_model: Path) -> None:
    """ModelMeta/RunInfo round-trip through pickle (a Recognizer shipped to Ray carries them)."""
    import pickle

    rec = Recognizer(prior_model)
    back = pickle.loads(pickle.dumps(rec))
    assert back.meta == rec.meta and back.length_prior == (5, 5)
    probs = six_char_probs(rec.charset, rec.time_steps)
    assert back.decode(probs) == rec.decode(probs)
    info = RunInfo.from_dict(json.loads((DATA / "export_run" / "model.json").read_text()))
    assert pickle.loads(pickle.dumps(info)) == info
