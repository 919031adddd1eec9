"""``captcha-train``: fit the CRNN-CTC on a folder of labelled captchas and/or synthetic ones.

Every argument and the whole data set are checked before TensorFlow is imported; a user error
prints one line and exits with code 2.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) hides the progress lines;
# keep warnings and errors only. Must be set before TensorFlow is imported anywhere.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .._common import CliParser  # noqa: E402
from ..labels import find_labels_file  # noqa: E402
from ..preprocess import CONTRASTS, OPTIONAL_RECIPE  # noqa: E402
from . import data as D  # noqa: E402
from .augment import AugmentConfig, parse_augment  # noqa: E402
from .model import HEADS, S4_MIN_HEIGHT, SIZES, STEMS, ModelConfig  # noqa: E402
from .tflog import quiet_native_stderr  # noqa: E402

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


#: Conv layers per block for a given --stem ("auto" with --stem auto: from data.AUTO_GRAPHS;
#: ModelConfig's own default (1, 1, 1) is the old graph).
DEFAULT_CONVS = "1,1,1"
#: conv1 layout of new runs when the budget has no room for the finer graph of
#: data.AUTO_GRAPHS (ModelConfig's own default "pool" is the old graph).
DEFAULT_STEM = "s4"
#: --contrast of new runs (the recipe's own default "none" is what older models do).
DEFAULT_CONTRAST = "auto"
#: Sequence head of new runs (ModelConfig's own default "lstm" is the old graph). The conv head
#: read more than the BiLSTM on all four panel styles tried at 8 CPU-minutes (int8 on 1000 unseen
#: images: scratch-grey 32.3 against 26.2 %, faint-grey 79.6 / 79.1, mixed-case 81.6 / 81.2,
#: wide-color 91.2 / 81.5; styles.json configs ab-conv-8min / ab-lstm-8min), trains 1.2-2.2x as
#: many images per CPU-second, and its int8 file invokes ~10x faster.
DEFAULT_HEAD = "conv"
#: Skip around the BiLSTM for new runs (ModelConfig's own default False is the old graph).
DEFAULT_SKIP = "on"
#: Augmentation starts once the model reads this share of the validation captchas: off the
#: blank plateau (augmenting from the first step kept swust on it), but early. 0.5 never opened
#: on the panel's scratch-grey style, which memorized its 6410 images at 35-40 % (issue 22).
DEFAULT_AUGMENT_FROM = 0.05
#: --epochs auto: an epoch (evaluation, checkpoint, patience unit) is at least this many steps.
MIN_EPOCH_STEPS = 200
#: --epochs auto with --max-minutes 0 (no budget): the old fixed length.
AUTO_EPOCHS_NO_BUDGET = 40
#: --epochs auto with a budget: a bound the budget always reaches first in practice.
AUTO_EPOCHS_CAP = 10_000
#: Default warm-up, in optimizer steps: measured on the panel's scratch-grey style, a warm-up of
#: 2 epochs (800 steps of 8000 images) kept CTC on its blank plateau two epochs longer.
WARMUP_STEPS = 300
#: The labels when every file name is LABEL_ID and no option says how to read them: the same
#: part of the name that ``captcha-edge eval`` reads by default.
STEM_PREFIX_PATTERN = r"^([^_]+)_"
#: A name that is LABEL_ID: the label, "_", then a number or a hash or UUID (8+ hex digits).
LABEL_ID_NAME = re.compile(r"^[^_]+_(\d+|[0-9a-fA-F-]{8,})$")
#: A name that may be ID_LABEL: a number, "_", then text that is not an ID (0001_ab3d).
ID_LABEL_NAME = re.compile(r"^\d+_[^_]+$")
#: Default time budget of a run, in minutes.
DEFAULT_MAX_MINUTES = 30.0


def _auto_int(flag: str) -> Any:
    def parse(text: str) -> Any:
        if text == "auto":
            return text
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer or 'auto'; got {text!r}") \
                from None
    parse.__name__ = flag  # argparse names the type in its error message
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="captcha-train", description=__doc__.splitlines()[0].split(": ", 1)[1],
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", type=Path,
                   help="folder of labelled images (label = file stem, or the folder's "
                        "labels.csv / labels.tsv when it has one)")
    g.add_argument("--labels", type=Path, metavar="FILE",
                   help="CSV/TSV of filename,label (paths relative to --data-dir, or to FILE's "
                        "folder without --data-dir); default: --data-dir's labels.csv or "
                        "labels.tsv if there")
    g.add_argument("--label-pattern", metavar="REGEX",
                   help="regex searched in the file stem; its first group is the label "
                        "(default: the whole stem, or the part before the '_' when every name "
                        "is LABEL_ID, e.g. 3b7fd_0042 or 113d_77b2c2f4...)")
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
    g.add_argument("--height", type=_auto_int("--height"), default="auto",
                   help="model input height, or auto (default): the median image height within "
                        f"{D.AUTO_HEIGHT[0]}..{D.AUTO_HEIGHT[1]}, raised with the width to keep "
                        f"the aspect ratio; images taller than {D.AUTO_HEIGHT[1]} keep up to "
                        f"{D.TALL_HEIGHT} rows when the finest --stem auto graph still fits the "
                        "budget")
    g.add_argument("--width", type=_auto_int("--width"), default="auto",
                   help="model input width (a multiple of --time-pool; frames = width / "
                        "--time-pool), or auto (default): "
                        "height x median aspect ratio, at least "
                        f"{D.FRAMES_PER_CHAR} frames per character of the longest label "
                        "(200x50 images with 5-character labels give 200x50)")
    g.add_argument("--color", choices=("auto", "L", "RGB"), default="auto",
                   help="model input colour: L (grey), RGB, or auto (default): RGB when at least "
                        f"{round(100 * D.COLOR_INK_SHARE)}%% of the ink (pixels unlike the background) is "
                        "coloured in the median image")
    g.add_argument("--case", choices=D.CASE_MODES, default="keep",
                   help="fold: lower-case every label (sites that ignore case); keep (default)")
    g.add_argument("--resize", choices=("stretch", "pad"), default="stretch",
                   help="stretch to the input size, or keep the aspect ratio and pad (mixed widths)")
    g.add_argument("--contrast", choices=("auto", *CONTRASTS), default=DEFAULT_CONTRAST,
                   help="stretch: each image's grey levels stretched to 0..255 (its 1%% darkest "
                        "and brightest values), in training and in the exported model alike, for "
                        "faint ink on light paper; none: the pixels as they are; auto "
                        "(default): stretch when the median image spans fewer than "
                        f"{D.CONTRAST_SPAN_MAX} grey levels")
    g.add_argument("--resample", default="bilinear",
                   choices=("nearest", "bilinear", "bicubic", "lanczos", "box"))
    g.add_argument("--size", choices=sorted(SIZES), default="base", help="model width preset")
    g.add_argument("--filters", metavar="A,B,C", help="override the preset's conv filters")
    g.add_argument("--dense", type=int, default=0, help="override the preset's dense units")
    g.add_argument("--rnn", type=int, default=0, help="override the preset's LSTM units")
    g.add_argument("--dropout", type=float, default=0.2,
                   help="dropout on the projected frame features, 0 <= P < 1 (default 0.2)")
    g.add_argument("--convs", metavar="A,B,C", default="auto",
                   help="conv layers (Conv2D+BatchNorm+ReLU) in each of the 3 blocks, or auto "
                        "(default): chosen with --stem auto, else "
                        f"{DEFAULT_CONVS}")
    g.add_argument("--stem", choices=("auto", *STEMS), default="auto",
                   help=f"first conv: auto (default) = s2 with a second conv in block 3 "
                        f"when the cost model fits {D.MIN_BUDGET_IMAGES // 1000}k training "
                        f"images in the budget at the chosen input, shrunk to "
                        f"{D.FINE_MIN_SCALE:g}x a side at most (or below a height of "
                        f"{S4_MIN_HEIGHT}), else {DEFAULT_STEM}; "
                        "s4 = stride 2 and a 2x2 max-pool, so the other "
                        "blocks see a quarter of the pixels (~2.5x cheaper per training image); "
                        "s2 = stride 2, no pool (~1.5x); pool = full resolution then the pool "
                        "(the graph before issue 22)")
    g.add_argument("--skip", choices=("on", "off"), default=DEFAULT_SKIP,
                   help="a skip around the BiLSTM: the logits also see the conv features "
                        f"(default {DEFAULT_SKIP}; on leaves CTC's blank plateau sooner)")
    g.add_argument("--head", choices=HEADS, default=DEFAULT_HEAD,
                   help="sequence model over the frames: lstm = a bidirectional LSTM; conv = "
                        "residual dilated 1-D convolutions (int8 inference several times faster "
                        f"on x86 and ARM) (default {DEFAULT_HEAD})")
    g.add_argument("--init-from", type=Path, metavar="RUN_OR_MODEL",
                   help="warm start from an earlier run folder (or its model.keras): same "
                        "geometry, colour and architecture; a new charset replaces the output "
                        "layer's rows for new symbols")
    g.add_argument("--time-pool", type=int, choices=(4, 8), default=8,
                   help="frames = width / this (default 8: 25 frames at width 200, labels up to "
                        "12 characters; 4 doubles the frames for longer labels)")
    g = p.add_argument_group("training")
    g.add_argument("--out", type=Path, required=True, metavar="RUN", help="run folder to write")
    g.add_argument("--epochs", type=_auto_int("--epochs"), default="auto",
                   help="passes over the training set; the learning rate follows a cosine down "
                        "to the last. auto (default): the time budget bounds the run and an "
                        f"epoch is at least {MIN_EPOCH_STEPS} steps (a small set repeats), so "
                        "small and large sets both use the budget; "
                        f"{AUTO_EPOCHS_NO_BUDGET} with --max-minutes 0")
    g.add_argument("--batch-size", type=int, default=16,
                   help="global batch size (default 16; split across GPUs)")
    g.add_argument("--lr", type=float, default=3e-3, help="peak Adam learning rate (default 3e-3)")
    g.add_argument("--ema", type=float, default=0.0, metavar="M",
                   help="evaluate, keep and save an exponential moving average of the weights "
                        "(Polyak averaging, momentum M, e.g. 0.99); 0 (default) = off")
    g.add_argument("--warmup-epochs", type=float, default=None,
                   help="linear warm-up before the cosine decay, in epochs (default: "
                        f"{WARMUP_STEPS} optimizer steps, whatever the data set's size)")
    g.add_argument("--patience", type=int, default=15,
                   help="stop after this many epochs without a better validation score, once "
                        "3/4 of the schedule has run (the learning rate has decayed); 0 = never")
    g.add_argument("--max-minutes", type=float, default=DEFAULT_MAX_MINUTES,
                   help="time budget: the learning-rate decay is paced to end when it is spent, "
                        "and the run stops there with the best model "
                        f"(default {DEFAULT_MAX_MINUTES:g}; 0 = only --epochs bounds the run)")
    g.add_argument("--budget-clock", choices=("wall", "cpu"), default="wall",
                   help="what --max-minutes counts: wall time (default) or this process's CPU "
                        "time (all threads; reproducible on a shared machine)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--augment", default="", metavar="K=V,...",
                   help="override augmentation ranges, e.g. 'rotate=5,noise=0' "
                        f"(keys: {', '.join(AugmentConfig().to_dict())})")
    g.add_argument("--no-augment", action="store_true", help="train on the images as they are")
    g.add_argument("--augment-from", type=float, default=DEFAULT_AUGMENT_FROM, metavar="ACC",
                   help="start augmenting once the validation sequence accuracy reaches ACC "
                        f"(default {DEFAULT_AUGMENT_FROM:g}; 0 = from the first step)")
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
        (a.epochs == "auto" or a.epochs >= 1, f"--epochs must be >= 1; got {a.epochs}"),
        (a.batch_size >= 1, f"--batch-size must be >= 1; got {a.batch_size}"),
        (math.isfinite(a.lr) and a.lr > 0, f"--lr must be > 0; got {a.lr}"),
        (0.0 <= a.ema < 1.0, f"--ema must be at least 0 and below 1; got {a.ema}"),
        (0.0 <= a.dropout < 1.0, f"--dropout must be at least 0 and below 1; got {a.dropout}"),
        (a.warmup_epochs is None or a.warmup_epochs >= 0, f"--warmup-epochs must be >= 0; got {a.warmup_epochs}"),
        (a.patience >= 0, f"--patience must be >= 0; got {a.patience}"),
        (a.max_minutes >= 0, f"--max-minutes must be >= 0; got {a.max_minutes}"),
        (0 <= a.augment_from <= 1, f"--augment-from must be in [0, 1]; got {a.augment_from}"),
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


def _read_init_from(path: Path) -> Any:
    """``--init-from``: a run folder or its model.keras -> :class:`fit.WarmStart` and recipe."""
    import json

    from .fit import WarmStart

    run = path if path.is_dir() else path.parent
    weights = run / "model.keras" if path.is_dir() else path
    meta_file = run / "model.json"
    if not weights.is_file():
        raise D.TrainDataError(f"--init-from {path}: no model.keras there (give a run folder of "
                               "captcha-train or its model.keras)")
    if not meta_file.is_file():
        raise D.TrainDataError(f"--init-from {path}: no model.json beside {weights.name}; the "
                               "charset and model config come from it")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        start = WarmStart(weights=weights, charset=str(meta["charset"]),
                          model_config=ModelConfig.from_dict(meta["model_config"]))
        recipe = dict(meta["preprocess"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise D.TrainDataError(f"--init-from {meta_file}: unreadable run metadata ({exc})") \
            from None
    return start, recipe


def _check_warm_start_arch(a: argparse.Namespace, arch: Dict[str, Any]) -> None:
    """With ``--init-from`` the earlier run's architecture wins: an architecture option given
    with another value than that run's would otherwise be ignored without a word."""
    defaults = build_parser()
    theirs = {"size": arch["size"], "head": arch["head"], "skip": "on" if arch["skip"] else "off",
              "stem": arch["stem"], "dropout": arch["dropout"], "time_pool": arch["time_pool"],
              "convs": ",".join(str(c) for c in arch["convs"]),
              "filters": ",".join(str(f) for f in arch["filters"]), "dense": arch["dense"],
              "rnn": arch["rnn"]}
    for dest, source in theirs.items():
        given = getattr(a, dest)
        if given is None or given == defaults.get_default(dest):
            continue
        if isinstance(given, str) and "," in given:
            given = ",".join(p.strip() for p in given.split(","))
        if given != source:
            flag = "--" + dest.replace("_", "-")
            raise D.TrainDataError(f"{flag} {given} differs from the --init-from model's "
                                   f"{source}; a warm start keeps the architecture (drop {flag})")


def _choose_input(a: argparse.Namespace, real: Sequence[D.Sample], max_len: int,
                  time_pool: int, init_recipe: Optional[Dict[str, Any]],
                  stem: str = "pool", head: str = "lstm") -> Dict[str, Any]:
    """Height, width and colour (explicit flags win, then --init-from's, then the data's), and
    with ``stem`` "auto" the stem and conv layers the budget has room for."""
    reasons: Dict[str, str] = {}
    choice: Dict[str, Any] = {}
    if init_recipe is not None:
        for key in ("height", "width", "color"):
            given = getattr(a, key)
            source = init_recipe.get(key, "L" if key == "color" else None)
            if given != "auto" and given != source:
                raise D.TrainDataError(f"--{key} {given} differs from the --init-from model's "
                                       f"{source}; a warm start keeps the geometry (drop --{key})")
            choice[key] = source
            reasons[key] = "from --init-from"
        choice["contrast"] = init_recipe.get("contrast", "none")
        if a.contrast not in ("auto", choice["contrast"]):
            raise D.TrainDataError(f"--contrast {a.contrast} differs from the --init-from "
                                   f"model's {choice['contrast']}; a warm start keeps the "
                                   "preprocessing (drop --contrast)")
        return {**choice, "stem": stem, "convs": None, "reasons": reasons, "stats": {}}
    stats: Dict[str, Any] = {}
    sizes: List[Tuple[int, int]] = []
    if "auto" in (a.height, a.width):
        sizes = D.image_sizes(real)
        if sizes:
            h, w, why = D.choose_geometry(sizes, max_len, time_pool)
            stats["probed_sizes"] = len(sizes)
        else:  # synthetic only: the classic 200x50, widened for long labels
            w = max(200, time_pool * D.FRAMES_PER_CHAR * max_len)
            h, why = 50, f"{w}x50: no real images (synthetic only)"
        if a.height == "auto" and a.width == "auto":
            choice["height"], choice["width"] = h, w
            reasons["geometry"] = why
        elif a.height == "auto":  # width given: keep the data's aspect ratio
            choice["width"] = a.width
            choice["height"] = int(round(min(max(a.width * h / w, 16), 4 * D.AUTO_HEIGHT[1])))
            reasons["geometry"] = f"height {choice['height']} from --width {a.width} and {why}"
        else:
            choice["height"] = a.height
            wid = max(time_pool * 2, int(round(a.height * w / h / time_pool)) * time_pool)
            choice["width"] = wid
            reasons["geometry"] = f"width {wid} from --height {a.height} and {why}"
    else:
        choice["height"], choice["width"] = a.height, a.width
        reasons["geometry"] = f"{a.width}x{a.height}: given"
    # colour and contrast: measured on the probed real images unless given
    choosers = (("color", a.color, D.choose_color, "colored_ink_share",
                 ("L", "no real images (synthetic only): grey")),
                ("contrast", a.contrast, D.choose_contrast, "level_span",
                 ("none", "no real images (synthetic only): pixels as they are")))
    for key, given, chooser, stat, synthetic in choosers:
        if given != "auto":
            value, why = given, "given"
        elif any(s.path is not None for s in real):
            value, why, measured = chooser(real)
            stats[stat] = round(measured, 4)
        else:
            value, why = synthetic
        choice[key] = value
        reasons[key] = f"{value}: {why}"
    channels = 3 if choice["color"] == "RGB" else 1
    budget = a.max_minutes * 60
    convs: Optional[Tuple[int, ...]] = None  # None: as given (or the default for a given stem)
    if stem == "auto" and a.height == "auto" and a.width == "auto":
        # images taller than 64 keep up to 80 rows where the finest graph still fits the budget
        tall = D.tall_geometry(sizes, max_len, time_pool, channels, budget, head)
        if tall is not None:
            choice["height"], choice["width"], reasons["geometry"] = tall
    auto_input = a.height == "auto" and a.width == "auto"  # the input may shrink to fit
    min_w = min(max(time_pool * 2, time_pool * D.FRAMES_PER_CHAR * max_len), choice["width"])
    if stem == "auto":  # the finest graph the budget has room for, at the chosen input
        stem, convs, reasons["stem"] = D.choose_graph(choice["height"], choice["width"],
                                                      channels, budget, S4_MIN_HEIGHT, head,
                                                      min_w if auto_input else None, time_pool)
    if auto_input:
        # Never an input that cannot run enough steps in the budget (the cost model of data.py).
        h, w, why = D.fit_budget(choice["height"], choice["width"], channels, stem,
                                 budget, min_w, time_pool, head)
        if why:
            choice["height"], choice["width"] = h, w
            reasons["geometry"] = (f"{w}x{h}: " if why.startswith("shrunk") else "") \
                + reasons["geometry"] + f"; {why}"
    return {**choice, "stem": stem, "convs": convs, "reasons": reasons, "stats": stats}


def prepare(a: argparse.Namespace) -> Any:
    """Find, check, split and load the data; return a :class:`fit.Prepared` (no TensorFlow)."""
    from ..preprocess import make_recipe
    from .fit import Prepared

    try:
        filters = tuple(int(f) for f in a.filters.split(",")) if a.filters else ()
    except ValueError:
        raise D.TrainDataError(f"--filters must be three ints like 16,32,48; got {a.filters!r}") \
            from None
    try:
        convs = tuple(int(c) for c in (DEFAULT_CONVS if a.convs == "auto" else a.convs)
                      .split(","))
    except ValueError:
        raise D.TrainDataError(f"--convs must be three ints like 1,2,2; got {a.convs!r}") from None
    arch: Dict[str, Any] = {"size": a.size, "filters": filters, "dense": a.dense, "rnn": a.rnn,
                            "time_pool": a.time_pool, "convs": convs, "stem": a.stem,
                            "skip": a.skip == "on", "head": a.head, "dropout": a.dropout}
    init, init_recipe = _read_init_from(a.init_from) if a.init_from is not None else (None, None)
    if init is not None:
        # The warm start fixes the graph: take the earlier run's architecture and recipe.
        src = init.model_config.to_dict()
        arch = {k: src[k] for k in ("size", "filters", "dense", "rnn", "time_pool")}
        arch["filters"] = tuple(arch["filters"])
        arch["convs"] = tuple(src.get("convs", (1, 1, 1)))
        arch["dropout"] = src.get("dropout", 0.2)
        arch["stem"] = src.get("stem", "pool")
        arch["skip"] = bool(src.get("skip", False))
        arch["head"] = src.get("head", "lstm")
        _check_warm_start_arch(a, arch)
    lengths = D.parse_length_range(a.synthetic_length)
    charset = D.check_charset(a.charset) if a.charset is not None else None

    if a.data_dir is not None and a.labels is None and a.label_pattern is None:
        found = find_labels_file(a.data_dir)
        if found is not None:  # its file names (captcha1.jpg) are not the labels
            a.labels = found
            _log(a.quiet, f"labels: {found} (found in --data-dir; --label-pattern reads the "
                          "file names instead)")
    real = D.find_samples(a.data_dir, labels_file=a.labels, label_pattern=a.label_pattern,
                          recursive=a.recursive, case=a.case)
    if real and a.labels is None and a.label_pattern is None \
            and all(LABEL_ID_NAME.match(Path(s.name).stem) for s in real):
        # Every name is LABEL_ID (swust's 113d_77b2c2f4...jpg): whole stems would be 37-character
        # labels of hex digits. Read what captcha-edge eval's default reads, the part before "_".
        # Only where what follows is an ID (a number, a hash, a UUID): 0001_ab3d keeps its stem.
        a.label_pattern = STEM_PREFIX_PATTERN
        _log(a.quiet, f"labels: the file name up to its '_' (every name is LABEL_ID, e.g. "
                      f"{Path(real[0].name).name!r}); --label-pattern '^(.+)$' reads whole names")
        real = D.find_samples(a.data_dir, label_pattern=a.label_pattern, recursive=a.recursive,
                              case=a.case)
    elif real and a.labels is None and a.label_pattern is None \
            and all(ID_LABEL_NAME.match(Path(s.name).stem) for s in real):
        # 0001_ab3d: the number may be an index (ID_LABEL) or part of the text; only the user
        # knows, and a wrong guess trains on the wrong labels for the whole budget, so say it.
        print(f"captcha-train: warning: every file name is NUMBER_TEXT (e.g. "
              f"{Path(real[0].name).name!r}), read whole as the label {real[0].label!r}; if the "
              f"number is an index, add --label-pattern '^\\d+_(.+)$'", file=sys.stderr)
    if charset is None:
        charset = D.infer_charset([s.label for s in real]) if real \
            else D.DEFAULT_SYNTHETIC_CHARSET
    syn_seed = a.seed if a.synthetic_seed is None else a.synthetic_seed
    synthetic = D.synthetic_samples(a.synthetic, charset, lengths, syn_seed) if a.synthetic else []
    everything = real + synthetic
    longest, unreadable = D.longest_readable_label(everything)
    if unreadable:  # skipped by the load below, which says so; they bound nothing
        skipped = {s.name for s in unreadable}
        everything = [s for s in everything if s.name not in skipped]
    longest = max(longest, 1)
    chosen = _choose_input(a, real, longest, int(arch["time_pool"]), init_recipe,
                           str(arch["stem"]), str(arch["head"]))
    height, width, color = chosen["height"], chosen["width"], chosen["color"]
    arch["stem"] = chosen["stem"]
    if chosen["convs"] is not None and a.convs == "auto":
        arch["convs"] = tuple(chosen["convs"])
    try:
        recipe = make_recipe(height=height, width=width, resize=a.resize,
                             resample=a.resample, color=color,
                             contrast=chosen["contrast"])
        if init_recipe is not None:  # same pixels as the run it starts from
            recipe = make_recipe(**{k: v for k, v in init_recipe.items()
                                    if k in recipe or k in OPTIONAL_RECIPE})
        cfg_probe = ModelConfig(num_classes=2, height=height, width=width,
                                channels=3 if color == "RGB" else 1, **arch)
    except ValueError as exc:
        raise D.TrainDataError(f"model options (--height/--width/--filters/...): {exc}") from None
    max_len = D.check_labels(everything, charset, cfg_probe.time_steps)
    for key, why in chosen["reasons"].items():
        _log(a.quiet, f"input {key}: {why}")

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
    if a.charset is None and loaded.unreadable and loaded.samples:
        # The labels of files that could not be read are no symbols to learn: an unreadable
        # "zzzz.png" must not add a 'z' the model never sees.
        readable = D.infer_charset([s.label for s in loaded.samples])
        if readable != charset:
            charset = readable
            synthetic = D.synthetic_samples(a.synthetic, charset, lengths, syn_seed) \
                if a.synthetic else []
    if loaded.unreadable:  # nor may their labels set the longest label logged and recorded
        max_len = D.check_labels(loaded.samples + synthetic, charset, cfg_probe.time_steps)
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
    cfg = ModelConfig(num_classes=len(charset) + 1, height=height, width=width,
                      channels=cfg_probe.channels, **arch)

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
        "case": a.case,
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
        # Keys added for any-style training (issue 11); readers treat them as optional.
        "input_choice": {"height": height, "width": width, "color": color,
                         "contrast": chosen["contrast"],
                         "reasons": chosen["reasons"], **chosen["stats"]},
        "init_from": str(init.weights) if init is not None else None,
    }
    return Prepared(
        charset=charset, recipe=recipe, model_config=cfg, max_label_length=max_len,
        train_images=images[tr_idx], train_labels=[s.label for s in train_s],
        train_names=[s.name for s in train_s],
        val_images=images[va_idx], val_labels=[s.label for s in val_s],
        val_names=[s.name for s in val_s], meta=meta, init_from=init)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``captcha-train``; returns the exit code."""
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        _check_args(a)
        augment = None if a.no_augment else parse_augment(a.augment)
        prepared = prepare(a)
        try:
            with quiet_native_stderr():
                import tensorflow  # noqa: F401
        except ImportError:
            raise D.TrainDataError('captcha-train needs TensorFlow: pip install '
                                   '"captcha-edge[train]"') from None
        from .fit import Options, train

        if a.epochs == "auto":
            epochs = AUTO_EPOCHS_CAP if a.max_minutes else AUTO_EPOCHS_NO_BUDGET
            min_steps = MIN_EPOCH_STEPS
        else:
            epochs, min_steps = a.epochs, 0
        opts = Options(out=a.out, epochs=epochs, batch_size=a.batch_size, learning_rate=a.lr,
                       min_epoch_steps=min_steps,
                       warmup_epochs=a.warmup_epochs, warmup_steps=WARMUP_STEPS,
                       patience=a.patience, seed=a.seed,
                       augment=augment, augment_from=a.augment_from, resume=a.resume,
                       threads=a.threads,
                       max_minutes=a.max_minutes, budget_clock=a.budget_clock,
                       mixed_precision=a.mixed_precision, ema=a.ema,
                       verbose=0 if a.quiet else 1,
                       epochs_cap=a.epochs == "auto" and bool(a.max_minutes))
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
