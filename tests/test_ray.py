"""Scale-out: the Recognizer pickles by model bytes, and the Ray Data example reads a folder.

The pickle tests need nothing beyond the runtime. The Ray test starts a small local Ray
instance (3 logical CPUs, no dashboard) and is marked slow (Ray's start-up takes seconds);
skipped without Ray (the dev extra installs it).
"""
from __future__ import annotations

import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from captcha_edge import Recognizer
from conftest import load_file_module

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
MODEL = DATA / "tiny_int8.tflite"
GOOD = sorted((DATA / "images" / "good").iterdir())
BAD = DATA / "images" / "bad"


def test_pickle_round_trip_by_model_bytes(tmp_path: Path) -> None:
    copy = tmp_path / "m.tflite"
    shutil.copy(MODEL, copy)
    rec = Recognizer(copy, beam_width=4, allowed=None, max_length=6)
    before = [rec.recognize(p, top_k=2) for p in GOOD]
    blob = pickle.dumps(rec)
    copy.unlink()  # the copy must not need the file: the model travels as bytes
    assert len(blob) >= len(MODEL.read_bytes()) - 4096
    back = pickle.loads(blob)
    assert back.charset == rec.charset and back.input_size == rec.input_size
    assert back.metadata == rec.metadata and back.backend == rec.backend
    assert back.decode_options == rec.decode_options  # instance decoding defaults kept
    assert [back.recognize(p, top_k=2) for p in GOOD] == before
    probs = rec.infer(rec.preprocess(GOOD[0]))
    np.testing.assert_array_equal(back.infer(back.preprocess(GOOD[0])), probs)


def test_unpickled_recognizer_builds_interpreters_lazily_per_thread() -> None:
    rec = Recognizer(MODEL)
    back = pickle.loads(pickle.dumps(rec))
    assert getattr(back._local, "interpreter", None) is None  # none made by unpickling
    seen: list[object] = []

    def work() -> None:
        back.predict(GOOD[0])
        seen.append(back._local.interpreter)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(i) for i in seen}) == 3  # one interpreter per thread, as before pickling
    assert pickle.loads(pickle.dumps(back)).predict(GOOD[1]) == rec.predict(GOOD[1])


@pytest.mark.slow
def test_ray_data_example_reads_a_folder(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    example = load_file_module(ROOT / "examples" / "ray_folder.py")

    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in GOOD:
        shutil.copy(p, folder / p.name)
    shutil.copy(BAD / "text.png", folder / "zz_not_an_image.png")
    rec = Recognizer(MODEL)
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    try:
        rows = example.recognize_folder(str(folder), rec, actors=2, batch_size=4)
    finally:
        ray.shutdown()
    assert [Path(r["path"]).name for r in rows] == sorted(p.name for p in folder.iterdir())
    for row in rows[:-1]:
        want = rec.recognize(folder / Path(row["path"]).name)
        assert row["error"] is None
        assert (row["text"], row["confidence"]) == (want.text, round(want.confidence, 6))
    bad = rows[-1]
    assert bad["text"] is None and "not a readable image" in bad["error"]
