#!/usr/bin/env bash
# Prove the runtime works from a clean venv with only the base install (numpy, Pillow,
# ai-edge-litert; no extras): `captcha-edge predict` / `eval` read the shared captcha images,
# TensorFlow is neither installed nor imported, and the venv stays small. Runs twice: with the
# Cython decoder, then with CAPTCHA_EDGE_PUREPYTHON=1 at install time (pure-Python decoder).
#
#   bash scripts/check_runtime_venv.sh            # both modes, venvs in a temp dir
#   MODES=pure bash scripts/check_runtime_venv.sh # one mode only (ext | pure)
#
# Limits checked: venv <= ${MAX_VENV_MB:-200} MB on disk, `captcha-edge predict` peak RSS
# <= ${MAX_RSS_MB:-100} MB. Exit 0 when every check passed; the first failure stops the script.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-python3}
MODES=${MODES:-"ext pure"}
MAX_VENV_MB=${MAX_VENV_MB:-200}
MAX_RSS_MB=${MAX_RSS_MB:-100}
MODEL=${MODEL:-$ROOT/tests/data/tiny_int8.tflite}
IMAGES=${IMAGES:-$ROOT/../shared/data/captcha_images_v2}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

fail() { echo "check_runtime_venv: FAIL: $*" >&2; exit 1; }
say() { echo "check_runtime_venv: $*" >&2; }

[ -d "$IMAGES" ] || fail "shared images not found at $IMAGES (set IMAGES=DIR)"
SAMPLE="$WORK/sample"
mkdir -p "$SAMPLE"
# 100 labelled images, copied so that the checks never write next to the shared set
ls "$IMAGES" | grep -E '\.png$' | sed -n '1,100p' | while read -r f; do cp "$IMAGES/$f" "$SAMPLE/"; done

for mode in $MODES; do
    venv="$WORK/venv-$mode"
    say "[$mode] creating $venv"
    "$PY" -m venv "$venv"
    "$venv/bin/pip" install -q -U pip >/dev/null
    if [ "$mode" = pure ]; then
        CAPTCHA_EDGE_PUREPYTHON=1 "$venv/bin/pip" install -q "$ROOT"
    else
        CAPTCHA_EDGE_REQUIRE_EXT=1 "$venv/bin/pip" install -q "$ROOT"
    fi
    cd "$WORK"  # never import the checkout's sources by accident

    # 1. nothing from TensorFlow is installed
    if "$venv/bin/pip" list 2>/dev/null | grep -iE '^(tensorflow|tf-keras|keras|tflite-runtime) '; then
        fail "[$mode] TensorFlow/Keras is installed in the runtime-only venv"
    fi
    "$venv/bin/pip" list 2>/dev/null | grep -iE '^(numpy|pillow|ai-edge-litert|captcha-edge) ' >&2

    # 2. the decoder engine is the one this mode should give
    engines=$("$venv/bin/python" -c "from captcha_edge.decoder import ENGINES; print(' '.join(sorted(ENGINES)))")
    case "$mode" in
        ext)  [[ " $engines " == *" cython "* ]] || fail "[ext] Cython decoder not built ($engines)";;
        pure) [[ " $engines " != *" cython "* ]] || fail "[pure] Cython decoder present ($engines)";;
    esac
    say "[$mode] decoder engines: $engines"

    # 3. predict and eval through the console script, silently and without TensorFlow
    "$venv/bin/captcha-edge" predict --model "$MODEL" "$SAMPLE" > "$WORK/pred.tsv" 2> "$WORK/pred.err" \
        || fail "[$mode] predict failed: $(head -3 "$WORK/pred.err")"
    [ "$(wc -l < "$WORK/pred.tsv")" -eq 100 ] || fail "[$mode] predict gave $(wc -l < "$WORK/pred.tsv") lines, not 100"
    [ ! -s "$WORK/pred.err" ] || fail "[$mode] predict wrote to stderr: $(head -3 "$WORK/pred.err")"
    right=$(awk -F'\t' '{n=split($1,a,"/"); sub(/\.png$/,"",a[n]); if (a[n]==$2) c++} END {print c+0}' "$WORK/pred.tsv")
    say "[$mode] predict: $right/100 read exactly"
    "$venv/bin/captcha-edge" eval "$SAMPLE" --model "$MODEL" --json > "$WORK/eval.json" \
        || fail "[$mode] eval failed"
    acc=$("$venv/bin/python" -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['correct'])" "$WORK/eval.json")
    [ "$acc" = "$right" ] || fail "[$mode] eval says $acc correct, predict's output $right"
    say "[$mode] eval: $(cut -c1-160 "$WORK/eval.json")..."

    "$venv/bin/python" - "$MODEL" "$SAMPLE" <<'PY' || fail "[$mode] TensorFlow check failed"
import importlib.util, sys
from pathlib import Path
from captcha_edge import Recognizer
rec = Recognizer(sys.argv[1])
texts = rec.predict_batch(sorted(Path(sys.argv[2]).glob("*.png"))[:10])
assert importlib.util.find_spec("tensorflow") is None, "tensorflow is importable"
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
assert not loaded, f"imported: {loaded}"
print(f"check_runtime_venv: backend {rec.backend}, no TensorFlow installed or imported", file=sys.stderr)
PY

    # 4. the bundled default model answers when present
    if "$venv/bin/python" -c "import sys; from captcha_edge import DEFAULT_MODEL as m; sys.exit(0 if m.is_file() else 1)"; then
        "$venv/bin/captcha-edge" predict "$SAMPLE/$(ls "$SAMPLE" | sed -n 1p)" >/dev/null \
            || fail "[$mode] predict with the bundled default model failed"
        say "[$mode] bundled default model: ok"
    else
        say "[$mode] no bundled default model in this build (skipped)"
    fi

    # 5. footprint: peak RSS of one predict process, venv size on disk
    # Peak RSS of the child from getrusage (KiB on Linux): no /usr/bin/time, which a bare Debian
    # lacks (package `time`; scripts/bare-check.sh found it missing).
    rss_kb=$("$PY" - "$venv/bin/captcha-edge" predict --model "$MODEL" "$SAMPLE" <<'PY'
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PY
) || fail "[$mode] predict on the sample folder failed"
    rss_mb=$(( rss_kb / 1024 ))
    venv_mb=$(du -sm "$venv" | cut -f1)
    say "[$mode] peak RSS of predict on 100 images: ${rss_mb} MB (limit $MAX_RSS_MB); venv: ${venv_mb} MB (limit $MAX_VENV_MB)"
    [ "$rss_mb" -le "$MAX_RSS_MB" ] || fail "[$mode] peak RSS ${rss_mb} MB > $MAX_RSS_MB MB"
    [ "$venv_mb" -le "$MAX_VENV_MB" ] || fail "[$mode] venv ${venv_mb} MB > $MAX_VENV_MB MB"
    cd "$ROOT"
done
say "all checks passed ($MODES)"
