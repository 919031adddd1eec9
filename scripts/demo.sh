#!/usr/bin/env bash
# The whole chain on built-in data, no download: synthetic captchas -> captcha-train (short) ->
# captcha-export --int8 (verified) -> captcha-edge predict / eval / bench on fresh synthetic
# captchas the model never saw; then the bundled default model on the shared real captchas
# when ../shared is there. A few minutes on 2 CPU cores. Run through `make demo`, or directly
# with the [train] extra installed.
#
#   DEMO_N=3000 DEMO_MINUTES=5 bash scripts/demo.sh      (DEMO_EPOCHS=N caps the epochs too)
set -euo pipefail
cd "$(dirname "$0")/.."

N=${DEMO_N:-3000}
EPOCHS=${DEMO_EPOCHS:-auto}
MINUTES=${DEMO_MINUTES:-5}
OUT=${DEMO_OUT:-runs/demo}
TEST="$OUT-test"
# Digits, 4 characters: a task that a short CPU training learns in minutes. The same commands
# take --data-dir for your own labelled captchas.
CHARSET=0123456789

# The training defaults, as a user gets them, with a shorter budget (the default is 30 minutes).
# The demo used --size small --epochs 5 (the defaults of 2026-11) until 2026-12-07: 68.6 % of
# the validation split, where these defaults read 97.5-97.8 % in the same 5 minutes (95 % of
# the 200 new captchas of step 3, int8).
echo "== 1/4 train: $N synthetic captchas ('captcha' package, seed 1), the defaults, <= $MINUTES min"
captcha-train --synthetic "$N" --charset "$CHARSET" --synthetic-length 4 \
    --epochs "$EPOCHS" --max-minutes "$MINUTES" --seed 1 --out "$OUT" --overwrite

echo; echo "== 2/4 export: full-integer int8 TFLite, verified on the run's validation split"
# A model below --max-drop on every int8 route still gets its best int8 file, and the export says
# so and exits 1: the demo goes on with that file (a slow machine may train less in the budget).
captcha-export "$OUT" --int8 --force || echo "(captcha-export exited $?: see above; the demo goes on with the int8 file it wrote)"

echo; echo "== 3/4 runtime: 200 new synthetic captchas (another seed) read by the int8 model"
python - "$TEST" "$CHARSET" <<'PY'
import sys
from pathlib import Path
from PIL import Image
from captcha_edge.train.data import draw_synthetic, synthetic_samples
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
for old in out.glob("*.png"):
    old.unlink()
for i, s in enumerate(synthetic_samples(200, sys.argv[2], (4, 4), seed=987654)):
    Image.fromarray(draw_synthetic(s, 200, 50)).save(out / f"{s.label}-{i:03d}.png")
print(f"wrote 200 images to {out}")
PY
model="$OUT/model_int8.tflite"
captcha-edge predict --model "$model" "$TEST" | head -5
echo "..."
captcha-edge eval "$TEST" --model "$model" --label-pattern '^([0-9]+)-'
captcha-edge bench --model "$model" --n 200 --threads 1

echo; echo "== 4/4 bundled default int8 model (trained by scripts/make_default_model.sh on the real captcha_images_v2 set)"
shared=../shared/data/captcha_images_v2
if [ -d "$shared" ]; then
    captcha-edge predict $(ls "$shared"/*.png | head -5)
else
    echo "(../shared/data/captcha_images_v2 not found; skipping)"
fi
captcha-edge info | head -20
