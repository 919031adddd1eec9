# Runs INSIDE the emulated arm64 rootfs, started by scripts/pi-emulation.sh (not by hand):
#   bash -Eeuo pipefail tests/pi/guest.sh
# Environment from the host script: GUEST_REPO, GUEST_OUT, N_IMAGES, HAVE_FLOAT, QEMU_CPU,
# TFLITE_RUNTIME_SPEC, TEST_DEPS; pip's cache is the host's, bind-mounted.
trap 'printf "\n[pi] FAILED: line %s of tests/pi/guest.sh: %s (exit %s)\n" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR

cd "$GUEST_REPO"
OUT="$GUEST_OUT"
DATA=/work/shared/data/captcha_images_v2
MODEL="$OUT/model_int8.tflite"
: > "$OUT/summary.txt"
rm -f "$OUT/failures"
step() { printf '\n--> [pi] %s  [+%ss]\n' "$*" "$SECONDS"; }
summary() { printf '  %-15s %s\n' "$1" "$2" >> "$OUT/summary.txt"; }
read -r -a TEST_DEPS_A <<<"$TEST_DEPS"
# pytest: no cache dir in the copied checkout, no bytecode, report skips (-rs) so a skipped engine shows.
PYTEST=(python -m pytest -q -rs -p no:cacheprovider)

step "emulated CPU: $(uname -m), QEMU_CPU=$QEMU_CPU"
python3 - <<'EOF'
import ctypes, os, platform
libc = ctypes.CDLL(None)
libc.getauxval.restype = ctypes.c_ulong
hwcap = libc.getauxval(16)  # AT_HWCAP
bits = {0: "fp", 1: "asimd", 3: "aes", 4: "pmull", 5: "sha1", 6: "sha2", 7: "crc32",
        8: "atomics", 9: "fphp", 10: "asimdhp", 20: "asimddp", 22: "sve"}
have = [n for b, n in sorted(bits.items()) if hwcap >> b & 1]
print(f"  {platform.machine()}, HWCAP: {' '.join(have)}")
assert platform.machine() == "aarch64", platform.machine()
# qemu's default `max` CPU advertises SVE and gave wrong XNNPACK int8 results: refuse it.
assert "sve" not in have, "emulated CPU has SVE: QEMU_CPU is not a Pi core (qemu 'max'?)"
if os.environ.get("QEMU_CPU") == "cortex-a72":
    assert "asimddp" not in have and "atomics" not in have, "not an ARMv8.0 Cortex-A72"
print("  /proc/cpuinfo (bind-mounted):",
      [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("Model")])
EOF

step "aarch64 wheel of this checkout: Cython decoder compiled here, by gcc under emulation"
# A separate build venv at a fixed path (no build isolation) keeps compiler paths stable, so ccache
# can reuse an object compiled under emulation by an earlier run of the same source; the runtime
# venv below gets only the wheel and its (no-extras) dependencies.
python3 -m venv /opt/pi-build
/opt/pi-build/bin/pip install -q "setuptools>=68" wheel "Cython>=3.0,<4" "numpy>=1.23"
mkdir -p /work/wheels
rm -f /work/wheels/captcha_edge-*.whl
ccache --zero-stats >/dev/null
echo "  compiling (minutes under emulation on a cold cache) ..."
CAPTCHA_EDGE_REQUIRE_EXT=1 /opt/pi-build/bin/pip wheel -q --no-deps --no-build-isolation \
  -w /work/wheels "$GUEST_REPO"
WHEEL="$(ls /work/wheels/captcha_edge-*.whl)"
CCACHE_LINE="$(ccache --print-stats | awk -F'\t' '$1=="direct_cache_hit"{d=$2} $1=="preprocessed_cache_hit"{p=$2} $1=="cache_miss"{m=$2} END{print "ccache: " d+p " hit, " m " compiled now"}')"
echo "  built $(basename "$WHEEL") ($CCACHE_LINE)"
[[ "$WHEEL" == *linux_aarch64.whl ]] || { echo "wheel is not an aarch64 build: $WHEEL" >&2; exit 1; }

step "runtime venv: that wheel, NO extras (numpy, Pillow, ai-edge-litert from aarch64 wheels)"
python3 -m venv /opt/pi-venv
# shellcheck disable=SC1091
. /opt/pi-venv/bin/activate
pip install -q "$WHEEL"
python - <<'EOF'
import importlib.util, sys
from importlib.metadata import version
import captcha_edge.decoder as d
from captcha_edge.decoder import _ctc_cy
with open(_ctc_cy.__file__, "rb") as f:
    head = f.read(20)
machine = int.from_bytes(head[18:20], "little")
assert head[:4] == b"\x7fELF" and machine == 183, f"{_ctc_cy.__file__} is not an aarch64 ELF"
assert "cython" in d.ENGINES, d.ENGINES
assert importlib.util.find_spec("tensorflow") is None, "TensorFlow must not be installed here"
import captcha_edge  # noqa: F401
assert "tensorflow" not in sys.modules, "importing captcha_edge imported TensorFlow"
print(f"  Cython decoder: {_ctc_cy.__file__.rsplit('/', 1)[-1]} (ELF e_machine 183 = AArch64)")
print("  versions:", ", ".join(f"{p} {version(p)}" for p in
                               ("captcha-edge", "numpy", "pillow", "ai-edge-litert")))
print("  TensorFlow: not installed, not imported")
EOF
python -c 'from importlib.metadata import version; print(version("ai-edge-litert"))' > "$OUT/litert_version"
summary "install:" "captcha-edge from this checkout, no extras; Cython decoder built on aarch64 ($CCACHE_LINE); ai-edge-litert $(cat "$OUT/litert_version"), numpy $(python -c 'import numpy; print(numpy.__version__)'); no TensorFlow"
pip install -q "${TEST_DEPS_A[@]}"

run_pytest() {  # label, summary key, pytest args...; the last line of pytest's output goes to the summary
  local label="$1" key="$2" log rc=0
  shift 2
  log="$(mktemp)"
  "${PYTEST[@]}" "$@" 2>&1 | tee "$log" || rc=$?
  summary "$key" "$label: $(grep -E '(passed|failed|error|no tests ran)' "$log" | tail -n1 | tr -d '=' | sed 's/^ *//')"
  rm -f "$log"
  return "$rc"
}

DECODER_TESTS=(tests/test_decoder*.py)
[[ -e "${DECODER_TESTS[0]}" ]] || { echo "no tests/test_decoder*.py in this checkout" >&2; exit 1; }
step "decoder suite, both engines (Cython built on aarch64 + pure Python)"
python -c 'import captcha_edge.decoder as d; assert set(d.ENGINES) == {"python", "cython"}, d.ENGINES'
# CAPTCHA_EDGE_REQUIRE_EXT=1: the suite's own check that the compiled engine is present runs too.
CAPTCHA_EDGE_REQUIRE_EXT=1 run_pytest "both engines" "decoder:" "${DECODER_TESTS[@]}"

step "decoder suite with CAPTCHA_EDGE_PUREPYTHON=1 (Cython engine hidden)"
CAPTCHA_EDGE_PUREPYTHON=1 python -c 'import captcha_edge.decoder as d; assert set(d.ENGINES) == {"python"}, d.ENGINES'
CAPTCHA_EDGE_PUREPYTHON=1 run_pytest "CAPTCHA_EDGE_PUREPYTHON=1" "decoder (pure):" "${DECODER_TESTS[@]}"

mapfile -t RUNTIME_TESTS < <(ls tests/test_*.py | grep -v -E '^tests/test_(decoder|train|export)')
step "runtime tests that need no TensorFlow: ${RUNTIME_TESTS[*]} (-m 'not tf and not slow')"
(( ${#RUNTIME_TESTS[@]} )) || { echo "no runtime tests in this checkout" >&2; exit 1; }
run_pytest "no TensorFlow" "runtime tests:" "${RUNTIME_TESTS[@]}" -m "not tf and not slow"

step "captcha-edge predict with the bundled default model (no --model)"
ALL_IMGS=("$DATA"/*.png)                    # LC_ALL=C.UTF-8: byte order, as Python's sorted()
[[ -f "${ALL_IMGS[0]}" ]] || { echo "no PNG captchas in $DATA" >&2; exit 1; }
FIRST="${ALL_IMGS[0]}"
if python -c 'import captcha_edge, sys; sys.exit(not captcha_edge.DEFAULT_MODEL.is_file())'; then
  BUNDLED="$(captcha-edge predict "$FIRST")"
  echo "  $BUNDLED"
  summary "bundled model:" "captcha-edge predict $(basename "$FIRST") -> $(cut -f2 <<<"$BUNDLED")"
else
  # Keep going so the other proofs still run, but the harness fails at the end (tests/pi/failures).
  echo "  FAILED: the installed package has no bundled default model ($(python -c 'import captcha_edge; print(captcha_edge.DEFAULT_MODEL)'))"
  echo "bundled default model missing from the installed package (runtime/models/default_int8.tflite)" >> "$OUT/failures"
  summary "bundled model:" "MISSING from the package: FAILED"
fi
IMGS=("${ALL_IMGS[@]:0:$N_IMAGES}")

step "captcha-edge predict --json on ${#IMGS[@]} shared captchas ($(basename "$MODEL"))"
captcha-edge predict --json --model "$MODEL" "${IMGS[@]}" > "$OUT/predict_aarch64.jsonl"
head -n 3 "$OUT/predict_aarch64.jsonl"
python - "$OUT/predict_aarch64.jsonl" <<'EOF'
import json, sys
from pathlib import Path
rows = [json.loads(l) for l in open(sys.argv[1])]
ok = sum(r["error"] is None for r in rows)
right = sum(r["text"] == Path(r["path"]).stem for r in rows)
print(f"  {len(rows)} lines, {ok} without error, {right} equal to the file's label")
assert ok == len(rows), "some predictions failed"
EOF
summary "predict --json:" "$(wc -l < "$OUT/predict_aarch64.jsonl") images, exit 0"

step "captcha-edge eval on all of $DATA"
captcha-edge eval "$DATA" --model "$MODEL" --json > "$OUT/eval_aarch64.json"
EVAL_LINE="$(python - "$OUT/eval_aarch64.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"{d['images']} images, accuracy {100 * d['accuracy']:.2f} % ({d['correct']} exact), "
      f"CER {100 * d['cer']:.2f} %, {d['unreadable']} unreadable")
PY
)"
echo "  $EVAL_LINE"
summary "eval:" "$EVAL_LINE"

step "raw int8 outputs of $N_IMAGES images (for the x86 comparison)"
python tests/pi/dump_outputs.py --model "$MODEL" --images "$DATA" --n "$N_IMAGES" --out "$OUT/aarch64.npz"

step "each integer route's file (tests/data/routes/: the fixture run exported by each route) and the default graph's (tests/data/graphs/: conv head, contrast stretch)"
ROUTE_NAMES=()
for f in tests/data/routes/*_int8.tflite tests/data/graphs/*_int8.tflite; do
  name="$(basename "${f%_int8.tflite}")"
  python tests/pi/dump_outputs.py --model "$f" --images "$DATA" --n "$N_IMAGES" \
    --out "$OUT/route-${name}_aarch64.npz"
  ROUTE_NAMES+=("$name")
done
(( ${#ROUTE_NAMES[@]} > 0 )) || { echo "no route files in tests/data/routes" >&2; exit 1; }
summary "int8 routes:" "${ROUTE_NAMES[*]}: ran on $N_IMAGES images (texts compared with x86 below)"

step "int8 vs float32 invoke time under emulation (a ratio, not a Pi speed)"
if [[ "$HAVE_FLOAT" == 1 ]]; then
  python tests/pi/invoke_ratio.py --int8 "$OUT/ratio_int8.tflite" --float32 "$OUT/ratio_float32.tflite" \
    --image "$FIRST" --label "EMULATION, qemu-user $QEMU_CPU" | tee "$OUT/ratio.txt"
  summary "int8/float32:" "$(sed -n 's/.*: \([0-9.]*\)$/\1/p' "$OUT/ratio.txt") x the float32 invoke time, 1 thread, of $RATIO_WHAT (EMULATION, qemu-user $QEMU_CPU: not a Raspberry Pi measurement)"
else
  echo "  NOT MEASURED: no float32 model to compare with"
  summary "int8/float32:" "NOT MEASURED (no float32 model; set CAPTCHA_EDGE_PI_FLOAT_MODEL)"
fi

if [[ -d "$OUT/ratio-cases" ]]; then
  step "int8 vs float32 invoke time of the regression cases under emulation"
  for f in "$OUT"/ratio-cases/*_int8.tflite; do
    name="$(basename "${f%_int8.tflite}")"
    python tests/pi/invoke_ratio.py --int8 "$f" --float32 "${f%_int8.tflite}_float32.tflite" \
      --image "$FIRST" --label "EMULATION, qemu-user $QEMU_CPU, case $name" | tee -a "$OUT/ratio_cases.txt"
    summary "int8/float32:" "$(tail -n 1 "$OUT/ratio_cases.txt" | sed -n 's/.*: \([0-9.]*\)$/\1/p') x, case $name (EMULATION)"
  done
fi

step "captcha-edge serve (the [serve] extra, pure-Python wheels): start, one request, SIGTERM"
pip install -q "${WHEEL}[serve]"
SERVE_LOG="$OUT/serve.log"
captcha-edge serve --model "$MODEL" --port 0 --workers 1 2> "$SERVE_LOG" &
SERVE_PID=$!
for _ in $(seq 1200); do  # up to 5 minutes: imports are slow under emulation
  grep -q 'listening on' "$SERVE_LOG" && break
  kill -0 "$SERVE_PID" 2>/dev/null || break
  sleep 0.25
done
SERVE_URL="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$SERVE_LOG" | head -n1 || true)"
[[ -n "$SERVE_URL" ]] || { cat "$SERVE_LOG" >&2; echo "serve did not start" >&2; exit 1; }
SERVE_LINE="$(python - "$SERVE_URL" "$FIRST" "$OUT/predict_aarch64.jsonl" <<'EOF'
import json, sys, urllib.request
url, image, predicted = sys.argv[1:]
want = {r["path"]: r["text"] for r in map(json.loads, open(predicted))}
req = urllib.request.Request(url + "/v1/recognize", data=open(image, "rb").read(),
                             headers={"Content-Type": "image/png"})
with urllib.request.urlopen(req, timeout=120) as resp:
    res = json.load(resp)["results"][0]
assert res["error"] is None, res
if image in want:
    assert res["text"] == want[image], (res["text"], want[image])
print(f"POST /v1/recognize {image.rsplit('/', 1)[-1]} -> {res['text']!r} (same as predict)")
EOF
)"
echo "  $SERVE_LINE"
kill -TERM "$SERVE_PID"
SERVE_RC=0
wait "$SERVE_PID" || SERVE_RC=$?
[[ "$SERVE_RC" == 0 ]] || { cat "$SERVE_LOG" >&2; echo "serve exited $SERVE_RC after SIGTERM" >&2; exit 1; }
summary "serve:" "$SERVE_LINE; SIGTERM -> exit 0"

step "pyspng (the [fast-png] extra, aarch64 wheel): PNGs by libspng, the same pixels and answers"
pip install -q "${WHEEL}[fast-png]"
python -c 'from captcha_edge import preprocess as p; assert p.spng_enabled(), "pyspng not usable"'
run_pytest "libspng vs Pillow" "fast-png:" tests/test_png_fast_path.py
captcha-edge predict --json --model "$MODEL" "${IMGS[@]}" > "$OUT/predict_aarch64_spng.jsonl"
python -c 'import sys; a, b = (open(f, "rb").read() for f in sys.argv[1:]); sys.exit(a != b)' \
  "$OUT/predict_aarch64.jsonl" "$OUT/predict_aarch64_spng.jsonl" \
  || { echo "predict --json differs with pyspng installed" >&2; exit 1; }
summary "fast-png:" "predict --json on ${#IMGS[@]} images: byte-identical with and without pyspng"
deactivate

step "second venv: captcha-edge[tflite] ($TFLITE_RUNTIME_SPEC, numpy<2), CAPTCHA_EDGE_BACKEND=tflite-runtime"
python3 -m venv /opt/pi-venv-tflite
# shellcheck disable=SC1091
. /opt/pi-venv-tflite/bin/activate
# The documented install for old images: the [tflite] extra (pins numpy<2), same aarch64 wheel.
pip install -q "${WHEEL}[tflite]" "$TFLITE_RUNTIME_SPEC"
export CAPTCHA_EDGE_BACKEND=tflite-runtime
python - "$MODEL" <<'EOF'
import sys
from importlib.metadata import version
from captcha_edge import Recognizer
r = Recognizer(sys.argv[1])
assert r.backend == "tflite-runtime", r.backend
assert int(version("numpy").split(".")[0]) < 2, version("numpy")
print(f"  backend {r.backend} {version('tflite-runtime')}, numpy {version('numpy')}")
EOF
captcha-edge predict --json --model "$MODEL" "${IMGS[@]}" > "$OUT/predict_tflite_runtime.jsonl"
python - "$OUT/predict_aarch64.jsonl" "$OUT/predict_tflite_runtime.jsonl" > "$OUT/tflite_runtime.txt" <<'EOF'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) and all(r["error"] is None for r in b), "tflite-runtime predictions failed"
same = sum(x["text"] == y["text"] for x, y in zip(a, b))
print(f"{len(b)} images predicted through tflite-runtime, exit 0; texts equal to ai-edge-litert's: "
      f"{same}/{len(a)}")
EOF
cat "$OUT/tflite_runtime.txt"
summary "tflite-runtime:" "$(python -c 'from importlib.metadata import version as v; print("tflite-runtime", v("tflite-runtime"), "+ numpy", v("numpy") + ":")') $(cat "$OUT/tflite_runtime.txt")"
unset CAPTCHA_EDGE_BACKEND
deactivate
step "emulated Pi steps done"
