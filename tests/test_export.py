"""captcha-export end to end on the tiny fixture run (tests/data/export_run): needs TensorFlow.

The four formats are exported once per session (a few minutes on two cores); every test then
inspects those files with ai-edge-litert, the runtime's interpreter, and compares them with the
Keras model computed here, independently of the exporter's own report.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_without_tensorflow

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from captcha_edge import metadata
from captcha_edge.export import FORMATS
from captcha_edge.export.cli import main
from captcha_edge.export.runfolder import load_split, open_run

pytestmark = [pytest.mark.tf, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_RUN = ROOT / "tests" / "data" / "export_run"
FLOAT_TYPES = {"float32", "float16", "float64"}


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Export the fixture run to all four formats once; return (out dir, exit code, report)."""
    if not (FIXTURE_RUN / "model.keras").is_file():
        pytest.skip("tests/data/export_run missing; run scripts/make_export_fixture.py")
    out = tmp_path_factory.mktemp("export")
    code = main([str(FIXTURE_RUN), "--formats", "all", "--out", str(out), "--calib-size", "100",
                 "--quiet"])
    report = json.loads((out / "export_report.json").read_text())
    return out, code, report


@pytest.fixture(scope="session")
def val_and_keras():
    """Validation images of the fixture run and the Keras model's probabilities on them."""
    import keras

    run = open_run(FIXTURE_RUN)
    val = load_split(run, "val", None)
    model = keras.models.load_model(FIXTURE_RUN / "model.keras", compile=False)
    probs = model.predict(val.images[..., None].astype("float32"), verbose=0)
    return run, val, probs


def _interpreter(path: Path, **kw):
    from ai_edge_litert.interpreter import Interpreter

    flat, meta = metadata.split(path.read_bytes(), str(path))
    it = Interpreter(model_content=flat, num_threads=1, **kw)
    it.allocate_tensors()
    return it, meta


def _run_tflite(path: Path, images: np.ndarray) -> np.ndarray:
    """Dequantized (N, T, C) outputs, one image per invoke, fresh state each time."""
    it, _ = _interpreter(path)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    scale, zp = o["quantization"]
    outs = []
    for x in images:
        it.reset_all_variables()
        it.set_tensor(i["index"], x[None, :, :, None].astype(i["dtype"]))
        it.invoke()
        y = it.get_tensor(o["index"])[0]
        outs.append((y.astype(np.float32) - zp) * scale if scale else y.astype(np.float32))
    return np.stack(outs)


def test_all_formats_written_and_verified(exported):
    out, code, report = exported
    assert code == 0, report
    assert [r["format"] for r in report["results"]] == list(FORMATS)
    for r in report["results"]:
        assert not r.get("error"), r
        assert r["path"] == f"model_{r['format']}.tflite"  # relative to the report's folder
        assert (out / r["path"]).is_file()
        assert r["verification"]["images"] == report["verification_images"] > 0
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_runs_under_ai_edge_litert(exported, val_and_keras, fmt):
    out, _, _ = exported
    run, val, keras_probs = val_and_keras
    path = out / f"model_{fmt}.tflite"
    _, meta = _interpreter(path)
    assert meta["format"] == fmt
    assert meta["charset"] == run.charset and meta["blank"] == run.blank
    probs = _run_tflite(path, val.images)
    assert probs.shape == keras_probs.shape
    agreement = np.mean(probs.argmax(-1) == keras_probs.argmax(-1))
    floor = {"float32": 0.995, "float16": 0.99, "dynamic": 0.95, "int8": 0.98}[fmt]
    assert agreement >= floor, f"{fmt}: frame-argmax agreement {agreement:.4f}"


def test_stateful_flag_tells_the_truth(exported):
    """metadata 'stateful' <=> feeding A, B, A without a reset changes A's output."""
    out, _, _ = exported
    rng = np.random.default_rng(1)
    for fmt in FORMATS:
        it, meta = _interpreter(out / f"model_{fmt}.tflite")
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        a, b = (rng.integers(0, 256, i["shape"]).astype(i["dtype"]) for _ in range(2))
        outs = []
        for x in (a, b, a):
            it.set_tensor(i["index"], x)
            it.invoke()
            outs.append(it.get_tensor(o["index"]).copy())
        assert meta["stateful"] == (not np.array_equal(outs[0], outs[2])), fmt
        it.reset_all_variables()
        it.set_tensor(i["index"], a)
        it.invoke()
        np.testing.assert_array_equal(it.get_tensor(o["index"]), outs[0])


def test_float32_matches_keras_closely(exported, val_and_keras):
    out, _, _ = exported
    _, val, keras_probs = val_and_keras
    probs = _run_tflite(out / "model_float32.tflite", val.images)
    # XNNPACK and TensorFlow sum in different orders: ~1e-4 apart at most on this model
    np.testing.assert_allclose(probs, keras_probs, atol=1e-3)
    assert np.mean(probs.argmax(-1) == keras_probs.argmax(-1)) >= 0.999


def test_int8_keeps_frame_argmax_agreement(exported, val_and_keras):
    out, _, report = exported
    _, val, keras_probs = val_and_keras
    probs = _run_tflite(out / "model_int8.tflite", val.images)
    agreement = float(np.mean(probs.argmax(-1) == keras_probs.argmax(-1)))
    assert agreement >= 0.98
    # the exporter's own figure measures the same thing
    mine = next(r for r in report["results"] if r["format"] == "int8")
    assert mine["verification"]["agreement"] == pytest.approx(agreement, abs=0.01)


def test_int8_has_no_float_compute_op(exported):
    """Every op but the QUANTIZE/DEQUANTIZE at the edges reads and writes integer tensors only."""
    from ai_edge_litert.interpreter import OpResolverType

    out, _, _ = exported
    it, meta = _interpreter(out / "model_int8.tflite",
                            experimental_op_resolver_type=OpResolverType
                            .BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in it.get_tensor_details()}
    ops = it._get_ops_details()
    assert len(ops) > 5
    float_ops = []
    for op in ops:
        tensors = [int(t) for t in list(op["inputs"]) + list(op["outputs"]) if int(t) >= 0]
        if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE") and \
                any(dtypes[t] in FLOAT_TYPES for t in tensors):
            float_ops.append(op["op_name"])
    assert float_ops == []
    assert "DEQUANTIZE" not in {op["op_name"] for op in ops}  # int8 output: nothing to undo
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    assert i["dtype"] == np.uint8 and list(i["shape"]) == [1, 32, 96, 1]
    assert i["quantization"] == (1.0, 0) and meta["input_quant"] == [1.0, 0]  # raw grey levels
    assert o["dtype"] == np.int8
    assert meta["input_dtype"] == "uint8" and meta["output_dtype"] == "int8"
    assert meta["output_quant"] == [pytest.approx(o["quantization"][0]), o["quantization"][1]]


def test_sizes_shrink_with_quantization(exported):
    out, _, _ = exported
    size = {f: len(metadata.split((out / f"model_{f}.tflite").read_bytes())[0]) for f in FORMATS}
    assert size["int8"] < 0.5 * size["float32"]
    assert size["dynamic"] < 0.5 * size["float32"]
    assert size["float16"] < 0.75 * size["float32"]


def test_metadata_round_trips_without_tensorflow(exported):
    out, _, report = exported
    path = out / "model_int8.tflite"
    code = (
        "import json\n"
        "from captcha_edge import metadata\n"
        f"flat, meta = metadata.split(open({str(path)!r}, 'rb').read())\n"
        "assert flat[4:8] == b'TFL3' and len(flat) == meta['tflite_size']\n"
        "from ai_edge_litert.interpreter import Interpreter\n"
        "it = Interpreter(model_content=flat); it.allocate_tensors()\n"
        "print(json.dumps(meta))\n"
    )
    meta = json.loads(run_without_tensorflow(code).strip().splitlines()[-1])
    run = json.loads((FIXTURE_RUN / "model.json").read_text())
    for key in ("charset", "blank", "preprocess", "input_shape", "time_steps"):
        assert meta[key] == run[key], key
    assert meta["format"] == "int8" and meta["input_dtype"] == "uint8"
    assert meta["source_run"] == FIXTURE_RUN.name  # given as an absolute path: its name only
    int8 = next(r for r in report["results"] if r["format"] == "int8")
    assert meta["accuracy"]["seq_acc"] == int8["verification"]["seq_acc"]
    assert meta["calibration"]["images"] == 100
    assert meta["tflite_size"] + 22 < path.stat().st_size


def test_no_absolute_path_in_metadata_or_report(exported):
    """The fixture run and --out were given as absolute paths; nothing written repeats them."""
    out, _, report = exported
    written = [report] + [metadata.read(out / f"model_{f}.tflite") for f in FORMATS]
    for obj in written:
        for text in re.findall(r'"((?:[^"\\]|\\.)*)"', json.dumps(obj)):  # every key and value
            assert not Path(text).is_absolute(), text
            assert str(ROOT) not in text and str(out) not in text, text
    assert report["run"] == FIXTURE_RUN.name


def test_reported_ops_are_the_files_own_and_the_route_keeps_the_fused_lstm(exported):
    """op_counts lists exactly the ops the interpreter finds; the tf_keras route means one fused
    UNIDIRECTIONAL_SEQUENCE_LSTM per direction and no unrolled recurrence."""
    from collections import Counter

    from ai_edge_litert.interpreter import OpResolverType

    out, _, report = exported
    assert report["route"] == "tf_keras"
    for r in report["results"]:
        it, meta = _interpreter(out / r["path"], experimental_op_resolver_type=OpResolverType
                                .BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        counts = Counter(op["op_name"] for op in it._get_ops_details())
        assert r["op_counts"] == dict(counts) and r["ops"] == sum(counts.values()), r["format"]
        assert meta["route"] == "tf_keras"
        assert counts["UNIDIRECTIONAL_SEQUENCE_LSTM"] == 2, (r["format"], counts)
        # unrolled, each of the T steps of both directions would add its own matmuls
        assert counts["FULLY_CONNECTED"] < meta["time_steps"], (r["format"], counts)
        assert r["stateful"] is meta["stateful"] is True


def test_calibration_never_uses_validation_images(exported):
    _, _, report = exported
    run = json.loads((FIXTURE_RUN / "model.json").read_text())
    used = set(report["calibration"]["images"])
    assert len(used) == 100
    assert used <= set(run["train_files"])
    assert not used & set(run["val_files"])


def test_runtime_recognizer_reads_the_int8_file(exported, val_and_keras):
    from captcha_edge import Recognizer

    out, _, _ = exported
    _, val, _ = val_and_keras
    rec = Recognizer(str(out / "model_int8.tflite"), num_threads=1)
    texts = [rec.predict(img) for img in val.images[:20]]
    assert all(set(t) <= set("0123456789") for t in texts)
    right = sum(t == lbl for t, lbl in zip(texts, val.labels[:20]))
    assert right >= 1  # the fixture model reads digits; a broken pipeline reads none


def test_native_crash_is_isolated(tmp_path, capsys, monkeypatch):
    """A segfault while converting one format: clear error naming it, others still written."""
    from captcha_edge.export._worker import CRASH_ENV

    if not (FIXTURE_RUN / "model.keras").is_file():
        pytest.skip("fixture run missing")
    monkeypatch.setenv(CRASH_ENV, "int8")
    out = tmp_path / "o"
    code = main([str(FIXTURE_RUN), "--formats", "float32,int8", "--out", str(out),
                 "--calib-size", "20", "--no-verify", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "crashed natively (signal SIGSEGV) while converting int8" in err
    assert (out / "model_float32.tflite").is_file()
    assert not (out / "model_int8.tflite").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    report = json.loads((out / "export_report.json").read_text())
    assert "SIGSEGV" in next(r for r in report["results"] if r["format"] == "int8")["error"]


def test_unloadable_model_is_a_clear_error(tmp_path, capsys):
    """A .keras archive that passes the zip check but cannot be loaded."""
    import zipfile

    run = tmp_path / "run"
    shutil.copytree(FIXTURE_RUN, run)
    with zipfile.ZipFile(run / "model.keras", "w") as zf:
        zf.writestr("config.json", "{not json")
        zf.writestr("metadata.json", "{}")
        zf.writestr("model.weights.h5", b"\0" * 64)
    code = main([str(run), "--formats", "float32", "--no-verify", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("captcha-export: error:")]
    assert len(lines) == 1 and "cannot load the Keras model" in lines[0], err
    assert not (tmp_path / "o" / "model_float32.tflite").exists()


def test_int8_float_output_and_synthetic_calibration(tmp_path, capsys):
    """--int8-output float32 ends in one DEQUANTIZE; --calib-synthetic draws its images."""
    out = tmp_path / "o"
    code = main([str(FIXTURE_RUN), "--int8", "--int8-output", "float32", "--calib-synthetic",
                 "20", "--no-verify", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "calibration: 20 images from 20 synthetic captchas" in captured.out
    flat, meta = metadata.split((out / "model_int8.tflite").read_bytes())
    assert meta["output_dtype"] == "float32" and meta["output_quant"] is None
    assert meta["input_dtype"] == "uint8" and meta["accuracy"] is None
    assert "synthetic" in meta["calibration"]["source"]
    from captcha_edge.export import verify

    ops = verify.op_report(flat)
    assert [o["op"] for o in ops].count("DEQUANTIZE") == 1 and ops[-1]["op"] == "DEQUANTIZE"
    assert verify.float_compute_ops(flat) == []


def test_tensor_names_stripped_by_default_and_kept_on_request(exported, val_and_keras, tmp_path):
    """The written int8 file carries no tensor names (smaller); --keep-tensor-names keeps them;
    the two files compute the same outputs."""
    out, _, _ = exported
    kept = tmp_path / "kept"
    code = main([str(FIXTURE_RUN), "--int8", "--keep-tensor-names", "--calib-size", "100",
                 "--no-verify", "--int8-route", "plain", "--out", str(kept), "--quiet"])
    assert code == 0
    stripped_it, _ = _interpreter(out / "model_int8.tflite")
    kept_it, _ = _interpreter(kept / "model_int8.tflite")
    assert all(t["name"] == "" for t in stripped_it.get_tensor_details())
    assert sum(bool(t["name"]) for t in kept_it.get_tensor_details()) > 10
    s_flat, _ = metadata.split((out / "model_int8.tflite").read_bytes())
    k_flat, _ = metadata.split((kept / "model_int8.tflite").read_bytes())
    assert len(s_flat) < len(k_flat) - 1000
    _, val, _ = val_and_keras
    np.testing.assert_array_equal(_run_tflite(out / "model_int8.tflite", val.images[:20]),
                                  _run_tflite(kept / "model_int8.tflite", val.images[:20]))
