"""Recognizer on the tiny real int8/float32 fixture models (scripts/make_fixture_model.py).

Expected values are computed independently: straight from the TFLite interpreter with hand-written
quantization and a hand-written best-path decode, never from the Recognizer itself.
"""
from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from captcha_edge import ImageError, ModelFormatError, Prediction, Recognizer, metadata
from captcha_edge.preprocess import to_array
from PIL import Image

DATA = Path(__file__).resolve().parent / "data"
INT8 = DATA / "tiny_int8.tflite"
FLOAT32 = DATA / "tiny_float32.tflite"
GOOD = DATA / "images" / "good"
BAD = DATA / "images" / "bad"
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "captcha_images_v2"


def shared_images(n: int) -> list[Path]:
    if not SHARED.is_dir():
        pytest.skip(f"shared captcha images not found at {SHARED}")
    return sorted(SHARED.glob("*.png"))[:n]


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return Recognizer(INT8)


def reference_probs(model: Path, image: Path) -> np.ndarray:
    """Run the interpreter by hand: quantize, invoke on a fresh interpreter, dequantize."""
    from ai_edge_litert.interpreter import Interpreter

    flat, meta = metadata.split(model.read_bytes())
    interp = Interpreter(model_content=flat)
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    x = to_array(image, meta["preprocess"]).astype(np.float32)
    scale, zero = i["quantization"]
    if i["dtype"] != np.float32:
        x = np.clip(np.round(x / scale + zero), 0, 255)
    interp.set_tensor(i["index"], x.astype(i["dtype"])[None, :, :, None])
    interp.invoke()
    out = interp.get_tensor(o["index"])[0].astype(np.float64)
    scale, zero = o["quantization"]
    return (out - zero) * scale if o["dtype"] != np.float32 else out


def best_path(probs: np.ndarray, charset: str) -> str:
    """Argmax per frame, merge repeats, drop the blank (last class)."""
    out, prev = [], -1
    for k in probs.argmax(axis=1):
        if k != prev and k != len(charset):
            out.append(charset[k])
        prev = k
    return "".join(out)


# -- loading -------------------------------------------------------------------------------------

def test_reads_everything_from_metadata(rec: Recognizer) -> None:
    meta = metadata.read(INT8)
    assert rec.charset == meta["charset"]
    assert rec.input_size == (meta["preprocess"]["height"], meta["preprocess"]["width"])
    assert rec.time_steps == meta["time_steps"]
    assert rec.backend == "ai-edge-litert"
    info = rec.info()
    assert info["input"]["dtype"] == "uint8" and info["output"]["dtype"] == "uint8"
    assert info["tflite_size"] < info["file_size"] == INT8.stat().st_size
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in info["ops"] or "FULLY_CONNECTED" in info["ops"]


def test_model_from_bytes_equals_from_path(rec: Recognizer) -> None:
    img = GOOD / "2b4cd.png"
    from_bytes = Recognizer(INT8.read_bytes())
    np.testing.assert_array_equal(from_bytes.infer(from_bytes.preprocess(img)),
                                  rec.infer(rec.preprocess(img)))


@pytest.mark.parametrize("model", [INT8, FLOAT32], ids=["int8", "float32"])
def test_probs_match_hand_run_interpreter(model: Path) -> None:
    r = Recognizer(model)
    for img in sorted(GOOD.iterdir()) + shared_images(6):
        probs = r.infer(r.preprocess(img))
        ref = reference_probs(model, img)
        np.testing.assert_allclose(probs, ref, atol=1e-6)
        assert r.predict(img) == best_path(ref, r.charset)


def test_lstm_state_does_not_leak_between_images(rec: Recognizer) -> None:
    """TFLite keeps LSTM state in variable tensors; each image must start from zero state."""
    a, b = sorted(GOOD.iterdir())[:2]
    first = rec.infer(rec.preprocess(a))
    for other in (b, a, b):
        rec.infer(rec.preprocess(other))
    np.testing.assert_array_equal(rec.infer(rec.preprocess(a)), first)
    np.testing.assert_allclose(first, reference_probs(INT8, a), atol=1e-6)


def test_reads_real_captchas() -> None:
    """The fixture was trained briefly on the shared set: a sanity check that the chain reads."""
    files = shared_images(40)
    r = Recognizer(INT8)
    right = sum(r.predict(p) == p.stem for p in files)
    assert right >= 30, f"only {right}/40 read correctly"


# -- inputs --------------------------------------------------------------------------------------

def test_every_input_type_gives_the_same_array(rec: Recognizer) -> None:
    path = GOOD / "8ny7p.png"  # RGBA
    data = path.read_bytes()
    pil = Image.open(path)
    expected = rec.preprocess(path)
    sources: dict[str, object] = {
        "str": str(path), "bytes": data, "bytearray": bytearray(data),
        "file": io.BytesIO(data), "pil": pil, "array_rgba": np.asarray(pil),
    }
    for kind, src in sources.items():
        np.testing.assert_array_equal(rec.preprocess(src), expected, err_msg=kind)
    with open(path, "rb") as fh:
        assert rec.predict(fh) == rec.predict(path)


def test_cmyk_and_16bit_read_like_their_8bit_grey_original(rec: Recognizer) -> None:
    base = rec.preprocess(GOOD / "2b4cd.png")
    for twin in ("2b4cd_cmyk.tif", "2b4cd_16bit.png"):
        np.testing.assert_array_equal(rec.preprocess(GOOD / twin), base, err_msg=twin)


@pytest.mark.parametrize("name, problem", [
    ("empty.png", "empty file"),
    ("truncated.png", "truncated"),
    ("text.png", "not a readable image"),
    ("bomb.png", "too large"),
    ("animated.gif", "animated"),
    ("missing.png", "no such file"),
])
def test_bad_image_names_file_and_problem(rec: Recognizer, name: str, problem: str) -> None:
    with pytest.raises(ImageError, match=problem) as info:
        rec.predict(BAD / name)
    assert str(info.value).startswith(str(BAD / name))
    assert "\n" not in str(info.value)


def test_wrong_type_is_a_type_error(rec: Recognizer) -> None:
    with pytest.raises(TypeError, match="image must be"):
        rec.predict(12345)  # type: ignore[arg-type]


# -- decoding ------------------------------------------------------------------------------------

def test_recognize_details_are_consistent(rec: Recognizer) -> None:
    for img in shared_images(8):
        pred = rec.recognize(img, top_k=4, beam_width=8)
        assert isinstance(pred, Prediction)
        assert 0.0 <= pred.confidence <= 1.0
        assert len(pred.char_confidences) == len(pred.text)
        assert all(0.0 <= c <= 1.0 for c in pred.char_confidences)
        assert 1 <= len(pred.alternatives) <= 4
        assert pred.alternatives[0] == (pred.text, pred.confidence)
        confs = [c for _, c in pred.alternatives]
        assert confs == sorted(confs, reverse=True)
        assert len({t for t, _ in pred.alternatives}) == len(pred.alternatives)
        assert rec.predict(img, beam_width=8) == pred.text


def test_greedy_detail_matches_greedy_text(rec: Recognizer) -> None:
    for img in shared_images(8):
        pred = rec.recognize(img)
        assert pred.text == rec.predict(img) == best_path(reference_probs(INT8, img), rec.charset)
        assert pred.alternatives == ((pred.text, pred.confidence),)


def test_allowed_and_length_constraints_hold(rec: Recognizer) -> None:
    allowed = rec.charset[:6]
    for img in shared_images(6) or sorted(GOOD.iterdir()):
        text = rec.predict(img, allowed=allowed, min_length=3, max_length=4)
        assert set(text) <= set(allowed)
        assert 3 <= len(text) <= 4
        pred = rec.recognize(img, allowed=allowed, max_length=2, top_k=3)
        assert all(set(t) <= set(allowed) and len(t) <= 2 for t, _ in pred.alternatives)


def test_instance_defaults_apply_and_calls_override() -> None:
    r = Recognizer(INT8, allowed="23", max_length=2)
    img = shared_images(1)[0]
    assert set(r.predict(img)) <= {"2", "3"} and len(r.predict(img)) <= 2
    assert r.predict(img, allowed=r.charset, max_length=8) == \
        Recognizer(INT8).predict(img, beam_width=10)


@pytest.mark.parametrize("kwargs, match", [
    ({"beam_width": 0}, r"^beam_width must be >= 1; got 0$"),
    ({"beam_width": 10**7}, r"^beam_width must be <= MAX_BEAM_WIDTH \(1024\); got 10000000$"),
    ({"min_length": 5, "max_length": 3}, r"^max_length must be >= min_length \(5\); got 3$"),
    ({"allowed": ""}, r"^allowed is empty"),
    ({"allowed": "AZ"}, r"^allowed contains 'AZ', which the model's charset '.*' cannot emit$"),
    ({"min_length": 10**4}, r"^min_length must be <= T=\d+, .*; got 10000$"),
])
def test_bad_decoding_options(rec: Recognizer, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rec.predict(GOOD / "2b4cd.png", **kwargs)
    with pytest.raises(ValueError, match=match):  # up front, before any image is read
        rec.check_options(**kwargs)
    with pytest.raises(ValueError, match=match):  # and in the constructor, as defaults
        Recognizer(INT8, **kwargs)


def test_min_length_limit_is_the_models_time_steps(rec: Recognizer) -> None:
    T = rec.time_steps
    rec.check_options(min_length=T)  # T frames can emit T characters (no repeats)
    with pytest.raises(ValueError, match=rf"min_length must be <= T={T}, .*; got {T + 1}"):
        rec.check_options(min_length=T + 1)


def test_top_k_never_widens_an_explicit_beam(rec: Recognizer) -> None:
    img = GOOD / "2b4cd.png"
    with pytest.raises(ValueError, match=r"^top_k must be <= beam_width \(3\); got 5$"):
        rec.recognize(img, top_k=5, beam_width=3)
    with pytest.raises(ValueError, match=r"^top_k must be <= beam_width \(3\); got 5$"):
        Recognizer(INT8, beam_width=3).recognize(img, top_k=5)
    # Without an explicit width the beam is max(10, top_k) wide: 12 alternatives can come back.
    assert rec.decode_options.merged(top_k=12).width == 12
    assert rec.decode_options.merged(top_k=3).width == 10
    assert len(rec.recognize(img, top_k=12).alternatives) <= 12


def test_predict_batch_matches_predict(rec: Recognizer) -> None:
    imgs = shared_images(12) + sorted(GOOD.iterdir())
    one_by_one = [rec.predict(p) for p in imgs]
    assert rec.predict_batch(imgs) == one_by_one
    assert rec.predict_batch(imgs, workers=3) == one_by_one
    assert rec.predict_batch([]) == []
    with pytest.raises(ImageError, match="empty file"):
        rec.predict_batch(imgs[:2] + [BAD / "empty.png"], workers=2)


# -- threads -------------------------------------------------------------------------------------

def test_shared_recognizer_is_thread_safe() -> None:
    """8 threads hammer one Recognizer; every result equals the single-threaded one."""
    r = Recognizer(INT8)
    imgs = shared_images(16) + sorted(GOOD.iterdir())
    expected = {str(p): r.infer(r.preprocess(p)) for p in imgs}
    failures: list[str] = []
    interpreters = set()
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def work(k: int) -> None:
        barrier.wait()
        for rep in range(3):
            for p in imgs[k % 3:] + imgs[:k % 3]:
                got = r.infer(r.preprocess(p))
                if not np.array_equal(got, expected[str(p)]):
                    failures.append(f"thread {k}: {p.name}")
        with lock:
            interpreters.add(id(r._interpreter()))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert len(interpreters) == 8  # one interpreter per thread, none shared


# -- model errors --------------------------------------------------------------------------------

def _bad_model(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_model_errors_are_model_format_errors(tmp_path: Path) -> None:
    flat, meta = metadata.split(INT8.read_bytes())
    cases = {
        "missing.tflite": None,
        "empty.tflite": b"",
        "text.tflite": b"hello, I am not a model\n" * 10,
        "foreign.tflite": flat,  # a valid TFLite file without our metadata
        "truncated.tflite": metadata.embed(flat[: len(flat) // 2] , meta),
        "wrong_charset.tflite": metadata.embed(flat, {**meta, "charset": "abc", "blank": 3}),
        "no_preprocess.tflite": metadata.embed(flat, {k: v for k, v in meta.items()
                                                      if k != "preprocess"}),
        "wrong_size.tflite": metadata.embed(
            flat, {**meta, "preprocess": {**meta["preprocess"], "width": 64}}),
    }
    messages = {
        "missing.tflite": "cannot read model", "empty.tflite": "not a TFLite model",
        "text.tflite": "not a TFLite model", "foreign.tflite": "no captcha_edge metadata",
        "truncated.tflite": "cannot load", "wrong_charset.tflite": "charset of 3 symbols",
        "no_preprocess.tflite": "invalid captcha_edge metadata",
        "wrong_size.tflite": "does not match",
    }
    for name, data in cases.items():
        path = tmp_path / name if data is None else _bad_model(tmp_path, name, data)
        with pytest.raises(ModelFormatError, match=messages[name]) as info:
            Recognizer(path)
        assert name in str(info.value) and "\n" not in str(info.value)


def test_default_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import captcha_edge.recognizer as mod

    monkeypatch.setattr(mod, "DEFAULT_MODEL", tmp_path / "default_int8.tflite")
    with pytest.raises(ModelFormatError, match="bundled default model is missing"):
        Recognizer()
    (tmp_path / "default_int8.tflite").write_bytes(INT8.read_bytes())
    assert Recognizer().predict(GOOD / "2b4cd.png") == Recognizer(INT8).predict(GOOD / "2b4cd.png")


def test_bundled_default_model_if_present() -> None:
    from captcha_edge import DEFAULT_MODEL

    if not DEFAULT_MODEL.is_file():
        pytest.skip("no bundled default model yet (scripts/make_default_model.sh)")
    r = Recognizer()
    assert DEFAULT_MODEL.stat().st_size <= 1_000_000
    assert r.metadata["format"] == "int8"
    assert r.info()["input"]["dtype"] in ("uint8", "int8")
    assert isinstance(r.predict(GOOD / "2b4cd.png"), str)
    files = [p for p in shared_images(100) if set(p.stem) <= set(r.charset)]
    if len(files) < 50:
        pytest.skip("the default model's charset does not cover the shared images")
    right = sum(t == p.stem for t, p in zip(r.predict_batch(files, workers=2), files))
    assert right >= 0.9 * len(files), f"default model read {right}/{len(files)}"
