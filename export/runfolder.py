"""Read a ``captcha-train`` run folder and find its images again (numpy + Pillow, no TensorFlow).

``model.json`` lists the training and validation samples by name (a path relative to the data
folder, or ``synthetic/<seed>/<index>``); ``data.sources`` says where they came from. Calibration
uses the training names, verification the validation names, so the exported model is checked on
images it was neither trained nor calibrated on.
"""
from __future__ import annotations

import os
import random
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._common import IMAGE_SUFFIXES
from ..errors import CaptchaEdgeError
from ..preprocess import to_array
from ..train.runinfo import RunInfo

_SYNTH = re.compile(r"synthetic:(\d+):seed=(-?\d+):length=(\d+)-(\d+)$")


class ExportError(CaptchaEdgeError, ValueError):
    """A user error found by ``captcha-export``; the CLI prints it on one line and exits 2."""


@dataclass(frozen=True)
class Run:
    """A checked run folder: its ``model.keras`` and its validated ``model.json``."""

    path: Path
    model: Path
    info: RunInfo

    @property
    def meta(self) -> Dict[str, Any]:
        """``model.json`` as a plain dict."""
        return self.info.to_dict()

    @property
    def charset(self) -> str:
        return self.info.charset

    @property
    def blank(self) -> int:
        return self.info.blank

    @property
    def recipe(self) -> Dict[str, Any]:
        return dict(self.info.preprocess)


@dataclass
class ImageSet:
    """Preprocessed uint8 (N, H, W) images with their names and labels (labels may be None)."""

    names: List[str]
    labels: List[Optional[str]]
    images: np.ndarray
    skipped: List[str] = field(default_factory=list)  # "<sample name>: <problem>"
    origin: str = ""  # for messages: where the images came from, paths as the user gave them
    source: str = ""  # the same for metadata and reports: no absolute path (portable_name)


def portable_name(path: Path) -> str:
    """How a path may be stored in metadata and reports: never an absolute path of this machine.

    A relative path without ``..`` stays as given (``runs/site-a``); anything else becomes the
    last component of the resolved path (``/data/runs/site-a`` -> ``site-a``).
    """
    p = Path(path)
    if p.parts and not p.is_absolute() and ".." not in p.parts:
        return p.as_posix()
    return p.resolve().name or p.as_posix()


def open_run(path: Path) -> Run:
    """Check a run folder: ``model.keras`` present and a zip, ``model.json`` complete.

    Raises:
        ExportError: with the file and the problem.
    """
    if not path.exists():
        raise ExportError(f"{path}: no such run folder")
    if not path.is_dir():
        raise ExportError(f"{path}: not a folder; give the run folder written by captcha-train")
    model = path / "model.keras"
    info = path / "model.json"
    if not model.is_file():
        raise ExportError(f"{path}: no model.keras in the run folder (did captcha-train finish?)")
    if not info.is_file():
        raise ExportError(f"{path}: no model.json in the run folder (did captcha-train finish?)")
    if model.stat().st_size == 0 or not zipfile.is_zipfile(model):
        raise ExportError(f"{model}: corrupt model file (not a Keras .keras archive)")
    try:
        with zipfile.ZipFile(model) as zf:
            names = set(zf.namelist())
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ExportError(f"{model}: corrupt model file ({exc})") from None
    if bad is not None or "config.json" not in names or \
            not any(n.endswith(".weights.h5") for n in names):
        raise ExportError(f"{model}: corrupt model file (missing or damaged config/weights)")
    try:
        run_info = RunInfo.read(info)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    return Run(path, model, run_info)


def _sources(run: Run, data_dir: Optional[Path]) -> Tuple[Optional[Path], Optional[Path],
                                                         List[Tuple[int, int, int, int]]]:
    """(data folder, labels file, synthetic specs) from ``data.sources`` or ``--data-dir``."""
    folder: Optional[Path] = None
    labels: Optional[Path] = None
    synth: List[Tuple[int, int, int, int]] = []
    for s in run.info.data.get("sources", []):
        m = _SYNTH.match(str(s))
        if m:
            synth.append(tuple(int(g) for g in m.groups()))  # type: ignore[arg-type]
        elif str(s).lower().endswith((".csv", ".tsv", ".txt")):
            labels = Path(s)
        elif folder is None:
            folder = Path(s)
    if data_dir is not None:
        folder = data_dir
    return folder, labels, synth


def _resolve(run: Run, names: Sequence[str], data_dir: Optional[Path],
             what: str) -> List[Tuple[str, Optional[str], Any]]:
    """[(name, label, image source)] for sample ``names`` of the run."""
    from ..train import data as D  # numpy-only module of the [train] extra

    folder, labels_file, synth = _sources(run, data_dir)
    real_names = [n for n in names if not n.startswith("synthetic/")]
    by_name: Dict[str, Any] = {}
    if real_names:
        if folder is None and labels_file is None:
            raise ExportError(f"{run.path / 'model.json'} names no data folder for the {what} "
                              "images; pass --data-dir")
        if folder is not None and not folder.is_dir():
            raise ExportError(f"data folder {folder} (from {run.path / 'model.json'}) not found; "
                              "pass --data-dir")
        data = run.info.data
        try:
            found = D.find_samples(folder, labels_file=labels_file,
                                   label_pattern=data.get("label_pattern"),
                                   recursive=bool(data.get("recursive")),
                                   case=str(data.get("case") or "keep"))
        except D.TrainDataError as exc:
            raise ExportError(f"{what} images: {exc}") from None
        by_name.update({s.name: (s.label, s.path) for s in found})
    h, w = int(run.recipe["height"]), int(run.recipe["width"])
    for n_syn, seed, lo, hi in synth:
        for s in D.synthetic_samples(n_syn, run.charset, (lo, hi), seed):
            by_name[s.name] = (s.label, lambda s=s: D.draw_synthetic(s, w, h))
    return [(n, *by_name[n]) if n in by_name else (n, None, None) for n in names]


def load_split(run: Run, which: str, data_dir: Optional[Path], *, limit: Optional[int] = None,
               seed: int = 0) -> ImageSet:
    """Load the run's ``"train"`` or ``"val"`` images (a seeded random ``limit`` of them)."""
    key = f"{which}_files"
    names = list(run.info.val_files if which == "val" else run.info.train_files)
    if not names:
        raise ExportError(f"{run.path / 'model.json'} lists no {key}; pass --calib-dir or "
                          "--calib-synthetic" if which == "train" else
                          f"{run.path / 'model.json'} lists no {key}; use --no-verify")
    if limit is not None and limit < len(names):
        names = sorted(random.Random(seed).sample(names, limit), key=names.index)
    rows = _resolve(run, names, data_dir, "calibration" if which == "train" else "validation")
    split = "training" if which == "train" else "validation"
    return _load(rows, run.recipe, origin=f"the run's {split} split")


def load_dir(folder: Path, recipe: Dict[str, Any], *, limit: int, seed: int = 0) -> ImageSet:
    """Up to ``limit`` images of ``folder`` (seeded random pick), unlabelled."""
    if not folder.is_dir():
        raise ExportError(f"--calib-dir {folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ExportError(f"--calib-dir {folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if limit < len(files):
        files = sorted(random.Random(seed).sample(files, limit))
    rows = [(p.relative_to(folder).as_posix(), None, p) for p in files]
    return _load(rows, recipe, origin=f"--calib-dir {folder}",
                 source=f"--calib-dir {portable_name(folder)}")


def synthetic(n: int, run: Run, seed: int = 0) -> ImageSet:
    """``n`` freshly drawn synthetic captchas in the run's charset (lengths as in training)."""
    from ..train import data as D

    h, w = int(run.recipe["height"]), int(run.recipe["width"])
    longest = run.info.max_label_length or 5
    lengths = (max(1, min(4, longest)), longest)
    samples = D.synthetic_samples(n, run.charset, lengths, seed=10_000 + seed)
    rows = [(s.name, s.label, (lambda s=s: D.draw_synthetic(s, w, h))) for s in samples]
    return _load(rows, run.recipe, origin=f"{n} synthetic captchas (--calib-synthetic)")


def _load(rows: Sequence[Tuple[str, Optional[str], Any]], recipe: Dict[str, Any],
          origin: str, source: Optional[str] = None) -> ImageSet:
    from ..errors import ImageError

    names: List[str] = []
    labels: List[Optional[str]] = []
    arrays: List[np.ndarray] = []
    skipped: List[str] = []
    for name, label, src in rows:
        if src is None:
            skipped.append(f"{name}: not found")
            continue
        try:
            arrays.append(to_array(src() if callable(src) else src, recipe))
        except (ImageError, OSError) as exc:
            msg, where = str(exc), os.fspath(src) if isinstance(src, (str, os.PathLike)) else ""
            # Name the sample, not the path: the list goes into export_report.json.
            skipped.append(name + msg[len(where):] if where and msg.startswith(where)
                           else f"{name}: {msg}")
            continue
        names.append(name)
        labels.append(label)
    h, w = int(recipe["height"]), int(recipe["width"])
    images = np.stack(arrays) if arrays else np.zeros((0, h, w), np.uint8)
    return ImageSet(names, labels, images, skipped, origin,
                    origin if source is None else source)
