"""Write tests/data/graphs/conv-head_int8.tflite: a small int8 model of the default graph.

The committed route fixtures (tests/data/routes/) come from a run of the old graph (BiLSTM head,
no contrast key). This one is trained by captcha-train with the defaults of now (the conv head,
``--stem auto``) and ``--contrast stretch``, on the v2 captchas of ``../shared`` (the images the
emulated Pi reads; synthetic ones drawn offline when they are absent), so the emulated Raspberry
Pi (scripts/pi-emulation.sh) runs the conv head's integer kernels and the stretch of the
runtime's preprocessing on ARM and compares the texts with x86.

    python scripts/make_graph_fixture.py        # 2 CPU-minutes of training, then the export
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "graphs" / "conv-head_int8.tflite"


def main() -> int:
    from captcha_edge._common import atomic_write_with
    from captcha_edge.export.cli import main as export
    from captcha_edge.train.cli import main as train

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        v2 = ROOT.parent / "shared" / "data" / "captcha_images_v2"
        data = ["--data-dir", str(v2)] if v2.is_dir() else ["--synthetic", "800"]
        code = train([*data, "--size", "small", "--head", "conv", "--contrast", "stretch",
                      "--max-minutes", "2", "--budget-clock", "cpu", "--seed", "3",
                      "--out", str(run), "-q"])
        if code == 0:
            code = export([str(run), "--int8", "--int8-route", "plain", "--max-drop", "100",
                           "--quiet"])
        if code != 0:
            print(f"make_graph_fixture: exit {code}", file=sys.stderr)
            return code
        atomic_write_with(OUT, lambda t: shutil.copyfile(run / "model_int8.tflite", t))
    print(f"{OUT.relative_to(ROOT)}: {OUT.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
