"""Training data: find labelled images, draw synthetic ones, split them, load them as arrays.

Nothing here imports TensorFlow, so every user error (bad folder, bad labels, bad charset) is
found in a second, before the slow import. Images go through :func:`captcha_edge.preprocess.to_array`,
the very function the runtime uses, so training and inference see identical pixels.
"""
from __future__ import annotations

import hashlib
import random
import re
import string
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import labels as labels_io
from .._common import IMAGE_SUFFIXES, not_a_folder
from ..errors import CaptchaEdgeError, ImageError
from ..preprocess import to_array

#: More than this share of unreadable files stops the run: the folder is probably wrong.
MAX_UNREADABLE = 0.05

#: ``--case`` values: keep labels as written, or lower-case them (case-insensitive sites).
CASE_MODES = ("keep", "fold")

#: Charset used by ``--synthetic`` when neither ``--charset`` nor real labels give one.
DEFAULT_SYNTHETIC_CHARSET = string.digits + string.ascii_lowercase


class TrainDataError(CaptchaEdgeError, ValueError):
    """A user error in the training data or options; the CLI prints it and exits with code 2."""


@dataclass(frozen=True)
class Sample:
    """One labelled image: ``name`` is its stable id (relative path, or ``synthetic/...``)."""

    name: str
    label: str
    path: Optional[Path] = None
    seed: Optional[int] = None  # synthetic samples are redrawn from (seed, index)


# ----------------------------------------------------------------------------------------------
# Finding labelled files


def _image_files(root: Path, recursive: bool) -> List[Path]:
    pattern = "**/*" if recursive else "*"
    files = [p for p in root.glob(pattern)
             if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")]
    return sorted(files)


def label_from_name(stem: str, pattern: Optional[re.Pattern[str]]) -> Optional[str]:
    """Label of a file stem: the stem itself, or the first group of ``pattern`` searched in it."""
    if pattern is None:
        return stem
    m = pattern.search(stem)
    if m is None:
        return None
    return m.group(1) if pattern.groups else m.group(0)


def compile_label_pattern(text: str) -> re.Pattern[str]:
    """Compile ``--label-pattern``; it must have exactly one capturing group (the label)."""
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise TrainDataError(f"--label-pattern {text!r} is not a valid regular expression ({exc})")
    if pattern.groups < 1:
        raise TrainDataError(f"--label-pattern {text!r} has no capturing group; wrap the label "
                             "part in parentheses, e.g. '^([a-z0-9]+)-\\d+$'")
    return pattern


def read_labels_file(path: Path) -> List[Tuple[str, str]]:
    """Read a ``filename,label`` CSV or TSV (:func:`captcha_edge.labels.read_labels_file`)."""
    try:
        return labels_io.read_labels_file(path)
    except labels_io.LabelsFileError as exc:
        raise TrainDataError(f"--labels {path}: {exc}") from None


def find_samples(data_dir: Optional[Path], *, labels_file: Optional[Path] = None,
                 label_pattern: Optional[str] = None, recursive: bool = False,
                 case: str = "keep") -> List[Sample]:
    """List the labelled images of a folder (label = stem, or ``label_pattern``) or labels file.

    ``case="fold"`` lower-cases every label (sites whose captchas ignore case); ``"keep"``
    leaves them as written.

    Raises:
        TrainDataError: missing folder, no images, a name the pattern does not match, duplicate
            rows in the labels file.
    """
    if case not in CASE_MODES:
        raise TrainDataError(f"--case must be one of {', '.join(CASE_MODES)}; got {case!r}")
    found = _find_samples(data_dir, labels_file, label_pattern, recursive)
    if case == "fold":
        found = [Sample(x.name, x.label.lower(), x.path, x.seed) for x in found]
    return found


def _find_samples(data_dir: Optional[Path], labels_file: Optional[Path],
                  label_pattern: Optional[str], recursive: bool) -> List[Sample]:
    if labels_file is not None:
        if not labels_file.is_file():
            raise TrainDataError(f"--labels {labels_file}: no such file")
        base = data_dir if data_dir is not None else labels_file.parent
        if not base.is_dir():
            raise TrainDataError(f"--data-dir {base}: no such folder")
        return [Sample(Path(fname).as_posix(), label, base / fname)
                for fname, label in read_labels_file(labels_file)]
    if data_dir is None:
        return []
    if not data_dir.is_dir():
        raise TrainDataError(f"--data-dir {data_dir}: {not_a_folder(data_dir)}")
    files = _image_files(data_dir, recursive)
    if not files:
        hint = "" if recursive else " (add --recursive to search sub-folders)"
        raise TrainDataError(f"--data-dir {data_dir}: no image files "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))}){hint}")
    pattern = compile_label_pattern(label_pattern) if label_pattern else None
    out = []
    for p in files:
        from_name = label_from_name(p.stem, pattern)
        if not from_name:
            raise TrainDataError(f"--label-pattern {label_pattern!r} does not match file name "
                                 f"{p.name!r} (or matches an empty label)")
        out.append(Sample(p.relative_to(data_dir).as_posix(), from_name, p))
    return out


# ----------------------------------------------------------------------------------------------
# Charset and label checks


def infer_charset(labels: Sequence[str]) -> str:
    """Sorted set of the characters in ``labels``."""
    return "".join(sorted(set("".join(labels))))


def check_charset(charset: str) -> str:
    """Validate ``--charset``: non-empty, no duplicates."""
    if not charset:
        raise TrainDataError("--charset is empty")
    dups = sorted({c for c in charset if charset.count(c) > 1})
    if dups:
        raise TrainDataError(f"--charset has duplicate characters: {''.join(dups)!r}")
    return charset


def check_labels(samples: Sequence[Sample], charset: str, time_steps: int) -> int:
    """Check every label against ``charset`` and the CTC length bound; return the max length.

    CTC needs ``T >= 2*len + 1`` frames in the worst case (a blank between every pair of repeated
    characters), so a longer label could never be emitted.
    """
    allowed = set(charset)
    longest = 0
    limit = (time_steps - 1) // 2
    for s in samples:
        bad = sorted(set(s.label) - allowed)
        if bad:
            raise TrainDataError(f"{s.name}: label {s.label!r} has characters not in the charset: "
                                 f"{''.join(bad)!r} (charset {charset!r})")
        if len(s.label) > limit:
            raise TrainDataError(
                f"{s.name}: label {s.label!r} has {len(s.label)} characters but the model emits "
                f"{time_steps} frames, so at most {limit} fit (CTC needs T >= 2*len+1); "
                "use a wider --width or shorter labels")
        longest = max(longest, len(s.label))
    return longest


def longest_readable_label(samples: Sequence[Sample]) -> Tuple[int, List[Sample]]:
    """The longest label among the samples that can be read, and the unreadable ones found.

    Files are opened longest label first, only until one reads, so a folder whose images all
    read costs one decode: an unreadable ``zzzzzzzzzzzz.png`` must not widen the input (or fail
    an explicit ``--width``) before the full load skips it. Synthetic samples always read.
    """
    from ..preprocess import load_image

    bad: List[Sample] = []
    for s in sorted(samples, key=lambda x: len(x.label), reverse=True):
        if s.path is not None:
            try:
                load_image(s.path)
            except (ImageError, OSError):
                bad.append(s)
                continue
        return len(s.label), bad
    return 0, bad


# ----------------------------------------------------------------------------------------------
# Split


def is_val(name: str, val_fraction: float, salt: str = "") -> bool:
    """Deterministic split by a hash of the sample name: adding files never moves old ones."""
    h = hashlib.sha256(f"{salt}{name}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64 < val_fraction


def split_samples(samples: Sequence[Sample], val_fraction: float,
                  salt: str = "") -> Tuple[List[Sample], List[Sample]]:
    """Return ``(train, val)``; the assignment of a sample depends only on its name."""
    train: List[Sample] = []
    val: List[Sample] = []
    for s in samples:
        (val if is_val(s.name, val_fraction, salt) else train).append(s)
    return train, val


# ----------------------------------------------------------------------------------------------
# Synthetic captchas


class _SeededSecrets:
    """The three ``secrets`` functions that ``captcha.image`` calls, drawn from a seeded RNG."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)

    def choice(self, seq: Sequence[Any]) -> Any:
        return self._rng.choice(seq)


@contextmanager
def _seeded_captcha(rng: random.Random) -> Iterator[Any]:
    # captcha.image draws everything from the (unseedable) secrets module; swap in a seeded
    # stand-in for the duration so the same seed gives the same pictures.
    try:
        import captcha.image as ci
    except ImportError:
        raise TrainDataError("--synthetic needs the 'captcha' package: "
                             'pip install "captcha-edge[train]"') from None
    saved = getattr(ci, "secrets")
    setattr(ci, "secrets", _SeededSecrets(rng))
    try:
        yield ci
    finally:
        setattr(ci, "secrets", saved)


def parse_length_range(text: str) -> Tuple[int, int]:
    """``"5"`` -> (5, 5); ``"4-6"`` -> (4, 6)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not m:
        raise TrainDataError(f"--synthetic-length must be N or MIN-MAX (e.g. 4-6); got {text!r}")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    if lo < 1 or hi < lo:
        raise TrainDataError(f"--synthetic-length must satisfy 1 <= MIN <= MAX; got {text!r}")
    return lo, hi


def synthetic_samples(n: int, charset: str, lengths: Tuple[int, int], seed: int) -> List[Sample]:
    """``n`` synthetic sample descriptions (labels drawn from ``seed``; pictures drawn on load)."""
    rng = random.Random(f"captcha-edge-labels-{seed}")
    out = []
    for i in range(n):
        k = rng.randint(lengths[0], lengths[1])
        label = "".join(rng.choice(charset) for _ in range(k))
        out.append(Sample(f"synthetic/{seed}/{i:07d}", label, None, seed))
    return out


def draw_synthetic(sample: Sample, width: int, height: int) -> np.ndarray:
    """The RGB picture of a synthetic sample as a uint8 array; a pure function of (seed, name)."""
    rng = random.Random(f"captcha-edge-image-{sample.seed}-{sample.name}")
    with _seeded_captcha(rng) as ci:
        # The captcha fonts are sized for ~60 px high images; scale them with the height.
        sizes = tuple(max(8, round(s * height / 60)) for s in (42, 50, 56))
        gen = ci.ImageCaptcha(width=width, height=height, font_sizes=sizes)
        img = gen.generate_image(sample.label)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# Loading


@dataclass
class Loaded:
    """Preprocessed images and their samples (same order) plus the unreadable ones."""

    samples: List[Sample]
    images: np.ndarray  # uint8 (N, H, W)
    unreadable: List[Tuple[str, str]]  # (name, reason)


def load_samples(samples: Sequence[Sample], recipe: Mapping[str, Any], *,
                 progress: bool = False, desc: str = "loading") -> Loaded:
    """Preprocess every sample with ``to_array``; unreadable files are collected, not raised."""
    h, w = int(recipe["height"]), int(recipe["width"])
    arrays: List[np.ndarray] = []
    kept: List[Sample] = []
    bad: List[Tuple[str, str]] = []
    it: Any = samples
    if progress:
        try:
            from tqdm import tqdm
            it = tqdm(samples, desc=desc, unit="img", leave=False)
        except ImportError:
            pass
    for s in it:
        try:
            src: Any = s.path if s.path is not None else draw_synthetic(s, w, h)
            arrays.append(to_array(src, recipe))
        except ImageError as exc:
            bad.append((s.name, str(exc)))
            continue
        except OSError as exc:
            bad.append((s.name, f"{s.path}: {exc.strerror or exc}"))
            continue
        kept.append(s)
    images = np.stack(arrays) if arrays else np.zeros((0, h, w), np.uint8)
    return Loaded(kept, images, bad)


def check_unreadable(n_total: int, unreadable: Sequence[Tuple[str, str]],
                     limit: float = MAX_UNREADABLE) -> None:
    """Raise when every file, or more than ``limit`` of them, could not be read."""
    if not unreadable:
        return
    if len(unreadable) == n_total:
        raise TrainDataError(f"none of the {n_total} images could be read "
                             f"(first: {unreadable[0][1]})")
    if len(unreadable) > limit * n_total:
        raise TrainDataError(f"{len(unreadable)} of {n_total} images are unreadable "
                             f"(more than {limit:.0%}; first: {unreadable[0][1]})")


def encode_labels(labels: Sequence[str], charset: str,
                  max_len: int) -> Tuple[np.ndarray, np.ndarray]:
    """Labels -> (int32 (N, max_len) indices padded with 0, int32 (N,) lengths)."""
    index = {c: i for i, c in enumerate(charset)}
    codes = np.zeros((len(labels), max(1, max_len)), np.int32)
    lengths = np.zeros((len(labels),), np.int32)
    for i, lab in enumerate(labels):
        codes[i, :len(lab)] = [index[c] for c in lab]
        lengths[i] = len(lab)
    return codes, lengths


def summarize(samples: Sequence[Sample], charset: str) -> Dict[str, Any]:
    """Counts, label lengths and per-character frequencies, for the log and ``model.json``."""
    lengths: Dict[int, int] = {}
    chars: Dict[str, int] = {c: 0 for c in charset}
    for s in samples:
        lengths[len(s.label)] = lengths.get(len(s.label), 0) + 1
        for c in s.label:
            chars[c] = chars.get(c, 0) + 1
    return {
        "count": len(samples),
        "synthetic": sum(1 for s in samples if s.seed is not None),
        "label_lengths": {str(k): v for k, v in sorted(lengths.items())},
        "char_counts": chars,
    }


# ----------------------------------------------------------------------------------------------
# Input geometry and colour from the data (``--height/--width/--color auto``)

#: Frames the model should emit per label character: v2 (5 characters, 200 px, 25 frames) has
#: exactly this, and CTC needs at least 2 per character for repeated letters plus the blank.
FRAMES_PER_CHAR = 5
#: The auto height stays within these bounds (the conv stack pools the height by 8).
AUTO_HEIGHT = (32, 64)
#: ... except that images taller than 64 keep their height up to this one when the finest graph
#: still fits :data:`MIN_BUDGET_IMAGES` in the budget at the taller input (``tall_geometry``):
#: scratch-grey (200x80, thin glyphs under scratches) read 83.1 % of its unseen images at 240x80
#: against 77.9 % at 240x64, 30 CPU-minutes each (docs/train.md, "Tall inputs").
TALL_HEIGHT = 80
AUTO_MAX_WIDTH = 640
#: A pixel is "ink" when a channel differs from the image's median colour by more than this.
INK_DELTA = 48
#: An ink pixel is "coloured" when its max - min channel (chroma) reaches this.
CHROMA_MIN = 40
#: RGB is chosen when, in the median image, at least this share of the ink is coloured.
COLOR_INK_SHARE = 0.10
#: Images looked at for the choice (evenly spaced over the sorted names; deterministic).
PROBE_IMAGES = 300


@dataclass(frozen=True)
class InputChoice:
    """Chosen model input (``height``, ``width``, ``color``) and a one-line reason for each."""

    height: int
    width: int
    color: str
    reasons: Tuple[str, ...]
    stats: Dict[str, Any]


def _probe(samples: Sequence[Sample], limit: int = PROBE_IMAGES) -> List[Sample]:
    real = [s for s in samples if s.path is not None]
    if len(real) <= limit:
        return real
    step = len(real) / limit
    return [real[int(i * step)] for i in range(limit)]


def image_sizes(samples: Sequence[Sample]) -> List[Tuple[int, int]]:
    """(width, height) of the probed images, read from the headers only; unreadable ones skipped."""
    from PIL import Image

    out = []
    for s in _probe(samples):
        try:
            with Image.open(s.path) as im:  # type: ignore[arg-type]
                out.append(im.size)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return out


def colored_ink_share(img: Any) -> float:
    """Share of an image's ink (pixels unlike its median colour) that is coloured, in [0, 1].

    Grey captchas give 0; text and lines in several hues give a large share, which grey would
    merge by luminance.
    """
    from ..preprocess import to_rgb

    a = np.asarray(to_rgb(img), np.int16).reshape(-1, 3)
    ink = np.abs(a - np.median(a, axis=0)).max(axis=1) > INK_DELTA
    if not ink.any():
        return 0.0
    chroma = a[ink].max(axis=1) - a[ink].min(axis=1)
    return float(np.mean(chroma >= CHROMA_MIN))


def choose_color(samples: Sequence[Sample]) -> Tuple[str, str, float]:
    """``("L" | "RGB", reason, median coloured-ink share)`` for the probed real images.

    Rule: RGB when at least :data:`COLOR_INK_SHARE` of the ink is coloured in the median image
    (colour then tells apart strokes that grey would render alike: coloured letters over black
    dashes, coloured lines over dark digits); grey otherwise, which keeps the model smaller and
    identical to grey-only styles.
    """
    from ..preprocess import load_image

    shares = []
    for s in _probe(samples, min(PROBE_IMAGES, 200)):
        try:
            shares.append(colored_ink_share(load_image(s.path)))  # type: ignore[arg-type]
        except (ImageError, OSError):
            continue
    if not shares:
        return "L", "no real images to look at: grey", 0.0
    share = float(np.median(shares))
    if share >= COLOR_INK_SHARE:
        return "RGB", (f"{share:.0%} of the ink is coloured (median of {len(shares)} images; "
                       f"RGB from {COLOR_INK_SHARE:.0%}): colour separates strokes"), share
    return "L", (f"{share:.0%} of the ink is coloured (median of {len(shares)} images; RGB from "
                 f"{COLOR_INK_SHARE:.0%}): grey loses nothing"), share


#: ``--contrast auto`` stretches each image's levels (``contrast: stretch``) when the median
#: probed image spans fewer grey levels than this between its 1 % darkest and brightest pixels
#: (faint ink on light paper: 30-50; black-on-white styles, the shared ones included: > 150).
CONTRAST_SPAN_MAX = 100


def level_span(img: Any) -> int:
    """Grey levels between an image's 1 % darkest and 1 % brightest pixels (the stretch's cut)."""
    from ..preprocess import cut_levels, to_gray

    lo, hi = cut_levels(np.asarray(to_gray(img), np.uint8))
    return hi - lo


def choose_contrast(samples: Sequence[Sample]) -> Tuple[str, str, float]:
    """``("stretch" | "none", reason, median level span)`` for the probed real images.

    Rule: stretch when the median image spans fewer than :data:`CONTRAST_SPAN_MAX` grey levels
    (its ink then differs from the paper by a few dozen levels, and by a different amount in
    every image); leave the pixels as they are otherwise.
    """
    from ..preprocess import load_image

    spans = []
    for s in _probe(samples, min(PROBE_IMAGES, 200)):
        try:
            spans.append(level_span(load_image(s.path)))  # type: ignore[arg-type]
        except (ImageError, OSError):
            continue
    if not spans:
        return "none", "no real images to look at: pixels as they are", 0.0
    span = float(np.median(spans))
    if span < CONTRAST_SPAN_MAX:
        return "stretch", (f"the median image spans {span:g} grey levels (median of "
                           f"{len(spans)} images; stretch below {CONTRAST_SPAN_MAX}): each "
                           "image stretched to 0..255"), span
    return "none", (f"the median image spans {span:g} grey levels (median of {len(spans)} "
                    f"images; stretch below {CONTRAST_SPAN_MAX}): pixels as they are"), span


#: Training cost model (docs/train.md): milliseconds of one x86 core per training image (forward,
#: backward, Adam, augmentation) for the BiLSTM head (``--head lstm``), ~= BASE + PER_KPIX *
#: thousands of input pixels, x RGB for three channels, x the stem's factor. Fitted to
#: scripts/bench_train_speed.py on the 2-core dev machine (s4 stem, BiLSTM 128 with the skip,
#: batch 16): 160x32 grey 2.4 ms, 200x50 grey 2.8, 240x64 grey 3.8, 320x48 RGB 4.9, 408x64 RGB 6.8.
COST_MS_BASE = 1.5
COST_MS_PER_KPIX = 0.15
COST_RGB = 1.25
COST_STEM = {"s4": 1.0, "s2": 1.6, "pool": 2.3}
#: The same for the conv head (``--head conv``), per graph: ms ~= a + b x kilopixels + c x
#: width / 100 (the frames the head and the loss see) + d x kilopixels for RGB. Least squares
#: over 8 inputs from 160x32 grey to 408x64 RGB (Model.fit, batch 16, one thread, quiet machine,
#: 2026-12-06), within 10 % of every one: s4 1.30 ms at 160x32 grey, 2.36 at 240x64 grey, 5.55
#: at 408x64 RGB; s2 with convs 1,1,2 2.6, 5.8 and 13.3. The pool stem: s4 x COST_STEM["pool"].
COST_CONV: Dict[str, Tuple[float, float, float, float]] = {
    "s4": (0.25, 0.054, 0.53, 0.07),
    "s2": (0.13, 0.342, 0.24, 0.10),
}
#: The auto geometry leaves room for at least this many training images (passes, ~12k steps of
#: 16) in the time budget on ONE core; more cores only add headroom.
MIN_BUDGET_IMAGES = 200_000


def train_ms_per_image(height: int, width: int, channels: int, stem: str = "s4",
                       head: str = "lstm") -> float:
    """The cost model's milliseconds of one core per training image."""
    kpix = height * width / 1000.0
    if head == "conv":
        a, b, c, d = COST_CONV.get(stem, COST_CONV["s4"])
        ms = a + b * kpix + c * width / 100.0 + (d * kpix if channels == 3 else 0.0)
        return ms * (COST_STEM["pool"] if stem not in COST_CONV else 1.0)
    return (COST_MS_BASE + COST_MS_PER_KPIX * kpix * (COST_RGB if channels == 3 else 1.0)) \
        * COST_STEM.get(stem, COST_STEM["pool"])


#: ``--stem auto``: the graphs to choose from, finest first, as (stem, conv layers per block,
#: cost per training image against s4 with one conv a block, for the BiLSTM head; the conv
#: head's cost model has a fit of its own per graph). The first whose cost fits
#: :data:`MIN_BUDGET_IMAGES` in the budget is taken. s2 keeps twice s4's resolution in blocks 2
#: and 3 (fine strokes: dotted digits), and the second conv of block 3 doubles the receptive
#: field a frame sees (21 -> 37 pixels), which s2 alone lacked to leave CTC's blank plateau on
#: glyphs crossed by scratches. Measured on the panel at 6 CPU-minutes (issue 22,
#: benchmarks/results/stem_ab.json, docs/train.md); it cost 1.5-1.7x s4's CPU-s per epoch there.
AUTO_GRAPHS: Tuple[Tuple[str, Tuple[int, int, int], float], ...] = (
    ("s2", (1, 1, 2), 1.75),
    ("s4", (1, 1, 1), 1.0),
)


#: ``--stem auto`` takes the finest graph at an input shrunk to no less than this share of each
#: side (two of :func:`fit_budget`'s 10 % steps) rather than s4 at the full input.
FINE_MIN_SCALE = 0.8


def graph_ms_per_image(height: int, width: int, channels: int, stem: str, factor: float,
                       head: str) -> float:
    """Cost of one of :data:`AUTO_GRAPHS` (``factor``: its cost against s4, for the LSTM)."""
    if head == "conv":
        return train_ms_per_image(height, width, channels, stem, head)
    return train_ms_per_image(height, width, channels, "s4") * factor


def choose_graph(height: int, width: int, channels: int, budget_seconds: float,
                 min_height: int, head: str = "lstm", min_width: Optional[int] = None,
                 time_pool: int = 8) -> Tuple[str, Tuple[int, int, int], str]:
    """``(stem, convs, reason)`` for ``--stem auto``: the first of :data:`AUTO_GRAPHS` with room
    for :data:`MIN_BUDGET_IMAGES` training images in ``budget_seconds`` of one core; with no
    budget the finest; below ``min_height`` (what s4 needs) the s2 graph.

    With ``min_width`` (the narrowest input the labels allow) and the conv head, the finest graph
    also counts as fitting when :func:`fit_budget` makes room for it by shrinking the input to
    no less than :data:`FINE_MIN_SCALE` of each side: the fine graph at the smaller input read
    more than s4 at the full one (wide-color and varlen, 30 CPU-minutes; docs/train.md, "The
    fine graph at a smaller input")."""
    fine, cheap = AUTO_GRAPHS[0], AUTO_GRAPHS[-1]
    shrink = min_width is not None and head == "conv"

    def fits(stem: str, convs: Tuple[int, int, int], n: float, w: int, h: int) -> str:
        return (f"{stem}, convs {','.join(map(str, convs))}: ~{n / 1000:.0f}k training images "
                f"fit the {budget_seconds / 60:g}-min budget at {w}x{h}")

    if height < min_height:
        return fine[0], fine[1], f"{fine[0]}: a height of {height} is below s4's {min_height}"
    if budget_seconds <= 0:
        return fine[0], fine[1], f"{fine[0]}: no time budget"
    for stem, convs, factor in AUTO_GRAPHS:
        ms = graph_ms_per_image(height, width, channels, stem, factor, head)
        n = budget_seconds * 1000.0 / ms
        if n >= MIN_BUDGET_IMAGES or (stem, convs, factor) == cheap:
            why = fits(stem, convs, n, width, height)
            if stem != fine[0]:
                why += (f" (the finer {fine[0]} graph fits fewer than "
                        f"{MIN_BUDGET_IMAGES // 1000}k"
                        + (f", even at {FINE_MIN_SCALE:g}x each side)" if shrink else ")"))
            return stem, convs, why
        if stem == fine[0] and shrink:
            h, w, _ = fit_budget(height, width, channels, stem, budget_seconds,
                                 min_width or width, time_pool, head)
            n = budget_seconds * 1000.0 / train_ms_per_image(h, w, channels, stem, head)
            if n >= MIN_BUDGET_IMAGES and h >= FINE_MIN_SCALE * height - 0.5 \
                    and w >= FINE_MIN_SCALE * width - time_pool:
                return stem, convs, (fits(stem, convs, n, w, h)
                                     + f", shrunk from {width}x{height} (the finest graph may "
                                     f"shrink the input to {FINE_MIN_SCALE:g}x a side before a "
                                     f"cheaper graph is taken)")
    raise AssertionError("unreachable")  # pragma: no cover


def fit_budget(height: int, width: int, channels: int, stem: str, budget_seconds: float,
               min_width: int, time_pool: int = 8, head: str = "lstm") -> Tuple[int, int, str]:
    """Shrink ``height x width`` (both by 10 % a step, the height to 32 at the least and the width
    to ``min_width``) until the cost model fits :data:`MIN_BUDGET_IMAGES` training images in
    ``budget_seconds`` of one core. ``(height, width, reason)``; no budget: unchanged, "".
    """
    if budget_seconds <= 0:
        return height, width, ""

    def images(h: int, w: int) -> float:
        return budget_seconds * 1000.0 / train_ms_per_image(h, w, channels, stem, head)

    h, w = height, width
    lo_h = min(AUTO_HEIGHT[0], height)
    while images(h, w) < MIN_BUDGET_IMAGES and (h > lo_h or w > min_width):
        h = max(lo_h, int(round(h * 0.9)))
        w = max(min_width, int(round(w * 0.9 / time_pool)) * time_pool)
    ms = train_ms_per_image(h, w, channels, stem, head)
    why = (f"cost model ~{ms:.1f} ms per training image on one core, ~{images(h, w) / 1000:.0f}k "
           f"images in the {budget_seconds / 60:g}-min budget")
    if (h, w) != (height, width):
        why = f"shrunk from {width}x{height}: " + why + f" (at least {MIN_BUDGET_IMAGES // 1000}k)"
        if images(h, w) < MIN_BUDGET_IMAGES:
            why += "; still short: the smallest input the labels allow"
    return h, w, why


def choose_geometry(sizes: Sequence[Tuple[int, int]], max_label_length: int,
                    time_pool: int = 8, max_height: int = AUTO_HEIGHT[1]) -> Tuple[int, int, str]:
    """``(height, width, reason)`` from the images' ``(width, height)`` sizes.

    Rule: height = median image height within :data:`AUTO_HEIGHT` (the upper bound
    ``max_height``: :func:`tall_geometry` asks for :data:`TALL_HEIGHT`); width = height x median
    aspect ratio, rounded to ``time_pool``. When that gives fewer than
    :data:`FRAMES_PER_CHAR` frames per character of the longest label, the width grows to give
    them, and the height grows with it (keeping the aspect ratio) up to the height limit.
    The v2 style (200x50, 5 characters) comes out as 200x50.
    """
    if not sizes:
        raise ValueError("sizes is empty: no readable image to choose the input size from")
    if max_label_length < 1 or time_pool < 1:
        raise ValueError(f"max_label_length and time_pool must be >= 1; got {max_label_length}, "
                         f"{time_pool}")
    lo, hi = AUTO_HEIGHT[0], max_height
    med_h = float(np.median([h for _, h in sizes]))
    aspect = float(np.median([w / h for w, h in sizes]))
    height = int(round(min(max(med_h, lo), hi)))

    def fit(v: float) -> int:
        return max(time_pool * 2, int(round(v / time_pool)) * time_pool)

    width = fit(height * aspect)
    need = time_pool * FRAMES_PER_CHAR * max_label_length
    why = (f"median image {int(round(med_h * aspect))}x{med_h:g} (aspect {aspect:.2f}); "
           f"height {height}")
    if width < need:
        width = fit(need)
        height = int(round(min(max(width / aspect, height), hi)))
        why += (f", width raised to {width} for {FRAMES_PER_CHAR} frames per character of "
                f"{max_label_length}-character labels (height {height} keeps the aspect "
                f"{'ratio' if abs(width / height - aspect) < 0.05 * aspect else 'ratio as far as the height limit allows'})")
    width = min(width, AUTO_MAX_WIDTH)
    return height, width, f"{width}x{height}: {why}"


def tall_geometry(sizes: Sequence[Tuple[int, int]], max_label_length: int, time_pool: int,
                  channels: int, budget_seconds: float, head: str = "lstm"
                  ) -> Optional[Tuple[int, int, str]]:
    """The geometry of :func:`choose_geometry` with the height bound raised to
    :data:`TALL_HEIGHT` (never above the median image's height), when that is taller than the
    usual choice and the finest of :data:`AUTO_GRAPHS` still fits :data:`MIN_BUDGET_IMAGES` in
    ``budget_seconds`` at it; else None (images no taller than 64, no budget, or a budget
    without room for the finest graph: the usual height and graph)."""
    if not sizes or budget_seconds <= 0:
        return None
    usual = choose_geometry(sizes, max_label_length, time_pool)
    native = int(np.median([h for _, h in sizes]))  # taller than the images adds no detail
    h, w, why = choose_geometry(sizes, max_label_length, time_pool, min(TALL_HEIGHT, native))
    if h <= usual[0]:
        return None
    stem, _convs, graph_why = choose_graph(h, w, channels, budget_seconds, AUTO_HEIGHT[0], head)
    if stem != AUTO_GRAPHS[0][0]:  # only the cheaper graph would fit: the usual height
        return None
    return h, w, (f"{why}; taller than {AUTO_HEIGHT[1]} (up to {TALL_HEIGHT}): the {stem} graph "
                  f"still fits ({graph_why})")
