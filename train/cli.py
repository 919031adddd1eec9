"""``captcha-train``: fit the CRNN-CTC on a folder of labelled captchas and/or synthetic ones.

Every argument and the whole data set are checked before TensorFlow is imported; a user error
prints one line and exits with code 2.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) hides the progress lines;
# keep warnings and errors only. Must be set before TensorFlow is imported anywhere.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .._common import CliParser  # noqa: E402
from . import data as D  # noqa: E402
from .augment import AugmentConfig, parse_augment  # noqa: E402
from .model import SIZES, ModelConfig  # noqa: E402

EPILOG = """\
examples:
  captcha-train --data-dir captcha_images_v2 --out runs/site-a
  captcha-train --data-dir shots --label-pattern '^([a-z0-9]+)-\\d+$' --recursive --out runs/b
  captcha-train --data-dir shots --labels shots/labels.csv --width 160 --height 48 --out runs/c
  captcha-train --synthetic 20000 --synthetic-length 4-6 --charset 0123456789abcdef --out runs/demo
  captcha-train --data-dir real --synthetic 5000 --out runs/mixed    (real + synthetic)
  captcha-train ... --out runs/site-a --resume                      (continue after Ctrl-C)

The run folder gets model.keras, model.json, history.csv, curves.png, samples.png and
metrics.json; turn it into int8 TFLite with captcha-export. Exit codes: 0 done, 2 user error,
130 interrupted (a checkpoint was saved; rerun with --resume).
"""


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="captcha-train", description=__doc__.splitlines()[0].split(": ", 1)[1],
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", type=Path, help="folder of labelled images (label = file stem)")
    g.add_argument("--labels", type=Path, metavar="FILE",
                   help="CSV/TSV of filename,label (paths relative to --data-dir, or to FILE's "
                        "folder without --data-dir)")
    g.add_argument("--label-pattern", metavar="REGEX",
                   help="regex searched in the file stem; its first group is the label")
    g.add_argument("--recursive", action="store_true", help="also read sub-folders")
    g.add_argument("--charset", help="the symbols the model can emit (default: from the labels)")
    g.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="add N synthetic captchas drawn with the 'captcha' package")
    g.add_argument("--synthetic-length", default="4-6", metavar="MIN-MAX",
                   help="label length range of synthetic captchas (default 4-6)")
    g.add_argument("--synthetic-seed", type=int, default=None,
                   help="seed of the synthetic images (default: --seed)")
    g.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of files held out for validation, by file-name hash (default 0.2)")
    g.add_argument("--split-salt", default="", help="string mixed into the split hash")
    g = p.add_argument_group("input and model")
    g.add_argument("--height", type=int, default=50, help="model input height (default 50)")
    g.add_argument("--width", type=int, default=200,
                   help="model input width, a multiple of --time-pool (default 200; "
                        "frames = width / --time-pool)")
    g.add_argument("--resize", choices=("stretch", "pad"), default="stretch",
                   help="stretch to the input size, or keep the aspect ratio and pad (mixed widths)")
    g.add_argument("--resample", default="bilinear",
                   choices=("nearest", "bilinear", "bicubic", "lanczos", "box"))
    g.add_argument("--size", choices=sorted(SIZES), default="base", help="model width preset")
    g.add_argument("--filters", metavar="A,B,C", help="override the preset's conv filters")
    g.add_argument("--dense", type=int, default=0, help="override the preset's dense units")
    g.add_argument("--rnn", type=int, default=0, help="override the preset's LSTM units")
    g.add_argument("--time-pool", type=int, choices=(4, 8), default=8,
                   help="frames = width / this (default 8: 25 frames at width 200, labels up to "
                        "12 characters; 4 doubles the frames for longer labels)")
    g = p.add_argument_group("training")
    g.add_argument("--out", type=Path, required=True, metavar="RUN", help="run folder to write")
    g.add_argument("--epochs", type=int, default=40,
                   help="epochs; the learning rate follows a cosine down to the last (default 40)")
    g.add_argument("--batch-size", type=int, default=16,
                   help="global batch size (default 16; split across GPUs)")
    g.add_argument("--lr", type=float, default=3e-3, help="peak Adam learning rate (default 3e-3)")
    g.add_argument("--warmup-epochs", type=float, default=2.0,
                   help="linear warm-up before the cosine decay (default 2)")
    g.add_argument("--patience", type=int, default=15,
                   help="stop after this many epochs without a better validation score; 0 = never")
    g.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop after this much training time (default: no limit)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--augment", default="", metavar="K=V,...",
                   help="override augmentation ranges, e.g. 'rotate=5,noise=0' "
                        f"(keys: {', '.join(AugmentConfig().to_dict())})")
    g.add_argument("--no-augment", action="store_true", help="train on the images as they are")
    g.add_argument("--resume", action="store_true",
                   help="continue from RUN/checkpoint (same options as the first run)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run folder's model")
    g.add_argument("--threads", type=int, default=0,
                   help="CPU threads for TensorFlow ops (default: all cores)")
    g.add_argument("--mixed-precision", choices=("auto", "on", "off"), default="auto",
                   help="float16 compute (auto: on when a GPU is present)")
    g.add_argument("-q", "--quiet", action="store_true", help="print only the final summary")
    return p


def _check_args(a: argparse.Namespace) -> None:
    """Numeric ranges and flag combinations, before any file is read."""
    if a.data_dir is None and a.labels is None and a.synthetic == 0:
        raise D.TrainDataError("no data: give --data-dir, --labels or --synthetic N")
    checks = [
        (a.synthetic >= 0, f"--synthetic must be >= 0; got {a.synthetic}"),
        (a.epochs >= 1, f"--epochs must be >= 1; got {a.epochs}"),
        (a.batch_size >= 1, f"--batch-size must be >= 1; got {a.batch_size}"),
        (math.isfinite(a.lr) and a.lr > 0, f"--lr must be > 0; got {a.lr}"),
        (a.warmup_epochs >= 0, f"--warmup-epochs must be >= 0; got {a.warmup_epochs}"),
        (a.patience >= 0, f"--patience must be >= 0; got {a.patience}"),
        (a.max_minutes >= 0, f"--max-minutes must be >= 0; got {a.max_minutes}"),
        (a.threads >= 0, f"--threads must be >= 0; got {a.threads}"),
        (0 < a.val_fraction < 1, f"--val-fraction must be in (0, 1); got {a.val_fraction}"),
        (not (a.no_augment and a.augment), "--augment and --no-augment exclude each other"),
        (not (a.resume and a.overwrite), "--resume and --overwrite exclude each other"),
    ]
    for ok, msg in checks:
        if not ok:
            raise D.TrainDataError(msg)
    if a.out.exists() and not a.out.is_dir():
        raise D.TrainDataError(f"--out {a.out}: exists and is not a folder")
    if not a.resume and not a.overwrite and (a.out / "model.keras").exists():
        raise D.TrainDataError(f"--out {a.out}: already holds a trained model; pass --resume to "
                               "continue it or --overwrite to replace it")


def _log(quiet: bool, *msg: Any) -> None:
    if not quiet:
        print(*msg, flush=True)


def prepare(a: argparse.Namespace) -> Any:
    """Find, check, split and load the data; return a :class:`fit.Prepared` (no TensorFlow)."""
    from ..preprocess import make_recipe
    from .fit import Prepared

    try:
        filters = tuple(int(f) for f in a.filters.split(",")) if a.filters else ()
    except ValueError:
        raise D.TrainDataError(f"--filters must be three ints like 16,32,48; got {a.filters!r}") \
            from None
    arch = {"size": a.size, "filters": filters, "dense": a.dense, "rnn": a.rnn,
            "time_pool": a.time_pool}
    try:
        recipe = make_recipe(height=a.height, width=a.width, resize=a.resize,
                             resample=a.resample)
        cfg_probe = ModelConfig(num_classes=2, height=a.height, width=a.width, **arch)
    except ValueError as exc:
        raise D.TrainDataError(f"model options (--height/--width/--filters/...): {exc}") from None
    lengths = D.parse_length_range(a.synthetic_length)
    charset = D.check_charset(a.charset) if a.charset is not None else None

    real = D.find_samples(a.data_dir, labels_file=a.labels, label_pattern=a.label_pattern,
                          recursive=a.recursive)
    if charset is None:
        charset = D.infer_charset([s.label for s in real]) if real \
            else D.DEFAULT_SYNTHETIC_CHARSET
    syn_seed = a.seed if a.synthetic_seed is None else a.synthetic_seed
    synthetic = D.synthetic_samples(a.synthetic, charset, lengths, syn_seed) if a.synthetic else []
    everything = real + synthetic
    max_len = D.check_labels(everything, charset, cfg_probe.time_steps)

    t0 = time.monotonic()
    bars = not a.quiet and sys.stderr.isatty()
    loaded = D.load_samples(real, recipe, progress=bars, desc="reading images")
    if loaded.unreadable:
        print(f"skipped {len(loaded.unreadable)} unreadable file(s) of {len(real)}:",
              file=sys.stderr)
        for _, why in loaded.unreadable[:20]:
            print(f"  {why}", file=sys.stderr)
        if len(loaded.unreadable) > 20:
            print(f"  ... and {len(loaded.unreadable) - 20} more", file=sys.stderr)
    D.check_unreadable(len(real), loaded.unreadable)
    syn = D.load_samples(synthetic, recipe, progress=bars, desc="drawing synthetic")
    import numpy as np

    samples = loaded.samples + syn.samples
    images = np.concatenate([loaded.images, syn.images]) if len(syn.samples) else loaded.images
    train_s, val_s = D.split_samples(samples, a.val_fraction, a.split_salt)
    if not val_s:
        raise D.TrainDataError(f"the validation split is empty ({len(samples)} images at "
                               f"--val-fraction {a.val_fraction}); add data or raise it")
    if not train_s:
        raise D.TrainDataError(f"the training split is empty ({len(samples)} images at "
                               f"--val-fraction {a.val_fraction}); lower it")
    index = {s.name: i for i, s in enumerate(samples)}
    tr_idx = [index[s.name] for s in train_s]
    va_idx = [index[s.name] for s in val_s]
    cfg = ModelConfig(num_classes=len(charset) + 1, height=a.height, width=a.width, **arch)

    summary = {
        "sources": ([str(a.data_dir)] if a.data_dir else []) + ([str(a.labels)] if a.labels else [])
        + ([f"synthetic:{a.synthetic}:seed={syn_seed}:length={lengths[0]}-{lengths[1]}"]
           if a.synthetic else []),
        "all": D.summarize(samples, charset),
        "train_count": len(train_s),
        "val_count": len(val_s),
        "unreadable": [n for n, _ in loaded.unreadable],
        "label_pattern": a.label_pattern,
        "recursive": bool(a.recursive),
    }
    lens = summary["all"]["label_lengths"]
    _log(a.quiet, f"data: {len(samples)} images ({len(loaded.samples)} real, {len(syn.samples)} "
                  f"synthetic) loaded in {time.monotonic() - t0:.1f}s; train {len(train_s)}, "
                  f"val {len(val_s)}")
    _log(a.quiet, f"charset ({len(charset)}): {charset!r}; label lengths "
                  f"{', '.join(f'{k}: {v}' for k, v in lens.items())}; max {max_len}")
    meta: Dict[str, Any] = {
        "data": summary,
        "split": {"method": "sha256(salt + name) < val_fraction", "val_fraction": a.val_fraction,
                  "salt": a.split_salt},
    }
    return Prepared(
        charset=charset, recipe=recipe, model_config=cfg, max_label_length=max_len,
        train_images=images[tr_idx], train_labels=[s.label for s in train_s],
        train_names=[s.name for s in train_s],
        val_images=images[va_idx], val_labels=[s.label for s in val_s],
        val_names=[s.name for s in val_s], meta=meta)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``captcha-train``; returns the exit code."""
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        _check_args(a)
        augment = None if a.no_augment else parse_augment(a.augment)
        prepared = prepare(a)
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            raise D.TrainDataError('captcha-train needs TensorFlow: pip install '
                                   '"captcha-edge[train]"') from None
        from .fit import Options, train

        opts = Options(out=a.out, epochs=a.epochs, batch_size=a.batch_size, learning_rate=a.lr,
                       warmup_epochs=a.warmup_epochs, patience=a.patience, seed=a.seed,
                       augment=augment, resume=a.resume, threads=a.threads,
                       max_minutes=a.max_minutes, mixed_precision=a.mixed_precision,
                       verbose=0 if a.quiet else 1)
        a.out.mkdir(parents=True, exist_ok=True)
        metrics, code = train(prepared, opts)
    except D.TrainDataError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    print(f"val sequence accuracy {metrics['val_seq_acc']:.4f}, CER {metrics['val_cer']:.4f} "
          f"({metrics['val_count']} images, best epoch {metrics['best_epoch']}, "
          f"{metrics['train_seconds']:.0f}s); run folder: {a.out}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
