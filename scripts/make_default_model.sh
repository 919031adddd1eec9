#!/usr/bin/env bash
# Rebuild the bundled default model runtime/models/default_int8.tflite with the repo's own tools.
#
# Data: synthetic captchas only, drawn offline by `captcha-train --synthetic` (the `captcha`
# package; charset 0-9a-z, 4-6 characters, fixed seeds), so the recipe needs no download and
# gives the same images on every machine. Training is bounded by --max-minutes, so the exact
# weights (and accuracy) depend on how many epochs the machine gets through in that time.
#
#   bash scripts/make_default_model.sh                 # defaults below, ~45 min on 2 CPU cores
#   N=30000 EPOCHS=60 MAX_MINUTES=120 bash scripts/make_default_model.sh
#
# Needs the [train] extra (TensorFlow). Writes runs/default-model/ and, only when everything
# succeeded and the model is <= 1 MB, replaces runtime/models/default_int8.tflite atomically.
set -euo pipefail

cd "$(dirname "$0")/.."
N=${N:-12000}
EPOCHS=${EPOCHS:-30}
MAX_MINUTES=${MAX_MINUTES:-40}
SIZE=${SIZE:-small}
SEED=${SEED:-1}
RUN=${RUN:-runs/default-model}
DEST=runtime/models/default_int8.tflite
MAX_BYTES=1000000

captcha-train --synthetic "$N" --synthetic-seed "$SEED" --seed "$SEED" --size "$SIZE" \
    --epochs "$EPOCHS" --max-minutes "$MAX_MINUTES" --out "$RUN" --overwrite
captcha-export "$RUN" --int8 --force

model="$RUN/model_int8.tflite"
size=$(stat -c %s "$model")
if [ "$size" -gt "$MAX_BYTES" ]; then
    echo "make_default_model: $model is $size bytes (> $MAX_BYTES); not bundled" >&2
    exit 1
fi
mkdir -p "$(dirname "$DEST")"
cp "$model" "$DEST.tmp"
mv "$DEST.tmp" "$DEST"
echo "make_default_model: $DEST ($size bytes) from $RUN" >&2
captcha-edge info --model "$DEST"
