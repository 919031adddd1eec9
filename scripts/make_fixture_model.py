"""Build the tiny int8 test model tests/data/tiny_int8.tflite (needs TensorFlow: the [train] extra).

A real model, not a fake: train/model.py's inference graph (shrunk to a few thousand weights),
trained for a short while (--epochs, CTC loss via tf_keras) on the shared captcha_images_v2 set
when it is there (random weights otherwise), converted by tf.lite to full int8 with uint8
raw-pixel input, with captcha_edge metadata embedded. It is small and weak on purpose: tests use
it for the mechanics (loading, quantization, preprocessing, decoding, CLI, errors) and need only
outputs that depend on the image, never high accuracy.

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
                      filters=(8, 16, 16), dense=32, rnn=16)
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


def train(cfg, recipe, data_dir: Path, epochs: int, seed: int):
    """Fit a training twin of the model with CTC loss; return its weights."""
    import numpy as np
    import tensorflow as tf
    import tf_keras
    from captcha_edge.preprocess import to_array
    from captcha_edge.train.model import build_inference_model

    files = sorted(data_dir.glob("*.png"))
    x = np.stack([to_array(p, recipe) for p in files]).astype("float32")[..., None]
    labels = [p.stem for p in files]
    n_max = max(map(len, labels))
    y = np.full((len(files), n_max), -1, "int32")
    for i, lab in enumerate(labels):
        y[i, :len(lab)] = [CHARSET.index(c) for c in lab]
    model = build_inference_model(cfg, tf_keras)

    def ctc(y_true, y_pred):
        y_true = tf.cast(y_true, "int32")
        label_len = tf.reduce_sum(tf.cast(y_true >= 0, "int32"), axis=1, keepdims=True)
        t = tf.shape(y_pred)[1] * tf.ones_like(label_len)
        dense = tf.where(y_true >= 0, y_true, 0)
        return tf_keras.backend.ctc_batch_cost(dense, y_pred, t, label_len)

    model.compile(optimizer=tf_keras.optimizers.Adam(3e-3), loss=ctc)
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=2, shuffle=True)
    return model.get_weights()


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
    ap.add_argument("--epochs", type=int, default=60, help="training epochs (0: random weights)")
    ap.add_argument("--calib", type=Path,
                    default=ROOT.parent / "shared" / "data" / "captcha_images_v2")
    args = ap.parse_args()

    from captcha_edge import __version__
    from captcha_edge.metadata import embed

    cfg, model, recipe = build(args.seed)
    if args.epochs and args.calib.is_dir():
        model.set_weights(train(cfg, recipe, args.calib, args.epochs, args.seed))
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
            "source_run": f"scripts/make_fixture_model.py --seed {args.seed} --epochs "
                          f"{args.epochs} (tiny test fixture)",
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
