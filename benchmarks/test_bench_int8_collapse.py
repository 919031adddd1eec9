"""Issue 23's regression case: a poor model of a hard panel style whose plain int8 file collapses.

Not CI (it trains for a few CPU-minutes). The case is trained once into
``runs/int8-collapse/<name>`` (kept, so later runs only export) from the style panel
(``python scripts/style_panel.py --out runs/panel``) with the earlier defaults stretched to
200x50 grey and stopped early; then ``captcha-export RUN --int8 --max-drop 0.5 --diagnose``
must exit 0 with the goals of issue 23: <= 0.5 pp below Keras, >= 99 % frame agreement, uint8
input, no float compute op, <= 30 % of float32's size. The plain route must still collapse (or
the case no longer tests anything) and the diagnosis must name the first convolution.

    CAPTCHA_EDGE_INT8_COLLAPSE=1 pytest benchmarks/test_bench_int8_collapse.py -s
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PANEL = ROOT / "runs" / "panel"
CASES_DIR = ROOT / "runs" / "int8-collapse"

#: name -> (panel style, captcha-train options). The earlier defaults (pool stem, 4x time
#: pooling, 200x50 grey, no skip around the BiLSTM) stopped after a few CPU-minutes, one thread.
#: A CANDIDATE, not yet shown to collapse (issue 23 is open on this point): on 2 shared cores the
#: panel styles tried either learnt past 40 % within one epoch (dotted-digits 69 %, small 84 %,
#: mixed-case 53 %, varlen 80 %) or stayed at 0 % for several (wide-color, scratch-grey); the test
#: fails with "pick a new case" until a recipe whose plain route loses >= 10 pp replaces it.
CASES = {
    "dotted-digits-poor": ("dotted-digits",
                           ["--width", "200", "--height", "50", "--color", "L", "--stem", "pool",
                            "--time-pool", "4", "--skip", "off", "--max-minutes", "1", "--budget-clock", "cpu",
                            "--threads", "1", "--seed", "0"]),
}

pytestmark = pytest.mark.skipif(not os.environ.get("CAPTCHA_EDGE_INT8_COLLAPSE"),
                                reason="set CAPTCHA_EDGE_INT8_COLLAPSE=1 (trains a model)")


def train(name: str) -> Path:
    """The case's run folder, trained first when it is not there."""
    style, opts = CASES[name]
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


@pytest.mark.parametrize("name", sorted(CASES))
def test_int8_collapse_case(name, tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from captcha_edge.export.cli import main

    run = train(name)
    code = main([str(run), "--formats", "float32,int8", "--out", str(tmp_path), "--max-drop",
                 "0.5", "--diagnose", "--quiet"])
    report = json.loads((tmp_path / "export_report.json").read_text())
    plain = report["int8_route"]["trials"][0]
    worst = report["int8_diagnosis"]["plain"]["worst"][0]
    row = {r["format"]: r for r in report["results"]}
    i8, f32 = row["int8"], row["float32"]
    print(f"\n{name}: keras {report['keras']['seq_acc']:.4f}; plain {plain['seq_acc']:.4f} "
          f"({plain['drop_pp']:+.2f} pp, agreement {plain['agreement']:.4f}); worst "
          f"{worst['op']} {worst['tensor'][:40]} +{worst['gain_pp']:.2f} pp; chosen "
          f"{report['int8_route']['route']} {i8['verification']['seq_acc']:.4f} "
          f"({report['int8_drop_pp']:+.2f} pp, agreement {i8['verification']['agreement']:.4f})"
          f"; order {report['int8_route'].get('order')}")
    assert plain["drop_pp"] >= 10, "the plain route no longer collapses: pick a new case"
    from captcha_edge.export.routes import names_first_conv

    assert names_first_conv(worst["tensor"])
    assert report["int8_route"]["order"][0] == "equalize"
    assert code == 0 and report["int8_route"]["passed"]
    assert report["int8_drop_pp"] <= 0.5 and i8["verification"]["agreement"] >= 0.99
    assert i8["input_dtype"] == "uint8" and i8["float_compute_ops"] == []
    assert i8["size_bytes"] <= 0.30 * f32["size_bytes"]
