"""captcha-export argument and input checks: fast, and none of them may load TensorFlow."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from captcha_edge.export import FORMATS, parse_formats
from captcha_edge.export.cli import main
from captcha_edge.export.formats import markdown_table
from conftest import run_without_tensorflow
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_RUN = ROOT / "tests" / "data" / "export_run"

needs_fixture = pytest.mark.skipif(not (FIXTURE_RUN / "model.keras").is_file(),
                                   reason="tests/data/export_run missing; run "
                                          "scripts/make_export_fixture.py")


def _run_cli(args, capsys):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    assert lines[0].startswith("captcha-export: error: ")
    return lines[0]


@pytest.fixture
def run_copy(tmp_path: Path) -> Path:
    """A writable copy of the fixture run folder."""
    if not (FIXTURE_RUN / "model.keras").is_file():
        pytest.skip("tests/data/export_run missing; run scripts/make_export_fixture.py")
    dst = tmp_path / "run"
    shutil.copytree(FIXTURE_RUN, dst)
    return dst


def test_parse_formats_keeps_table_order_and_expands_all():
    assert parse_formats("int8,float32") == ["float32", "int8"]
    assert parse_formats(" Float16 , dynamic ") == ["float16", "dynamic"]
    assert parse_formats("all") == list(FORMATS)
    assert parse_formats("int8,all") == list(FORMATS)


@pytest.mark.parametrize("text", ["", ",", "int4", "float32,int4"])
def test_parse_formats_rejects_unknown_or_empty(text):
    with pytest.raises(ValueError, match="valid formats: float32, float16, dynamic, int8"):
        parse_formats(text)


def test_unknown_format_exits_2_naming_valid_ones(tmp_path, capsys):
    code, _, err = _run_cli([tmp_path, "--formats", "float32,int4"], capsys)
    assert code == 2
    line = _error_line(err)
    assert "unknown format 'int4'" in line and "float16" in line


def test_argparse_choices_come_from_table(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name, fmt in FORMATS.items():
        assert name in out and fmt.summary in out
    assert "examples:" in out


def test_run_folder_without_model(tmp_path, capsys):
    (tmp_path / "model.json").write_text("{}")
    code, _, err = _run_cli([tmp_path, "--int8"], capsys)
    assert code == 2
    assert "no model.keras" in _error_line(err)


def test_missing_run_folder(tmp_path, capsys):
    code, _, err = _run_cli([tmp_path / "nope", "--int8"], capsys)
    assert code == 2
    assert "no such run folder" in _error_line(err)


@needs_fixture
def test_corrupt_model_file(run_copy, capsys):
    (run_copy / "model.keras").write_bytes(b"this is not a keras archive" * 10)
    code, _, err = _run_cli([run_copy, "--int8"], capsys)
    assert code == 2
    line = _error_line(err)
    assert "model.keras" in line and "corrupt" in line


@needs_fixture
def test_truncated_model_file(run_copy, capsys):
    data = (run_copy / "model.keras").read_bytes()
    (run_copy / "model.keras").write_bytes(data[: len(data) // 2])
    code, _, err = _run_cli([run_copy, "--int8"], capsys)
    assert code == 2
    assert "corrupt" in _error_line(err)


@needs_fixture
def test_model_json_missing_keys(run_copy, capsys):
    meta = json.loads((run_copy / "model.json").read_text())
    del meta["charset"]
    (run_copy / "model.json").write_text(json.dumps(meta))
    code, _, err = _run_cli([run_copy, "--int8"], capsys)
    assert code == 2
    assert "missing keys charset" in _error_line(err)


@needs_fixture
def test_empty_calibration_dir(run_copy, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run_cli([run_copy, "--int8", "--calib-dir", empty, "--out",
                             tmp_path / "o"], capsys)
    assert code == 2
    line = _error_line(err)
    assert "--calib-dir" in line and "no image files" in line
    assert not (tmp_path / "o").exists()


@needs_fixture
def test_too_small_calibration_dir(run_copy, tmp_path, capsys):
    few = tmp_path / "few"
    few.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 96), dtype=np.uint8)).save(few / f"{i}.png")
    code, _, err = _run_cli([run_copy, "--int8", "--calib-dir", few, "--out", tmp_path / "o"],
                            capsys)
    assert code == 2
    assert "has 3 usable image(s); int8 needs at least 10" in _error_line(err)


@pytest.mark.parametrize("args, text", [
    (["--calib-size", "5"], "--calib-size must be >= 10; got 5"),
    (["--calib-synthetic", "0"], "--calib-synthetic must be >= 10; got 0"),
    (["--batch", "0"], "--batch must be >= 1; got 0"),
    (["--max-drop", "-1"], "--max-drop must be between 0 and 100"),
    (["--formats", "float32", "--calib-synthetic", "50"], "only applies to the int8 format"),
    (["--formats", "float32", "--int8"], "--int8 conflicts with --formats float32"),
])
def test_bad_option_values(tmp_path, capsys, args, text):
    code, _, err = _run_cli([tmp_path, *args], capsys)
    assert code == 2
    assert text in _error_line(err)


@needs_fixture
def test_refuses_to_overwrite_without_force(run_copy, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "model_int8.tflite").write_bytes(b"keep me")
    code, _, err = _run_cli([run_copy, "--int8", "--out", out], capsys)
    assert code == 2
    assert "already exists; pass --force" in _error_line(err)
    assert (out / "model_int8.tflite").read_bytes() == b"keep me"


def test_errors_do_not_import_tensorflow(tmp_path):
    """The argument and input checks run before TensorFlow loads (a fresh interpreter proves it)."""
    run_without_tensorflow(
        "from captcha_edge.export.cli import main\n"
        f"rc = main([{str(tmp_path)!r}, '--formats', 'int4'])\n"
        f"rc2 = main([{str(tmp_path / 'nope')!r}, '--int8'])\n"
        "assert rc == 2 and rc2 == 2, (rc, rc2)\n")


def test_docs_table_matches_formats():
    doc = ROOT / "docs" / "export.md"
    if not doc.is_file():
        pytest.skip("docs/export.md not present")
    assert markdown_table() in doc.read_text(encoding="utf-8")


def test_representative_data_spans_the_full_input_range():
    """Calibration ends with an all-0 and an all-255 batch: the uint8 input gets scale 1."""
    from captcha_edge.export.convert import representative

    images = np.full((5, 4, 6), 100, np.uint8)
    batches = [b[0] for b in representative(images, 2)()]
    assert [b.shape for b in batches] == [(2, 4, 6, 1)] * 4
    assert all(b.dtype == np.float32 for b in batches)
    assert (batches[0] == 100).all() and (batches[1] == 100).all()
    assert batches[2].max() == 0 and batches[3].min() == 255


def test_inspect_builds_one_inspection_interpreter_and_package_writes_model_meta(
        tmp_path, monkeypatch):
    """inspect + package on a real flatbuffer (the tiny runtime fixture), no TensorFlow:
    one interpreter inspects the file, one verifies it, and the written metadata is ModelMeta's."""
    import argparse
    import dataclasses

    from captcha_edge import metadata
    from captcha_edge.export import cli, verify
    from captcha_edge.export.runfolder import ImageSet, Run
    from captcha_edge.train.model import ModelConfig
    from captcha_edge.train.runinfo import RunInfo

    flat, fixture = metadata.load((ROOT / "tests" / "data" / "tiny_int8.tflite").read_bytes())
    h, w = fixture.input_size
    cfg = ModelConfig(num_classes=len(fixture.charset) + 1, height=h, width=w, size="small")
    info = RunInfo(charset=fixture.charset, blank=fixture.blank, preprocess=fixture.preprocess,
                   input_shape=(h, w, 1), time_steps=cfg.time_steps, model_config=cfg,
                   min_label_length=3, max_label_length=6)
    run_dir = tmp_path / "runs" / "site-a"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
    val = ImageSet(["a", "b", "c"], ["23", "45", "67"], images, origin="val", source="val")
    args = argparse.Namespace(batch=1, route="tf_keras", quiet=True)
    p = cli.Plan(args, ["int8"], Run(run_dir, run_dir / "model.keras", info), tmp_path / "o",
                 {"int8": tmp_path / "o" / "model_int8.tflite"}, tmp_path / "o" / "r.json",
                 None, val)
    keras_probs = rng.random((3, cfg.time_steps, len(fixture.charset) + 1), dtype=np.float32)
    c = cli.Converted({"int8": {"seconds": 1.5}}, keras_probs, 0.5, 0.25)
    built = []
    real = verify.interpreter
    monkeypatch.setattr(verify, "interpreter", lambda *a, **k: built.append(k) or real(*a, **k))

    row, v = cli.inspect(p, c, "int8", flat)
    assert [k.get("delegates", True) for k in built] == [False, True]  # inspect, then verify
    assert row["path"] == "model_int8.tflite" and row["convert_seconds"] == 1.5
    assert row["input_dtype"] == "uint8" and row["output_dtype"] == "int8"
    assert row["float_compute_ops"] == [] and row["ops"] == sum(row["op_counts"].values())
    assert v.images == 3 and row["verification"] == v.to_dict()

    monkeypatch.chdir(tmp_path)
    p = dataclasses.replace(p, run=Run(Path("runs/site-a"), run_dir / "model.keras", info))
    cli.package(p, c, "int8", flat, row, v)
    got_flat, meta = metadata.load_file(tmp_path / "o" / "model_int8.tflite")
    assert got_flat == flat and row["tflite_size"] == len(flat)
    assert meta.source_run == "runs/site-a" and meta.route == "tf_keras" and meta.batch == 1
    assert meta.format == "int8" and meta.stateful is row["stateful"]
    assert meta.label_lengths == (3, 6)  # the run's training label lengths: the length prior
    assert meta.accuracy["keras_seq_acc"] == 0.5 and meta.accuracy["images"] == 3
    assert meta.output_quant == tuple(row["output_quant"]) and meta.calibration is None
