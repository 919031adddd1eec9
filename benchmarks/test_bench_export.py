"""captcha-export on a model trained on the real captcha_images_v2 set: size, accuracy, latency.

Not CI. Give the run folder (written by
``captcha-train --data-dir ../shared/data/captcha_images_v2``) with
``CAPTCHA_EDGE_EXPORT_RUN=runs/real840``; skipped without it. The export runs once
(float32 + int8, verified on the run's validation split with ai-edge-litert); then:

* pytest-benchmark times one single-thread invoke of each format on the same image, in the same
  run (group ``export-invoke``);
* then the int8 case checks the targets: int8 file <= 30 % of float32 and <= 1 MB; int8
  sequence accuracy within 0.5 pp of the Keras model on the validation split (and prints the
  sizes, accuracies and the export-time latency ratio). int8 is not always
  faster than float32 on x86 (XNNPACK's float path is very good); the ratio is reported as seen.

    CAPTCHA_EDGE_EXPORT_RUN=runs/real840 pytest benchmarks/test_bench_export.py --benchmark-only
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from captcha_edge import metadata
from captcha_edge.export import verify
from captcha_edge.export.cli import main
from captcha_edge.export.runfolder import load_split, open_run

RUN = os.environ.get("CAPTCHA_EDGE_EXPORT_RUN")
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "captcha_images_v2"

pytestmark = pytest.mark.skipif(not RUN or not (Path(RUN) / "model.keras").is_file(),
                                reason="set CAPTCHA_EDGE_EXPORT_RUN to a run folder trained "
                                       "on captcha_images_v2")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export the run to float32 and int8 once; return (out dir, report)."""
    pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("bench-export")
    args = [RUN, "--formats", "float32,int8", "--out", str(out), "--max-drop", "100"]
    if DATA.is_dir():
        args += ["--data-dir", str(DATA)]
    assert main(args) == 0
    report = json.loads((out / "export_report.json").read_text())
    return out, report


def _row(report, fmt):
    return next(r for r in report["results"] if r["format"] == fmt)


@pytest.fixture(scope="module")
def one_image(exported):
    run = open_run(Path(RUN))
    val = load_split(run, "val", DATA if DATA.is_dir() else None, limit=1)
    return val.images[:1]


def _check_targets(out: Path, report) -> None:
    """int8 <= 30 % of float32 and <= 1 MB; int8 seq accuracy within 0.5 pp of Keras."""
    f32 = (out / "model_float32.tflite").stat().st_size
    i8 = (out / "model_int8.tflite").stat().st_size
    keras_acc = report["keras"]["seq_acc"]
    v8 = _row(report, "int8")["verification"]
    v32 = _row(report, "float32")["verification"]
    print(f"\nsize: float32 {f32 / 1024:.1f} KB, int8 {i8 / 1024:.1f} KB, ratio {i8 / f32:.3f}"
          f"\nval ({v8['images']} images): keras {keras_acc:.4f}, float32 {v32['seq_acc']:.4f}, "
          f"int8 {v8['seq_acc']:.4f}; int8 frame agreement {v8['agreement']:.4f}"
          f"\nexport-time latency (median, 1 thread): float32 {v32['latency_ms']:.2f} ms, "
          f"int8 {v8['latency_ms']:.2f} ms, "
          f"int8/float32 {v8['latency_ms'] / v32['latency_ms']:.2f}")
    assert i8 <= 0.30 * f32, f"int8 is {i8 / f32:.1%} of float32"
    assert i8 <= 1_000_000
    assert keras_acc - v8["seq_acc"] <= 0.005


def _bench_invoke(benchmark, it, x, stateful: bool) -> None:
    """Time one invoke of ``it`` on ``x`` (the LSTM state reset first, as the runtime does)."""
    index = it.get_input_details()[0]["index"]

    def _run():
        if stateful:
            it.reset_all_variables()
        it.set_tensor(index, x)
        it.invoke()

    benchmark(_run)


@pytest.mark.parametrize("fmt", ["float32", "int8"])
@pytest.mark.benchmark(group="export-invoke")
def test_bench_invoke_single_thread(benchmark, exported, one_image, fmt):
    """One invoke (state reset included) of each format, num_threads=1, same image; the int8
    case then checks the size and accuracy targets."""
    out, report = exported
    flat, meta = metadata.split((out / f"model_{fmt}.tflite").read_bytes())
    it = verify.interpreter(flat, num_threads=1)
    i = it.get_input_details()[0]
    x = one_image[..., None].astype(i["dtype"])

    _bench_invoke(benchmark, it, x, bool(meta.get("stateful")))
    y = it.get_tensor(it.get_output_details()[0]["index"])
    assert y.shape[-1] == len(meta["charset"]) + 1 and np.isfinite(y.astype(np.float32)).all()
    if fmt == "int8":
        _check_targets(out, report)


# -- issue 12: integer export on every model (regression cases) -----------------------------------
#
#     CAPTCHA_EDGE_INT8_CASES="amazon-5min=runs/amazon5,digits-5min=runs/digits5" \
#         pytest benchmarks/test_bench_export.py -k int8_case --benchmark-only -s
#
# Each case (name=run folder) is exported once with the default --int8 (plain route first, the
# next routes when it loses more than 0.5 pp) plus float32, with --diagnose. Per case and format:
# sequence accuracy, CER, frame agreement with Keras, size, and the single-thread invoke time
# (pytest-benchmark); the chosen route and the diagnosis's worst layers go to
# benchmarks/results/int8-cases.json (and .md) when CAPTCHA_EDGE_INT8_RESULTS=1.

CASES = [tuple(c.split("=", 1)) for c in
         os.environ.get("CAPTCHA_EDGE_INT8_CASES", "").split(",") if "=" in c]
RESULTS = Path(__file__).resolve().parent / "results"
_exports: dict = {}
_rows: dict = {}


def _export_case(name: str, run: str, tmp_path_factory):
    if name not in _exports:
        pytest.importorskip("tensorflow")
        out = tmp_path_factory.mktemp(f"int8-{name}")
        code = main([run, "--formats", "float32,int8", "--out", str(out), "--max-drop", "0.5",
                     "--diagnose", "--diagnose-images", "150", "--quiet"])
        report = json.loads((out / "export_report.json").read_text())
        _exports[name] = (out, code, report)
    return _exports[name]


def _case_row(name: str, out: Path, report) -> dict:
    f32, i8 = _row(report, "float32"), _row(report, "int8")
    v32, v8 = f32["verification"], i8["verification"]
    diag = report.get("int8_diagnosis") or {}
    return {
        "case": name, "keras_seq_acc": report["keras"]["seq_acc"],
        "route": report["int8_route"]["route"], "route_passed": report["int8_route"]["passed"],
        "trials": report["int8_route"]["trials"],
        "float32": {k: v32[k] for k in ("seq_acc", "cer", "agreement")} |
        {"size": (out / "model_float32.tflite").stat().st_size},
        "int8": {k: v8[k] for k in ("seq_acc", "cer", "agreement")} |
        {"size": (out / "model_int8.tflite").stat().st_size, "input_dtype": i8["input_dtype"],
         "float_compute_ops": i8["float_compute_ops"]},
        "drop_pp": 100 * (report["keras"]["seq_acc"] - v8["seq_acc"]),
        "diagnosis_worst": {k: (d.get("worst") if isinstance(d, dict) else None)
                            for k, d in diag.items()},
    }


@pytest.mark.skipif(not CASES, reason="set CAPTCHA_EDGE_INT8_CASES=name=RUN,...")
@pytest.mark.parametrize("fmt", ["float32", "int8"])
@pytest.mark.parametrize("case", CASES or [("none", "")], ids=lambda c: c[0])
@pytest.mark.benchmark(group="int8-cases-invoke")
def test_bench_int8_case(benchmark, tmp_path_factory, case, fmt):
    """Single-thread invoke of float32 and the chosen integer route; the int8 case checks the
    goals: <= 0.5 pp below Keras, >= 99 % frame agreement, <= 30 % of float32, uint8 input,
    no float compute op."""
    name, run = case
    out, code, report = _export_case(name, run, tmp_path_factory)
    flat, meta = metadata.split((out / f"model_{fmt}.tflite").read_bytes())
    it = verify.interpreter(flat, num_threads=1)
    i = it.get_input_details()[0]
    val = load_split(open_run(Path(run)), "val", None, limit=1)
    x = val.images[:1, ..., None].astype(i["dtype"])

    _bench_invoke(benchmark, it, x, bool(meta.get("stateful")))
    row = _rows.setdefault(name, _case_row(name, out, report))
    row[fmt]["invoke_ms_median"] = benchmark.stats.stats.median * 1e3
    if fmt == "float32":
        return
    row["int8_over_float32_invoke"] = (row["int8"]["invoke_ms_median"]
                                       / row["float32"]["invoke_ms_median"])
    if os.environ.get("CAPTCHA_EDGE_INT8_RESULTS"):
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "int8-cases.json").write_text(json.dumps(list(_rows.values()), indent=1)
                                                 + "\n")
    print(f"\n{name}: route {row['route']}, keras {row['keras_seq_acc']:.4f}, int8 "
          f"{row['int8']['seq_acc']:.4f} ({row['drop_pp']:+.2f} pp), agreement "
          f"{row['int8']['agreement']:.4f}, size {row['int8']['size'] / row['float32']['size']:.3f}"
          f" of float32, invoke int8/float32 {row['int8_over_float32_invoke']:.2f}")
    assert row["int8"]["input_dtype"] == "uint8" and row["int8"]["float_compute_ops"] == []
    assert row["int8"]["size"] <= 0.30 * row["float32"]["size"]
    assert row["drop_pp"] <= 0.5 and row["int8"]["agreement"] >= 0.99
