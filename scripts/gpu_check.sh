#!/usr/bin/env bash
# The GPU path of captcha-train, run once end to end: prove it on a machine with an NVIDIA GPU.
#
# Needs the [train] extra with TensorFlow's CUDA build (pip install 'tensorflow[and-cuda]' at the
# pinned version) and the `captcha` package; draws its own synthetic data, fetches nothing.
# Checks, each a line "ok: ..." or "FAIL: ..." (exit 1 on the first failure):
#   1. TensorFlow sees a GPU;
#   2. the default conv head trains there with mixed precision (mixed_float16, chosen by
#      --mixed-precision auto), its loss finite and falling, and the run records the policy;
#   3. --head lstm trains there too (Keras picks the cuDNN LSTM kernel on a GPU);
#   4. both export to int8, with frame agreement >= 99 % against the Keras model.
# Writes runs/gpu-check/ and, with OUT set, copies the logs and reports there.
#
#   bash scripts/gpu_check.sh                      # on the GPU machine (~3-5 min)
#   GPU_CHECK_ALLOW_CPU=1 bash scripts/gpu_check.sh   # a dry run of the script on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$( [ -x .venv/bin/python ] && echo .venv/bin || dirname "$(command -v python3)")}
PY=$BIN/python
RUNS=runs/gpu-check
N=${N:-2000}
MINUTES=${MINUTES:-1.5}
rm -rf "$RUNS" && mkdir -p "$RUNS"

fail() { echo "FAIL: $*"; exit 1; }

"$PY" - <<'EOF' || fail "TensorFlow sees no GPU (set GPU_CHECK_ALLOW_CPU=1 for a dry run)"
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print(f"tensorflow {tf.__version__}, built with CUDA: {tf.test.is_built_with_cuda()}, GPUs: {gpus}")
sys.exit(0 if gpus or os.environ.get("GPU_CHECK_ALLOW_CPU") else 1)
EOF
echo "ok: TensorFlow is ready"

for head in conv lstm; do
    run="$RUNS/$head"
    mp=()
    [ -n "${GPU_CHECK_ALLOW_CPU:-}" ] && mp=(--mixed-precision on)  # what auto picks on a GPU
    "$BIN/captcha-train" --synthetic "$N" \
        --head "$head" --max-minutes "$MINUTES" --out "$run" "${mp[@]}" >"$run.train.log" 2>&1 \
        || fail "captcha-train --head $head (log: $run.train.log)"
    grep -a "^model:" "$run.train.log" || true
    "$PY" - "$run" <<'EOF' || fail "the $head run's history or metadata (log: $run.train.log)"
import csv, json, math, os, sys
run = sys.argv[1]
meta = json.load(open(os.path.join(run, "model.json")))
rows = list(csv.DictReader(open(os.path.join(run, "history.csv"))))
loss = [float(r["loss"]) for r in rows]
print(f"  policy {meta['mixed_precision']}, {len(rows)} epochs, loss {loss[0]:.2f} -> {loss[-1]:.2f},"
      f" val_seq_acc {float(rows[-1]['val_seq_acc']):.3f}")
assert meta["mixed_precision"] == "mixed_float16", meta["mixed_precision"]
assert len(loss) >= 2 and all(math.isfinite(x) for x in loss) and loss[-1] < loss[0], loss
EOF
    echo "ok: --head $head trains with mixed precision"
    "$BIN/captcha-export" "$run" --int8 >"$run.export.log" 2>&1 \
        || fail "captcha-export $run --int8 (log: $run.export.log)"
    "$PY" - "$run" <<'EOF' || fail "the $head run's int8 reads unlike its Keras model"
import json, os, sys
report = json.load(open(os.path.join(sys.argv[1], "export_report.json")))
check = next(r for r in report["results"] if r["format"] == "int8")["verification"]
print(f"  int8 frame agreement {100 * check['agreement']:.2f} %, seq acc {check['seq_acc']:.3f}")
assert check["agreement"] >= 0.99, check
EOF
    echo "ok: --head $head exports to int8"
done

if [ -n "${OUT:-}" ]; then
    cp "$RUNS"/*.log "$RUNS"/conv/export_report.json "$OUT"/ 2>/dev/null || true
fi
echo "gpu_check: all ok"
