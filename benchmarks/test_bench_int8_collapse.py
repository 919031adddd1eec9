"""Issue 23's regression cases: under-trained models of a hard panel style, and one whose plain
int8 file collapses in the first convolution.

Not CI (it trains for a few CPU-minutes). A trained case is trained once into
``runs/int8-collapse/<name>`` (kept, so later runs only export) from the style panel
(``python scripts/style_panel.py --out runs/panel``) with the earlier defaults stretched to
200x50 grey and stopped early. A constructed case is a copy of a trained one with the first
convolution made uneven without changing the float model (:func:`unbalance`). Every case must
then pass ``captcha-export RUN --int8 --max-drop 0.5 --diagnose`` with the goals of issue 23:
exit 0, <= 0.5 pp below Keras, >= 99 % frame agreement, uint8 input, no float compute op, <= 30 %
of float32's size. Each run appends its figures to ``benchmarks/results/int8-collapse.json``.

    CAPTCHA_EDGE_INT8_COLLAPSE=1 pytest benchmarks/test_bench_int8_collapse.py -s

Trained models of the panel have not collapsed (docs/export.md): wide-color at 200x50 grey, the
earlier defaults stopped after 6 epochs at 46.5 % (the issue's model read 26.5 %), lost 0.31 pp
with the plain route (frame agreement 99.74 %). The collapse case is therefore constructed: the
widest relu1 channel is scaled by 100 and conv2's weights for it divided by 100, which is the
shape the issue's diagnosis describes (one wide first-conv channel, the rest on a few int8
levels) with the float model unchanged.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[1]
PANEL = ROOT / "runs" / "panel"
CASES_DIR = ROOT / "runs" / "int8-collapse"
RESULTS = ROOT / "benchmarks" / "results" / "int8-collapse.json"

#: name -> (panel style, captcha-train options): the earlier defaults (pool stem, 4x time
#: pooling, 200x50 grey, no skip around the BiLSTM), one thread, a short CPU budget. The
#: measured run of "wide-color-poor" was the same recipe with a 12-minute budget, stopped after
#: epoch 6 (329 CPU-s, val 46.5 %); 5.5 CPU-minutes is about that many epochs.
TRAINED: Dict[str, tuple[str, List[str]]] = {
    "wide-color-poor": ("wide-color",
                        ["--width", "200", "--height", "50", "--color", "L", "--stem", "pool",
                         "--time-pool", "4", "--skip", "off", "--epochs", "40",
                         "--warmup-epochs", "2", "--max-minutes", "5.5", "--budget-clock",
                         "cpu", "--threads", "1", "--seed", "0"]),
    # The same recipe stopped earlier, nearer the 26.5 %: the measured run was
    # interrupted after epoch 5 (477 CPU-s; best epoch 4, val 31.7 %); its plain int8 file lost
    # 1.76 pp with conv1 the named layer (3.13 % error, the 4.17 %).
    "wide-color-poor-31": ("wide-color",
                           ["--width", "200", "--height", "50", "--color", "L", "--stem", "pool",
                            "--time-pool", "4", "--skip", "off", "--epochs", "40",
                            "--warmup-epochs", "2", "--max-minutes", "8", "--budget-clock",
                            "cpu", "--threads", "1", "--seed", "0"]),
}
#: name -> (trained case, factor of the widest relu1 channel)
CONSTRUCTED: Dict[str, tuple[str, float]] = {"wide-color-poor-x100": ("wide-color-poor", 100.0)}

pytestmark = pytest.mark.skipif(not os.environ.get("CAPTCHA_EDGE_INT8_COLLAPSE"),
                                reason="set CAPTCHA_EDGE_INT8_COLLAPSE=1 (trains a model)")


def train(name: str) -> Path:
    """The trained case's run folder, trained first when it is not there."""
    style, opts = TRAINED[name]
    run = CASES_DIR / name
    if (run / "model.keras").is_file():
        return run
    data = PANEL / style / "train-8000-s0"
    if not (data / "labels.csv").is_file():
        pytest.skip(f"{data}: no style panel (python scripts/style_panel.py --out runs/panel)")
    cmd = [sys.executable, "-m", "captcha_edge.train.cli", "--labels", str(data / "labels.csv"),
           "--data-dir", str(data), "--out", str(run), *opts]
    subprocess.run(cmd, check=True)
    return run


def unbalance(src: Path, dst: Path, factor: float) -> int:
    """Copy run ``src`` to ``dst`` with relu1's widest channel (largest gamma / sigma of bn1)
    times ``factor`` and conv2's input weights of that channel divided by it: the same float
    model, one wide first-conv channel. Returns the channel."""
    import keras
    import numpy as np
    from captcha_edge.export.equalize import rescale

    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "model.json", dst / "model.json")
    model = keras.models.load_model(src / "model.keras", compile=False)
    bn = model.get_layer("bn1")
    gamma, _, _, var = bn.get_weights()
    k = int(np.argmax(np.abs(gamma) / np.sqrt(var + bn.epsilon)))
    s = np.ones_like(gamma)
    s[k] = factor
    rescale(bn, model.get_layer("conv2"), s)
    model.save(dst / "model.keras")
    return k


def export(run: Path, out: Path) -> tuple[int, Dict[str, Any]]:
    from captcha_edge.export.cli import main

    code = main([str(run), "--formats", "float32,int8", "--out", str(out), "--max-drop", "0.5",
                 "--diagnose", "--quiet"])
    return code, json.loads((out / "export_report.json").read_text())


def summary(name: str, how: str, code: int, report: Dict[str, Any]) -> Dict[str, Any]:
    """The figures issue 23 asks for, appended to ``benchmarks/results/int8-collapse.json``."""
    row = {r["format"]: r for r in report["results"]}
    i8, f32 = row["int8"], row.get("float32")
    route = report["int8_route"]

    def worst(diag: Dict[str, Any]) -> List[Dict[str, Any]]:
        return [{"op": w["op"], "tensor": w["tensor"].split(";")[0],
                 "agreement_gain_pp": round(w["agreement_gain_pp"], 2),
                 "seq_gain_pp": round(w["gain_pp"], 2)} for w in diag.get("worst", [])[:3]]

    entry = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "case": name, "how": how, "exit_code": code,
        "keras_seq_acc": report["keras"]["seq_acc"],
        "trials": [{k: t.get(k) for k in ("route", "seq_acc", "drop_pp", "agreement", "passed")
                    + (("own_float_agreement",) if t.get("own_float_agreement") else ())}
                   for t in route["trials"]],
        "order": route.get("order"), "route": route["route"],
        "int8_seq_acc": i8["verification"]["seq_acc"], "int8_drop_pp": report["int8_drop_pp"],
        "frame_agreement": i8["verification"]["agreement"],
        # fine-tune: the int8 file's agreement with the fine-tuned float model it came from
        "own_float_agreement": next((t.get("own_float_agreement") for t in route["trials"]
                                     if t["route"] == route["route"]), None),
        "fine_tune": {k: v for k, v in (route.get("transforms") or {}).get("fine-tune", {}).items()
                      if k != "rounded_weights"} or None,
        "size_share_of_float32": round(i8["size_bytes"] / f32["size_bytes"], 4) if f32 else None,
        "input_dtype": i8["input_dtype"], "float_compute_ops": i8["float_compute_ops"],
        "diagnosis_before": worst(report.get("int8_diagnosis", {}).get("plain", {})),
        "diagnosis_after": worst(report.get("int8_diagnosis", {}).get("chosen") or {})
        if route["route"] != "plain" else None,
    }
    from captcha_edge._common import atomic_write_json

    entries = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    atomic_write_json(RESULTS, [*entries, entry])
    print("\n" + json.dumps(entry, indent=1))
    return entry


def assert_goals(code: int, e: Dict[str, Any]) -> None:
    # The fine-tune route changes the float model, so its frame agreement is measured against
    # the model it was converted from; every other route's against the trained one.
    agreement = e["own_float_agreement"] if e["route"] == "fine-tune" else e["frame_agreement"]
    assert code == 0 and e["int8_drop_pp"] <= 0.5 and agreement >= 0.99
    assert e["input_dtype"] == "uint8" and e["float_compute_ops"] == []
    assert e["size_share_of_float32"] is not None and e["size_share_of_float32"] <= 0.30


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_trained_case_exports(name, tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    run = train(name)
    code, report = export(run, tmp_path)
    assert_goals(code, summary(name, "trained: " + " ".join(TRAINED[name][1]), code, report))


@pytest.mark.parametrize("name", sorted(CONSTRUCTED))
def test_constructed_collapse_is_mended(name, tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from captcha_edge.export.routes import names_first_conv

    base, factor = CONSTRUCTED[name]
    run = tmp_path / name
    k = unbalance(train(base), run, factor)
    code, report = export(run, tmp_path / "export")
    e = summary(name, f"{base} with relu1 channel {k} x {factor:g}, conv2's weights for it / "
                f"{factor:g} (same float model)", code, report)
    plain = e["trials"][0]
    assert plain["route"] == "plain" and plain["drop_pp"] >= 10, "no collapse: nothing tested"
    assert any(names_first_conv(w["tensor"]) for w in e["diagnosis_before"][:2])
    assert e["route"] == "equalize"
    assert_goals(code, e)
