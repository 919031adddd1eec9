"""The model file and its metadata as untrusted input: ModelMeta, the size caps, hostile files.

Every hostile case is built here from the tiny fixture (no binary blobs): the metadata zip member
is written by hand (``_zip``) so that its flags, compression method and declared sizes can lie.
Each must fail with one ModelFormatError line naming the file and the problem; a fuzz checks that
nothing else ever escapes from loading.
"""
from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import threading
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from captcha_edge import ModelFormatError, Recognizer, metadata
from captcha_edge.metadata import ModelMeta
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DATA = Path(__file__).resolve().parent / "data"
INT8 = DATA / "tiny_int8.tflite"
GOOD = DATA / "images" / "good"
FLAT, META = metadata.load(INT8.read_bytes())
META_DICT = META.to_dict()


def _zip(payload: bytes, *, method: int = 8, flags: int = 0, declared: int | None = None,
         crc: int | None = None, name: str = metadata.MEMBER,
         stream: bytes | None = None) -> bytes:
    """A one-member zip archive whose header fields may lie.

    Method 8 deflates ``payload`` (other methods store it as is); ``stream`` replaces the
    member's bytes outright; ``declared`` and ``crc`` default to the truth about ``payload``.
    """
    data = payload
    if stream is not None:
        data = stream
    elif method == 8:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = c.compress(payload) + c.flush()
    size = len(payload) if declared is None else declared
    crc = zlib.crc32(payload) if crc is None else crc
    fname = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, method, 0, 0x21, crc, len(data),
                        size, len(fname), 0) + fname
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, method, 0, 0x21, crc,
                          len(data), size, len(fname), 0, 0, 0, 0, 0, 0) + fname
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central),
                      len(local) + len(data), 0)
    return local + data + central + end


def _json_member(obj: Any) -> bytes:
    """The fixture's flatbuffer with ``obj`` as its (unvalidated) metadata JSON."""
    return FLAT + _zip(json.dumps(obj).encode())


def _with(**changes: Any) -> dict[str, Any]:
    d = dict(META_DICT)
    for k, v in changes.items():
        if v is _DROP:
            d.pop(k, None)
        else:
            d[k] = v
    return d


_DROP = object()


def _one_line_error(tmp_path: Path, data: bytes, match: str, name: str = "m.tflite") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ModelFormatError, match=match) as info:
        Recognizer(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and "\n" not in msg, msg
    return msg


# -- ModelMeta: the contract --------------------------------------------------------------------

def test_round_trip_is_identity_and_fills_defaults() -> None:
    assert ModelMeta.from_dict(META.to_dict()) == META
    old = ModelMeta.from_dict({"charset": "ab", "preprocess": {"height": 16, "width": 32}})
    d = old.to_dict()
    assert d["blank"] == 2 and d["input_shape"] == [16, 32, 1] and d["stateful"] is True
    assert d["batch"] == 1 and d["metadata_version"] == metadata.METADATA_VERSION
    assert d["preprocess"]["background"] == 255 and d["output_quant"] is None


def test_is_frozen_and_read_only() -> None:
    with pytest.raises(AttributeError):
        META.charset = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        META.preprocess["width"] = 1  # type: ignore[index]


def test_unknown_keys_survive_a_round_trip() -> None:
    m = ModelMeta.from_dict({**META_DICT, "future_key": {"a": 1}})
    assert m.extra == {"future_key": {"a": 1}}
    assert m.to_dict()["future_key"] == {"a": 1}
    flat, again = metadata.load(metadata.embed(FLAT, m))
    assert flat == FLAT and again == m


def test_embed_sets_tflite_size_and_validates() -> None:
    data = metadata.embed(FLAT, {**META_DICT, "tflite_size": 999})
    assert metadata.load(data)[1].tflite_size == len(FLAT)
    with pytest.raises(ValueError, match="'batch' must be an int >= 1"):
        metadata.embed(FLAT, {**META_DICT, "batch": 0})


def test_newer_metadata_version_asks_for_an_upgrade(tmp_path: Path) -> None:
    data = _json_member(_with(metadata_version=metadata.METADATA_VERSION + 1,
                              tflite_size=len(FLAT)))
    _one_line_error(tmp_path, data, "newer than this captcha-edge reads.*upgrade")


def test_old_model_with_only_the_required_keys_loads_and_reads_the_same(tmp_path: Path) -> None:
    """A model exported before most keys existed: same answers as the full metadata."""
    minimal = {"charset": META.charset, "preprocess": dict(META.preprocess),
               "tflite_size": len(FLAT)}
    path = tmp_path / "old.tflite"
    path.write_bytes(_json_member(minimal))
    old, new = Recognizer(path), Recognizer(INT8)
    assert old.metadata["format"] is None and old.metadata["stateful"] is True
    for img in sorted(GOOD.iterdir()):
        np.testing.assert_array_equal(old.infer(old.preprocess(img)),
                                      new.infer(new.preprocess(img)))


def test_metadata_disagreeing_with_the_tensors_is_refused(tmp_path: Path) -> None:
    wrong_dtype = "float32" if META.output_dtype != "float32" else "int8"
    _one_line_error(tmp_path, metadata.embed(FLAT, _with(output_dtype=wrong_dtype)),
                    "output tensor is .* but the metadata says output_dtype")
    _one_line_error(tmp_path, metadata.embed(FLAT, _with(time_steps=META.time_steps + 1)),
                    "frames but the metadata says time_steps")


# -- every metadata failure is one ModelFormatError line ----------------------------------------

@pytest.mark.parametrize("obj, match", [
    ([1, 2], "must be a JSON object; got list"),
    (None, "must be a JSON object; got NoneType"),
    ("charset", "must be a JSON object; got str"),
    ({"preprocess": {}}, "missing keys charset"),
    ({"charset": "ab"}, "missing keys preprocess"),
], ids=["list", "null", "string", "no-charset", "no-preprocess"])
def test_json_that_is_not_metadata(tmp_path: Path, obj: Any, match: str) -> None:
    _one_line_error(tmp_path, _json_member(obj), match)


def test_blank_1e999_is_a_format_error_not_an_overflow(tmp_path: Path) -> None:
    payload = json.dumps(META_DICT).replace('"blank": 19', '"blank": 1e999').encode()
    assert b"1e999" in payload
    _one_line_error(tmp_path, FLAT + _zip(payload), "'blank' must be the last class.*got inf")


@pytest.mark.parametrize("payload, match", [
    (b"[" * 100_000, "nested too deeply"),
    (b'{"charset": NaN}', "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"charset": "ab", ', "not valid JSON"),
], ids=["nested", "nan", "not-utf8", "truncated-json"])
def test_unparsable_json(tmp_path: Path, payload: bytes, match: str) -> None:
    _one_line_error(tmp_path, FLAT + _zip(payload), match)


def test_encrypted_member(tmp_path: Path) -> None:
    data = FLAT + _zip(json.dumps(META_DICT).encode(), flags=0x1)
    _one_line_error(tmp_path, data, "metadata member is encrypted")


@pytest.mark.parametrize("method", [99, 12, 14])
def test_unsupported_compression_method(tmp_path: Path, method: int) -> None:
    data = FLAT + _zip(json.dumps(META_DICT).encode(), method=method)
    _one_line_error(tmp_path, data, f"compression method {method}")


def test_bad_crc_and_missing_member(tmp_path: Path) -> None:
    payload = json.dumps(META_DICT).encode()
    _one_line_error(tmp_path, FLAT + _zip(payload, crc=1), "cannot be read .*CRC")
    _one_line_error(tmp_path, FLAT + _zip(payload, name="other.json"),
                    "has no captcha_edge metadata")


# Each key with a value of the wrong type or range: the message names the key.
WRONG = {
    "charset": [5, "", "aa", ["a"]],
    "blank": [1e999, "19", 3, True, None],
    "preprocess": ["L", None, {"height": "32"}, {"resize": "zoom"}, {"width": 4},
                   {"resample": ["x"]}, {"bogus": 1}],
    "input_shape": [[32, 97, 1], "32x96", [32, 96]],
    "time_steps": [0, "24", 2.5],
    "format": ["int4", 8],
    "input_dtype": ["uint7", 1],
    "output_dtype": [["int8"]],
    "input_quant": [[0, 0], [1.0], "1,0", [float("inf"), 0], [1.0, 0.5]],
    "output_quant": [[-1.0, 0], [1.0, 2 ** 40]],
    "stateful": ["yes", 1, None],
    "batch": [0, "1", 1.0],
    "calibration": ["200", [1]],
    "accuracy": [0.9, ["x"]],
    "route": [1],
    "exported": [20260101],
    "source_run": [["runs"]],
    "package_version": [1.0],
    "metadata_version": [0, "1", None],
}


@pytest.mark.parametrize("key, value", [(k, v) for k, vs in WRONG.items() for v in vs],
                         ids=[f"{k}-{i}" for k, vs in WRONG.items() for i in range(len(vs))])
def test_wrong_value_of_any_key_names_the_key(tmp_path: Path, key: str, value: Any) -> None:
    if key == "preprocess" and isinstance(value, dict):
        value = {**META_DICT["preprocess"], **value}
    d = _with(**{key: value}, tflite_size=len(FLAT))
    raw = json.dumps(d, allow_nan=True).encode().replace(b"Infinity", b"1e999")
    msg = _one_line_error(tmp_path, FLAT + _zip(raw), "invalid captcha_edge metadata")
    assert f"'{key}" in msg or "'preprocess" in msg, msg


@pytest.mark.parametrize("bg", [None, "white", 1000, -1, 254.9, True, [255]])
def test_background_must_be_a_grey_level(tmp_path: Path, bg: Any) -> None:
    d = _with(preprocess={**META_DICT["preprocess"], "background": bg}, tflite_size=len(FLAT))
    _one_line_error(tmp_path, _json_member(d), r"'preprocess.background' must be an int grey "
                                                r"level in 0\.\.255")


@pytest.mark.parametrize("bg", [0, 128, 255])
def test_background_in_range_loads(tmp_path: Path, bg: int) -> None:
    path = tmp_path / "bg.tflite"
    path.write_bytes(metadata.embed(FLAT, _with(
        preprocess={**META_DICT["preprocess"], "background": bg})))
    assert Recognizer(path).recipe["background"] == bg


# -- size caps: zip bombs, devices, FIFOs -------------------------------------------------------

def _zero_bomb(gib: int = 1) -> bytes:
    """A raw deflate stream of ``gib`` GiB of zeros (~1 MB), built without inflating it."""
    block = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(block) + c.flush(zlib.Z_FULL_FLUSH) == again  # full flush: blocks repeat
    return first + again * (gib * 1024 - 2) + c.compress(block) + c.flush()


@pytest.fixture(scope="module")
def bomb_stream() -> bytes:
    return _zero_bomb()


@pytest.mark.parametrize("declared", [1 << 30, 1000, metadata.MAX_METADATA_BYTES],
                         ids=["declares-1GiB", "declares-1000", "declares-the-cap"])
def test_zip_bomb_fails_fast_with_little_memory(tmp_path: Path, bomb_stream: bytes,
                                                declared: int) -> None:
    """A 1.1 MB model whose metadata inflates to 1 GiB: refused, never inflated past the cap."""
    archive = _zip(b"", declared=declared, crc=0, stream=bomb_stream)
    path = tmp_path / "bomb.tflite"
    path.write_bytes(FLAT + archive)
    assert 1_000_000 < path.stat().st_size < 1_200_000
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError) as info:
            Recognizer(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    assert "declares" in msg or "cannot be read" in msg, msg
    assert peak < 5 * metadata.MAX_METADATA_BYTES + 4 * path.stat().st_size, peak


def test_model_over_the_size_cap_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.tflite"
    with path.open("wb") as f:  # sparse: no disk space used
        f.truncate(metadata.MAX_MODEL_BYTES + 1)
    with pytest.raises(ModelFormatError, match="larger than a captcha model can be"):
        metadata.read_model(path)


def _guarded(fn: Any, limit: float = 60.0) -> BaseException | None:
    """Run ``fn`` in a thread; fail the test instead of hanging when it blocks."""
    box: list[BaseException | None] = [None]

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box[0] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), "loading the model blocked"
    return box[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_without_writer_fails_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    exc = _guarded(lambda: Recognizer(fifo))
    assert isinstance(exc, ModelFormatError) and "is a FIFO" in str(exc)
    assert str(exc).startswith(str(fifo)) and "\n" not in str(exc)


@pytest.mark.parametrize("dev, kind", [("/dev/zero", "character device")])
def test_device_is_refused_unread(dev: str, kind: str) -> None:
    if not os.path.exists(dev):
        pytest.skip(f"no {dev}")
    exc = _guarded(lambda: Recognizer(dev))
    assert isinstance(exc, ModelFormatError) and f"is a {kind}" in str(exc), exc


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="is a directory, not a model file"):
        Recognizer(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_cli_info_on_hostile_models_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    bad = tmp_path / "list.tflite"
    bad.write_bytes(_json_member([1]))
    for model, text in ((fifo, "is a FIFO"), ("/dev/zero", "character device"),
                        (bad, "must be a JSON object")):
        for cmd in ("info", "predict"):
            extra = [str(GOOD / "2b4cd.png")] if cmd == "predict" else []
            proc = subprocess.run([sys.executable, "-m", "captcha_edge.cli", cmd, "--model",
                                   str(model), *extra], capture_output=True, text=True,
                                  timeout=120, check=False)
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            assert proc.returncode == 2 and len(lines) == 1, (cmd, model, proc.stderr)
            assert text in lines[0] and str(model) in lines[0], lines[0]


# -- fuzz: loading succeeds or raises ModelFormatError, nothing else ----------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
    | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12)
_keys = st.sampled_from(sorted(META_DICT) + ["preprocess.height", "preprocess.background",
                                            "preprocess.resize", "new_key"])


def _mutated(changes: list[tuple[str, Any]]) -> dict[str, Any]:
    d = json.loads(json.dumps(META_DICT))
    for key, value in changes:
        if key.startswith("preprocess."):
            if isinstance(d.get("preprocess"), dict):
                d["preprocess"][key.split(".", 1)[1]] = value
        elif key != "tflite_size":
            d[key] = value
    d["tflite_size"] = len(FLAT)
    return d


FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.lists(st.tuples(_keys, _json_values), min_size=1, max_size=4))
def test_fuzz_metadata_json(changes: list[tuple[str, Any]]) -> None:
    data = FLAT + _zip(json.dumps(_mutated(changes)).encode())
    try:
        flat, meta = metadata.load(data, "fuzz.tflite")
    except ModelFormatError as exc:
        assert str(exc).startswith("fuzz.tflite: ") and "\n" not in str(exc)
        return
    assert flat == FLAT
    assert ModelMeta.from_dict(meta.to_dict()) == meta


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_keys, _json_values), min_size=1, max_size=3))
def test_fuzz_metadata_through_the_recognizer(changes: list[tuple[str, Any]]) -> None:
    """The whole load (metadata, interpreter, tensor checks) on fuzzed JSON."""
    data = FLAT + _zip(json.dumps(_mutated(changes)).encode())
    try:
        rec = Recognizer(data)
    except ModelFormatError as exc:
        assert "\n" not in str(exc)
        return
    assert len(rec.charset) == len(META.charset)  # the output tensor fixes the class count
    assert isinstance(rec.predict(GOOD / "2b4cd.png"), str)


_ARCHIVE = metadata.embed(FLAT, META)[len(FLAT):]


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(_ARCHIVE) - 1), st.integers(0, 255),
                          st.sampled_from(["set", "insert", "delete"])), min_size=1, max_size=8),
       st.integers(0, len(_ARCHIVE)))
def test_fuzz_metadata_zip_bytes(edits: list[tuple[int, int, str]], cut: int) -> None:
    """Byte-level mutations of the appended zip (headers, sizes, flags, deflate data)."""
    buf = bytearray(_ARCHIVE)
    for pos, byte, how in edits:
        pos = min(pos, len(buf) - 1)
        if how == "set":
            buf[pos] = byte
        elif how == "insert":
            buf.insert(pos, byte)
        elif len(buf) > 1:
            del buf[pos]
    if cut % 5 == 0:  # sometimes truncate as well
        buf = buf[:max(1, cut)]
    try:
        flat, _ = metadata.load(FLAT + bytes(buf), "fuzz.tflite")
    except ModelFormatError as exc:
        assert str(exc).startswith("fuzz.tflite: ") and "\n" not in str(exc)
        return
    assert flat == FLAT


# -- the bundled models -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["default_int8.tflite", "default_float32.tflite",
                                  "default_dynamic.tflite"])
def test_bundled_model_metadata_is_complete_and_carries_no_absolute_path(name: str) -> None:
    from captcha_edge import DEFAULT_MODEL

    path = DEFAULT_MODEL.parent / name
    if not path.is_file():
        pytest.skip(f"no bundled {name}")
    _, meta = metadata.load_file(path)
    d = meta.to_dict()
    assert meta.source_run == "runs/default-model"  # as scripts/make_default_model.sh names it
    assert not meta.extra and meta.format == name[len("default_"):-len(".tflite")]
    for text in re.findall(r'"((?:[^"\\]|\\.)*)"', json.dumps(d)):  # every key and value
        assert not Path(text).is_absolute(), text
