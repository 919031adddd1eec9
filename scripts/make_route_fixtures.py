"""Write tests/data/routes/<route>_int8.tflite: the fixture run exported by each integer route.

scripts/pi-emulation.sh runs every file there on the emulated Raspberry Pi and on x86 and
compares the decoded texts, so each route that ``captcha-export --int8`` can choose is proven
on ARM (issue 23). The files are small (~30 KB each) and made from the committed fixture run
(tests/data/export_run), whose calibration images are redrawn synthetically, so this is
reproducible offline:

    python scripts/make_route_fixtures.py          # ~1 minute per route on 2 CPU cores
    python scripts/make_route_fixtures.py first-conv-rounding   # only the routes named
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "tests" / "data" / "export_run"
OUT = ROOT / "tests" / "data" / "routes"


def main(argv: "list[str] | None" = None) -> int:
    from captcha_edge._common import atomic_write_with
    from captcha_edge.export import routes
    from captcha_edge.export.cli import main as export

    names = list(sys.argv[1:] if argv is None else argv) or list(routes.ROUTE_NAMES)
    for name in names:
        if name not in routes.ROUTE_NAMES:
            print(f"make_route_fixtures: error: unknown route {name!r} (routes: "
                  f"{', '.join(routes.ROUTE_NAMES)})", file=sys.stderr)
            return 2
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            work = Path(tmp) / name
            code = export([str(RUN), "--int8", "--int8-route", name, "--out", str(work),
                           "--calib-size", "200", "--max-drop", "100", "--quiet"])
            if code != 0:
                print(f"route {name}: captcha-export exited {code}", file=sys.stderr)
                return code
            dest = OUT / f"{name}_int8.tflite"
            atomic_write_with(dest, lambda t: shutil.copyfile(work / "model_int8.tflite", t))
            print(f"{dest.relative_to(ROOT)}: {dest.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
