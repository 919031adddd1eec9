#!/usr/bin/env bash
# Time captcha-edge against ddddocr, PNG bytes -> text, one thread each (our interpreter with
# num_threads=1; ddddocr's onnxruntime session with intra/inter-op threads = 1), same images,
# same run, one after the other. ddddocr goes into a throwaway venv (never a project dependency).
#
#   bash scripts/bench_vs_ddddocr.sh [MODEL] [IMAGES_DIR]
#   DDDD_VENV=/tmp/dddd bash scripts/bench_vs_ddddocr.sh     # reuse an existing ddddocr venv
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODEL=${1:-}
IMAGES=${2:-$ROOT/../shared/data/captcha_images_v2}
N=${N:-200}
PY=${PY:-python}          # an interpreter with captcha_edge installed
DDDD_VENV=${DDDD_VENV:-}
if [ -z "$DDDD_VENV" ]; then
    DDDD_VENV=$(mktemp -d)/dddd
    trap 'rm -rf "$(dirname "$DDDD_VENV")"' EXIT
    python3 -m venv "$DDDD_VENV"
    "$DDDD_VENV/bin/pip" install -q ddddocr
fi

if [ -n "$MODEL" ]; then MODEL_ARG="'$MODEL'"; else MODEL_ARG=None; fi
TIMER='
import statistics, sys, time
from pathlib import Path
files = sorted(Path(sys.argv[1]).glob("*.png"))[: int(sys.argv[2])]
pngs = [f.read_bytes() for f in files]
read = make_reader()
for p in pngs[:10]:
    read(p)
times, right = [], 0
for f, p in zip(files, pngs):
    t0 = time.perf_counter()
    text = read(p)
    times.append(time.perf_counter() - t0)
    right += text == f.stem
print(f"{statistics.median(times) * 1000:.3f} {len(files) / sum(times):.1f} {right}/{len(files)}")
'
OURS="
from captcha_edge import Recognizer
def make_reader():
    rec = Recognizer($MODEL_ARG, num_threads=1)
    return rec.predict
$TIMER"
THEIRS="
import contextlib, io
import onnxruntime
_Session = onnxruntime.InferenceSession
def _one_thread(path, *args, **kwargs):
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    kwargs['sess_options'] = opts
    return _Session(path, *args, **kwargs)
onnxruntime.InferenceSession = _one_thread
def make_reader():
    import ddddocr
    with contextlib.redirect_stdout(io.StringIO()):
        ocr = ddddocr.DdddOcr(show_ad=False)
    return ocr.classification
$TIMER"

read -r ours_ms ours_tp ours_acc < <("$PY" -c "$OURS" "$IMAGES" "$N")
read -r dd_ms dd_tp dd_acc < <("$DDDD_VENV/bin/python" -c "$THEIRS" "$IMAGES" "$N" 2>/dev/null)
echo "captcha-edge: median ${ours_ms} ms/captcha, ${ours_tp} captchas/s, exact ${ours_acc}"
echo "ddddocr:      median ${dd_ms} ms/captcha, ${dd_tp} captchas/s, exact ${dd_acc}"
awk -v a="$dd_ms" -v b="$ours_ms" 'BEGIN { printf "captcha-edge is %.1fx faster per captcha (median, 1 thread each)\n", a / b }'
echo "venv sizes: ddddocr $(du -sm "$DDDD_VENV" | cut -f1) MB"
