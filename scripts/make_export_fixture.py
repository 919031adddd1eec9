"""Build tests/data/export_run/, the tiny trained run folder the captcha-export tests convert.

A real captcha-train-style run folder (model.keras + model.json per CONTRACTS.md), small enough to
commit (~170 KB): train/model.py's graph shrunk to ~20 k weights, 32x96 input, digits only,
trained with CTC for a few minutes on synthetic captchas. Its model.json names its images as
``synthetic/<seed>/<index>`` with the source ``synthetic:N:seed=S:length=4-4``, so export redraws
the very same training (calibration) and validation images with no data set on disk.

    python scripts/make_export_fixture.py               # ~10 min on 2 busy CPU cores
    python scripts/make_export_fixture.py --epochs 30 --count 4000   # a stronger one
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
CHARSET = "0123456789"


def write_run_info(out: Path, cfg, recipe, train_s, val_s, *, sources, keras_version,
                   fixture) -> None:
    """model.json through RunInfo, the same contract captcha-train writes and export reads."""
    from captcha_edge.train.runinfo import RunInfo

    RunInfo(charset=CHARSET, blank=len(CHARSET), preprocess=recipe,
            input_shape=(cfg.height, cfg.width, 1), time_steps=cfg.time_steps,
            max_label_length=4, min_label_length=4, model_config=cfg,
            data={"sources": sources, "train_count": len(train_s), "val_count": len(val_s)},
            split={"method": "sha256(salt + name) < val_fraction", "val_fraction": 0.1,
                   "salt": ""},
            val_files=tuple(s.name for s in val_s), train_files=tuple(s.name for s in train_s),
            package_version="fixture", keras="keras3", keras_version=keras_version,
            extra={"fixture": fixture}).write(out / "model.json")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "export_run")
    p.add_argument("--count", type=int, default=2500, help="synthetic captchas (train + val)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()

    import numpy as np
    from captcha_edge.preprocess import make_recipe, to_array
    from captcha_edge.train import data as D
    from captcha_edge.train.model import ModelConfig

    cfg = ModelConfig(num_classes=len(CHARSET) + 1, height=32, width=96, size="small",
                      filters=(8, 16, 24), dense=32, rnn=32, dropout=0.1)
    recipe = make_recipe(height=cfg.height, width=cfg.width)
    samples = D.synthetic_samples(a.count, CHARSET, (4, 4), a.seed)
    train_s, val_s = D.split_samples(samples, 0.1, "")
    print(f"drawing {len(samples)} synthetic captchas ...", flush=True)

    def load(ss):
        x = np.stack([to_array(D.draw_synthetic(s, cfg.width, cfg.height), recipe) for s in ss])
        y = np.array([[CHARSET.index(c) for c in s.label] for s in ss], dtype="int32")
        return x[..., None].astype("float32"), y

    xt, yt = load(train_s)
    xv, yv = load(val_s)

    import keras
    import tensorflow as tf
    from captcha_edge.train.model import build_inference_model

    keras.utils.set_random_seed(a.seed)
    model = build_inference_model(cfg)
    blank = len(CHARSET)

    def ctc(y, probs):
        y = tf.cast(y, tf.int32)
        n = tf.shape(y)[0]
        return tf.nn.ctc_loss(y, tf.math.log(probs + 1e-7), tf.fill([n], tf.shape(y)[1]),
                              tf.fill([n], tf.shape(probs)[1]), logits_time_major=False,
                              blank_index=blank)

    model.compile(keras.optimizers.Adam(3e-3), loss=ctc)
    model.fit(xt, yt, batch_size=32, epochs=a.epochs, validation_data=(xv, yv), verbose=2,
              callbacks=[keras.callbacks.ReduceLROnPlateau(patience=3, factor=0.5)])
    frames = model.predict(xv, verbose=0).argmax(-1)
    right = 0
    for row, lab in zip(frames, yv):
        seq = [k for i, k in enumerate(row) if k != blank and (i == 0 or k != row[i - 1])]
        right += seq == list(lab)
    acc = right / len(yv)
    print(f"val sequence accuracy {acc:.3f} ({len(yv)} images)", flush=True)

    a.out.mkdir(parents=True, exist_ok=True)
    # Save an uncompiled twin: a compiled model would drag its Adam state (2x the weights) along.
    plain = build_inference_model(cfg)
    plain.set_weights(model.get_weights())
    with tempfile.TemporaryDirectory() as tmp:
        plain.save(Path(tmp) / "model.keras")
        os.replace(Path(tmp) / "model.keras", a.out / "model.keras")
    write_run_info(a.out, cfg, recipe, train_s, val_s,
                   sources=[f"synthetic:{a.count}:seed={a.seed}:length=4-4"],
                   keras_version=keras.__version__,
                   fixture={"script": "scripts/make_export_fixture.py", "epochs": a.epochs,
                            "val_seq_acc": acc})
    size = sum(f.stat().st_size for f in a.out.iterdir())
    print(f"wrote {a.out} ({size / 1024:.0f} KB, {model.count_params()} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
