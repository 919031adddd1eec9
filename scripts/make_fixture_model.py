"""Build the tiny int8 test model tests/data/tiny_int8.tflite (needs TensorFlow: the [train] extra).

A real model, not a fake: train/model.py's inference graph (shrunk to a few thousand weights),
trained for a short while (--epochs, CTC loss via tf_keras) on the shared captcha_images_v2 set
when it is there (random weights otherwise), saved as a run folder and exported by the real
``captcha-export`` (full int8, uint8 raw-pixel input, int8 output, metadata through ModelMeta),
so the runtime tests run on exactly what export writes. It is small and weak on purpose: tests use
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


def export_fixture(model, cfg, recipe, calib_dir: Path | None, formats: list[str],
                   out: Path) -> None:
    """Write a run folder for ``model`` and run the real ``captcha-export`` on it.

    The run folder's model.json goes through RunInfo, as captcha-train writes it; the fixture
    files are then exactly what captcha-export writes by default (int8 output tensor, metadata
    through ModelMeta), only copied to ``out/tiny_<format>.tflite``.
    """
    import tempfile

    from captcha_edge._common import atomic_write, package_version
    from captcha_edge.export.cli import main as export_main
    from captcha_edge.train.runinfo import RunInfo

    images = sorted(calib_dir.glob("*.png")) if calib_dir and calib_dir.is_dir() else []
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "tiny_fixture_run"  # the metadata's source_run is this name
        run.mkdir()
        model.save(str(run / "model.keras"))
        RunInfo(charset=CHARSET, blank=len(CHARSET), preprocess=recipe,
                input_shape=(cfg.height, cfg.width, 1), time_steps=cfg.time_steps,
                max_label_length=max((len(p.stem) for p in images), default=5),
                model_config=cfg,
                data={"sources": [str(calib_dir)] if images else []},
                train_files=tuple(p.name for p in images), val_files=(),
                package_version=package_version(), keras="tf_keras").write(run / "model.json")
        # Trained on every image (a fixture for mechanics, not accuracy): nothing is held out,
        # so no verification; calibration from the training images (or synthetic ones).
        calib = ["--calib-size", "100"] if images else ["--calib-synthetic", "50"]
        rc = export_main([str(run), "--formats", ",".join(formats), "--out", str(run / "out"),
                          "--no-verify", "--quiet", *calib])
        if rc != 0:
            raise SystemExit(f"captcha-export failed with exit code {rc}")
        for fmt in formats:
            dest = out / f"tiny_{fmt}.tflite"
            atomic_write(dest, (run / "out" / f"model_{fmt}.tflite").read_bytes())
            print(f"{dest} ({dest.stat().st_size} bytes)", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--float32", action="store_true", help="also write tiny_float32.tflite")
    ap.add_argument("--epochs", type=int, default=60, help="training epochs (0: random weights)")
    ap.add_argument("--calib", type=Path,
                    default=ROOT.parent / "shared" / "data" / "captcha_images_v2")
    args = ap.parse_args()

    cfg, model, recipe = build(args.seed)
    if args.epochs and args.calib.is_dir():
        model.set_weights(train(cfg, recipe, args.calib, args.epochs, args.seed))
    args.out.mkdir(parents=True, exist_ok=True)
    formats = ["int8"] + (["float32"] if args.float32 else [])
    export_fixture(model, cfg, recipe, args.calib if args.epochs else None, formats, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
