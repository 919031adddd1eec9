"""Build the tiny int8 test model tests/data/tiny_int8.tflite (needs TensorFlow: the [train] extra).

A real model, not a fake: train/model.py's inference graph (shrunk to a few thousand weights),
converted by tf.lite to full int8 with uint8 raw-pixel input, with captcha_edge metadata embedded.
Its weights are random (seeded), so it reads nothing correctly; tests use it for the mechanics
(loading, quantization, preprocessing, decoding, CLI, errors), never for accuracy.

    python scripts/make_fixture_model.py            # writes tests/data/tiny_int8.tflite
    python scripts/make_fixture_model.py --float32  # also tests/data/tiny_float32.tflite
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
CHARSET = "2345678bcdefgmnpwxy"  # the alphabet of the shared captcha_images_v2 set


def build(seed: int) -> tuple:
    import numpy as np
    import tensorflow as tf
    import tf_keras

    from captcha_edge.preprocess import make_recipe
    from captcha_edge.train.model import ModelConfig, build_inference_model

    tf.keras.utils.set_random_seed(seed)
    tf_keras.utils.set_random_seed(seed)
    cfg = ModelConfig(num_classes=len(CHARSET) + 1, height=32, width=96, size="small",
                      filters=(4, 8, 8), dense=16, rnn=8)
    model = build_inference_model(cfg, tf_keras, unroll=False, batch_size=1)
    # BatchNorm with fresh statistics is the identity; give it non-trivial ones so that the
    # int8 graph has real scales to fold in.
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.name.startswith("bn"):
            g, b, m, v = layer.get_weights()
            layer.set_weights([g, b, rng.normal(0, 0.1, m.shape).astype("float32"),
                               rng.uniform(0.5, 1.5, v.shape).astype("float32")])
    recipe = make_recipe(height=cfg.height, width=cfg.width)
    return cfg, model, recipe


def convert(model, recipe, int8: bool, calib_dir: Path | None) -> bytes:
    import numpy as np
    import tensorflow as tf

    from captcha_edge.preprocess import to_array

    h, w = recipe["height"], recipe["width"]
    paths = sorted(calib_dir.glob("*.png"))[:32] if calib_dir and calib_dir.is_dir() else []

    def representative():
        rng = np.random.default_rng(0)
        for p in paths:
            yield [to_array(p, recipe).astype("float32")[None, :, :, None]]
        for _ in range(max(0, 16 - len(paths))):
            yield [rng.integers(0, 256, (1, h, w, 1)).astype("float32")]
        # make sure the calibrated input range covers the full 0..255
        yield [np.zeros((1, h, w, 1), "float32")]
        yield [np.full((1, h, w, 1), 255, "float32")]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    return conv.convert()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--float32", action="store_true", help="also write tiny_float32.tflite")
    ap.add_argument("--calib", type=Path, default=ROOT.parent / "shared" / "data" / "captcha_images_v2")
    args = ap.parse_args()

    from captcha_edge import __version__
    from captcha_edge.metadata import embed

    cfg, model, recipe = build(args.seed)
    formats = [("int8", True)] + ([("float32", False)] if args.float32 else [])
    args.out.mkdir(parents=True, exist_ok=True)
    for fmt, int8 in formats:
        flat = convert(model, recipe, int8, args.calib)
        meta = {
            "charset": CHARSET,
            "blank": len(CHARSET),
            "preprocess": recipe,
            "input_shape": [cfg.height, cfg.width, 1],
            "time_steps": cfg.time_steps,
            "format": fmt,
            "input_dtype": "uint8" if int8 else "float32",
            "output_dtype": "uint8" if int8 else "float32",
            "output_quant": None,  # the runtime reads the real one from the interpreter
            "source_run": f"scripts/make_fixture_model.py --seed {args.seed} (random weights)",
            "package_version": __version__,
            "accuracy": None,
        }
        dest = args.out / f"tiny_{fmt}.tflite"
        tmp = dest.with_suffix(".tmp")
        tmp.write_bytes(embed(flat, meta))
        tmp.replace(dest)
        print(f"{dest} ({dest.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
