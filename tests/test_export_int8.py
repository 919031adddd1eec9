"""Integer routes and the int8 diagnosis (export/routes.py, export/diagnose.py).

The route logic is tested with stand-in converters and scorers (no TensorFlow, fast); the
diagnosis and the fallback end to end on the tiny fixture run (TensorFlow, slow).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from captcha_edge.export import routes
from captcha_edge.export.routes import Route, Trial

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_RUN = ROOT / "tests" / "data" / "export_run"


# -- routes without TensorFlow ----------------------------------------------------------------

def test_ladder_starts_plain_and_only_keeps_one():
    names = [r.name for r in routes.ladder()]
    assert names[0] == "plain" and len(names) == len(routes.ROUTES) == len(set(names))
    assert [r.name for r in routes.ladder(only=True)] == ["plain"]
    assert [r.name for r in routes.ladder(routes.ROUTE_NAMES[-1])] == [routes.ROUTE_NAMES[-1]]


def test_unknown_route_names_valid_ones():
    with pytest.raises(ValueError, match="unknown int8 route 'int4'.*plain"):
        routes.get("int4")


def test_jitter_keeps_originals_and_stays_in_range():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (5, 8, 12)).astype(np.uint8)
    out = routes.jitter(imgs, copies=2, seed=3)
    assert out.dtype == np.uint8 and out.shape == (15, 8, 12)
    assert np.array_equal(out[:5], imgs)
    assert not np.array_equal(out[5:10], imgs)  # the copies differ
    assert np.array_equal(out, routes.jitter(imgs, copies=2, seed=3))  # seeded


def test_jitter_takes_colour_images():
    """RGB runs reach the wide-calibration route too (a dotted-digits model crashed there)."""
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (4, 8, 12, 3)).astype(np.uint8)
    out = routes.jitter(imgs, copies=1, seed=3)
    assert out.dtype == np.uint8 and out.shape == (8, 8, 12, 3)
    assert np.array_equal(out[:4], imgs) and not np.array_equal(out[4:], imgs)
    grey = imgs[..., 0]
    assert np.array_equal(routes.jitter(grey, copies=1, seed=3)[:4], grey)
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, H, W, C\)"):
        routes.jitter(imgs[0, 0])


def test_jitter_rejects_float_images():
    with pytest.raises(ValueError, match="images must be uint8"):
        routes.jitter(np.zeros((2, 4, 4), np.float32))


def _fake(scores, fail=()):
    """convert() returns b'<route>' (or an error for routes in ``fail``); score() looks it up."""
    calls = []

    def convert(route, cal):
        calls.append(route.name)
        return f"{route.name} crashed" if route.name in fail else route.name.encode()

    def score(flat):
        acc = scores[flat.decode()]
        return acc, 1 - acc, acc

    return convert, score, calls


@pytest.fixture
def no_float_check(monkeypatch):
    from captcha_edge.export import verify

    monkeypatch.setattr(verify, "float_compute_ops", lambda flat: [])


def test_try_routes_stops_at_first_that_holds(no_float_check):
    more = [*routes.ladder(), Route("later", "tf_keras", "given", "never reached")]
    convert, score, calls = _fake({"plain": 0.50, "wide-calibration": 0.797, "later": 0.8})
    trials, files = routes.try_routes(more, convert, score, lambda r: np.zeros((3,)),
                                      keras_acc=0.80, max_drop=0.5)
    assert calls == ["plain", "wide-calibration"]  # "later" never converted
    assert [t.passed for t in trials] == [False, True]
    assert routes.best(trials).route == "wide-calibration"
    assert trials[0].drop_pp == pytest.approx(30.0)
    assert set(files) == {"plain", "wide-calibration"}


def test_try_routes_keeps_best_when_none_holds(no_float_check):
    more = [*routes.ladder(), Route("later", "unroll", "given", "last")]
    convert, score, calls = _fake({"plain": 0.50, "equalize": 0.60, "first-conv-rounding": 0.55,
                                   "conv-rounding": 0.52, "fine-tune": 0.58,
                                   "later": 0.70}, fail={"wide-calibration"})
    trials, _ = routes.try_routes(more, convert, score, lambda r: np.zeros((3,)),
                                  keras_acc=0.80, max_drop=0.5)
    assert calls == [r.name for r in more]
    assert trials[1].error == "wide-calibration crashed" and not any(t.passed for t in trials)
    assert routes.best(trials).route == "later"


def test_try_routes_reuses_the_first_result(no_float_check):
    convert, score, calls = _fake({"plain": 0.80})
    trials, _ = routes.try_routes(routes.ladder(), convert, score, lambda r: np.zeros((7,)),
                                  keras_acc=0.80, max_drop=0.5, first=(b"plain", np.zeros((4,))))
    assert calls == [] and trials[0].passed and trials[0].calibration_images == 4


def test_best_prefers_integer_models_and_ladder_order():
    a = Trial("plain", "tf_keras", 10, seq_acc=0.6, agreement=0.9, float_compute_ops=[])
    b = Trial("wide-calibration", "tf_keras", 10, seq_acc=0.7, agreement=0.9,
              float_compute_ops=["SPLIT"])
    c = Trial("wide-calibration", "tf_keras", 10, seq_acc=0.6, agreement=0.9,
              float_compute_ops=[])
    assert routes.best([a, b]).route == "plain"  # a float op disqualifies b
    assert routes.best([a, c]).route == "plain"  # a tie goes to the earlier route
    assert routes.best([c, a]).route == "wide-calibration"
    assert routes.best([Trial("plain", "tf_keras", 1, error="x")]) is None


def test_route_table_names_are_cli_safe():
    for r in routes.ROUTES:
        assert isinstance(r, Route) and r.name == r.name.lower() and " " not in r.name
        assert r.graph in ("tf_keras", "unroll") and r.calibration in ("given", "wide")
        assert r.targets in ("first-conv", "ranges", "model")


def test_node_name_follows_the_debuggers_rule():
    from captcha_edge.export.diagnose import node_name

    assert node_name("NumericVerify/tfl.unidirectional_sequence_lstm12:139") == \
        "tfl.unidirectional_sequence_lstm1"
    assert node_name("NumericVerify/crnn/logits/BiasAdd1:147") == "crnn/logits/BiasAdd"


def test_worst_layers_ranks_by_recovery():
    from captcha_edge.export.diagnose import worst_layers

    tensors = [{"tensor": n, "rel_error": e, "clipped": 0.0, "scale": 1.0, "float_range": [0, 1]}
               for n, e in (("a", 0.5), ("b", 0.01), ("c", 0.02))]
    left = [{"op": "X", "tensor": "a", "agreement_gain_pp": 0.1, "gain_pp": 0.0},
            {"op": "Y", "tensor": "b", "agreement_gain_pp": 5.0, "gain_pp": 3.0},
            {"op": "Z", "tensor": "c", "error": "not applied"}]
    worst = worst_layers(tensors, left, top=5)
    assert [w["tensor"] for w in worst] == ["b", "a"]


def test_cli_rejects_diagnose_without_int8(tmp_path, capsys):
    from captcha_edge.export.cli import main

    (tmp_path / "run").mkdir()
    assert main([str(tmp_path / "run"), "--formats", "float32", "--diagnose"]) == 2
    assert "--diagnose only applies to the int8 format" in capsys.readouterr().err


def test_cli_rejects_bad_diagnose_images(tmp_path, capsys):
    from captcha_edge.export.cli import main

    assert main([str(tmp_path), "--int8", "--diagnose-images", "0"]) == 2
    assert "--diagnose-images must be >= 1; got 0" in capsys.readouterr().err


def test_cli_takes_every_route_by_name():
    from captcha_edge.export.cli import build_parser

    for name in routes.ROUTE_NAMES:
        assert build_parser().parse_args(["run", "--int8", "--int8-route", name]).int8_route \
            == name


def test_cli_rejects_a_calibration_set_for_the_wide_route(tmp_path, capsys):
    from captcha_edge.export.cli import main

    code = main([str(tmp_path), "--int8", "--int8-route", "wide-calibration", "--calib-dir",
                 str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--int8-route wide-calibration calibrates on the run's training " \
        "images; drop --calib-dir" in err


# -- end to end on the fixture run (TensorFlow) -------------------------------------------------

needs_fixture = pytest.mark.skipif(not (FIXTURE_RUN / "model.keras").is_file(),
                                   reason="tests/data/export_run missing")


@pytest.mark.tf
@pytest.mark.slow
@needs_fixture
def test_diagnose_names_layers_and_records_route(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from captcha_edge import metadata
    from captcha_edge.export.cli import main

    code = main([str(FIXTURE_RUN), "--int8", "--out", str(tmp_path), "--calib-size", "60",
                 "--diagnose", "--diagnose-images", "24", "--max-drop", "100", "--quiet"])
    assert code == 0
    report = json.loads((tmp_path / "export_report.json").read_text())
    assert report["int8_route"]["route"] == "plain" and report["int8_route"]["passed"]
    diag = report["int8_diagnosis"]["plain"]
    assert "error" not in diag, diag.get("error")
    ops = {t["op"] for t in diag["tensors"]}
    assert {"CONV_2D", "FULLY_CONNECTED", "UNIDIRECTIONAL_SEQUENCE_LSTM"} <= ops
    for t in diag["tensors"]:
        assert t["rms_error"] >= 0 and 0 <= t["clipped"] <= 1 and t["scale"] > 0
    # Leaving one op in float really leaves a float op, and the rest are scored end to end.
    done = [r for r in diag["left_in_float"] if "error" not in r]
    assert done and all(r["float_ops"] and 0 <= r["agreement"] <= 1 for r in done)
    assert 0 < len(diag["worst"]) <= 5 and diag["images"] == 24
    meta = metadata.read(tmp_path / "model_int8.tflite")
    assert meta["int8_route"] == "plain" and meta["route"] == "tf_keras"


@pytest.mark.tf
@pytest.mark.slow
@needs_fixture
def test_fallback_writes_the_route_that_holds(tmp_path, monkeypatch):
    """The plain route is made to look 100 pp worse: the next route is converted, verified,
    written and recorded."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from captcha_edge import metadata
    from captcha_edge.export.cli import main

    real = routes._scorer
    seen = []

    def scorer(*args, **kw):
        score = real(*args, **kw)

        def worse_first(flat):
            seen.append(len(flat))
            acc, cer, agree = score(flat)
            return (0.0, 1.0, agree) if len(seen) == 1 else (acc, cer, agree)
        return worse_first

    monkeypatch.setattr(routes, "_scorer", scorer)
    code = main([str(FIXTURE_RUN), "--int8", "--out", str(tmp_path), "--calib-size", "60",
                 "--max-drop", "100", "--quiet"])
    report = json.loads((tmp_path / "export_report.json").read_text())
    trials = report["int8_route"]["trials"]
    # With --max-drop 100 a 100 pp drop still passes, so use the trials' own figures.
    assert code == 0 and trials[0]["route"] == "plain" and trials[0]["seq_acc"] == 0.0
    assert report["int8_route"]["route"] == "plain"
    plain_file = (tmp_path / "model_int8.tflite").read_bytes()

    seen.clear()
    code = main([str(FIXTURE_RUN), "--int8", "--out", str(tmp_path), "--calib-size", "60",
                 "--max-drop", "5", "--force", "--quiet"])
    report = json.loads((tmp_path / "export_report.json").read_text())
    trials = report["int8_route"]["trials"]
    # the automatic diagnosis of the plain route ordered the rest of the ladder
    order = routes.order(routes.ladder()[1:], report["int8_diagnosis"]["plain"])
    assert report["int8_route"]["order"] == [r.name for r in order]
    assert [t["route"] for t in trials][:2] == ["plain", order[0].name]
    assert not trials[0]["passed"]
    wide = [t for t in trials if t["route"] == "wide-calibration"]
    assert all(t["calibration_images"] > 60 for t in wide)
    chosen = report["int8_route"]["route"]
    assert chosen != "plain"
    meta = metadata.read(tmp_path / "model_int8.tflite")
    assert meta["int8_route"] == chosen
    row = next(r for r in report["results"] if r["format"] == "int8")
    assert row["float_compute_ops"] == [] and row["input_dtype"] == "uint8"
    # the row's logit clip is the chosen route's (each route measured its own)
    assert row["logit_clip"] == report["int8_route"]["logit_clips"][chosen]
    # the automatic diagnosis ran because the plain route exceeded --max-drop
    assert "plain" in report["int8_diagnosis"]
    # Same ops as the plain route, so the emulated Pi proof (which runs the bundled plain-route
    # model) covers every kernel the other routes need.
    from captcha_edge.export import verify

    def op_names(model: bytes) -> list:
        return sorted(op["op"] for op in verify.op_report(metadata.split(model)[0]))
    assert op_names((tmp_path / "model_int8.tflite").read_bytes()) == op_names(plain_file)


@pytest.mark.tf
@pytest.mark.slow
@needs_fixture
def test_a_route_asked_for_by_name_is_the_only_one_converted(tmp_path):
    """``--int8-route NAME`` converts that route alone, with its own calibration and transform,
    and records it in the file; the result differs from the plain route's file."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from captcha_edge import metadata
    from captcha_edge.export.cli import main

    files = {}
    for name in routes.ROUTE_NAMES:
        out = tmp_path / name
        code = main([str(FIXTURE_RUN), "--int8", "--int8-route", name, "--out", str(out),
                     "--calib-size", "60", "--max-drop", "100", "--quiet"])
        report = json.loads((out / "export_report.json").read_text())
        assert code == 0 and [t["route"] for t in report["int8_route"]["trials"]] == [name]
        assert report["int8_route"]["route"] == name
        meta = metadata.read(out / "model_int8.tflite")
        assert meta["int8_route"] == name
        row = next(r for r in report["results"] if r["format"] == "int8")
        assert row["float_compute_ops"] == [] and row["input_dtype"] == "uint8"
        wide = routes.get(name).calibration == "wide"
        images = len(report["calibration"]["images"])
        assert images > 60 if wide else images == 60
        files[name] = metadata.split((out / "model_int8.tflite").read_bytes())[0]
    assert len(set(files.values())) == len(files)  # each route made its own model
