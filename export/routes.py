"""The integer routes ``captcha-export --int8`` tries, in order, until one holds the accuracy.

A route is one way to get a full-integer model (uint8 raw-pixel input, int8 compute, no float
op): which graph is converted and which images calibrate it. ``--int8`` converts the first
(``plain``), verifies it, and only when its sequence accuracy is more than ``--max-drop`` below
the Keras model's converts the next, and so on. It keeps the first route that passes, or else the
best one tried (highest sequence accuracy, then frame agreement), and says that none passed. The
metadata records the route (``int8_route``) and ``export_report.json`` lists every route tried.

Nothing here imports TensorFlow: conversion goes through the CLI's worker process (passed in as a
function), verification through ai-edge-litert (:mod:`captcha_edge.export.verify`).
"""
from __future__ import annotations

import argparse
import copy
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class Route:
    """One way to an integer model."""

    name: str
    graph: str  # how the graph is rebuilt: "tf_keras" (fused LSTM) or "unroll"
    calibration: str  # "given": as the user chose; "wide": every training image + jittered copies
    summary: str
    #: what is done to the rebuilt model's weights before conversion, the float function kept:
    #: "none", "equalize" (export/equalize.py: the first conv's output channels rescaled so
    #: that one int8 scale fits them all, the next conv's weights divided back),
    #: "round-first-conv" (export/rounding.py: the first conv's int8 weights searched, the
    #: mean error moved into the bias), "round-convs" (the same for every conv) or
    #: "fine-tune" (export/finetune.py: trained on with int8-rounded weights; the float
    #: function changes)
    transform: str = "none"
    #: what the route acts on, for ordering the ladder by the diagnosis (:func:`order`):
    #: "first-conv" (the first convolution's activation ranges or weights), "ranges" (every
    #: calibrated range, through the calibration set) or "model" (every weight: always last)
    targets: str = "ranges"


#: In the order ``--int8`` tries them when the diagnosis names nothing (else :func:`order`).
ROUTES: Tuple[Route, ...] = (
    Route("plain", "tf_keras", "given",
          "the graph as trained (an LSTM head fused), calibrated on the chosen images "
          "(--calib-*)"),
    Route("wide-calibration", "tf_keras", "wide",
          "the graph as trained, calibrated on up to 500 training images (WIDE_CALIB_SIZE) plus "
          "copies with jittered contrast, brightness and noise, so the ranges cover what "
          "the model meets"),
    Route("equalize", "tf_keras", "given",
          "the first conv's output channels rescaled so that each gets the same share of "
          "relu1's one int8 scale as of conv2's weight scales (BatchNorm gamma/beta "
          "times s, the next conv's input weights divided by s: the same float model); "
          "calibrated on the chosen images",
          transform="equalize", targets="first-conv"),
    Route("first-conv-rounding", "tf_keras", "given",
          "the first conv's BatchNorm folded by hand and its int8 weights chosen (floor or "
          "ceiling, whichever errs less on the calibration images' patches) with the mean "
          "error moved into the bias, so the converter keeps them; calibrated on the chosen "
          "images", transform="round-first-conv", targets="first-conv"),
    Route("conv-rounding", "tf_keras", "given",
          "first-conv-rounding for every conv that BatchNorm follows, in graph order, each on "
          "the inputs the rounded convs before it give; calibrated on the chosen images",
          transform="round-convs", targets="first-conv"),
    Route("fine-tune", "tf_keras", "given",
          "quantization-aware fine-tuning: 300 more steps on the run's training images with "
          "every int8 weight rounded to its grid in the forward pass (straight-through "
          "gradients), then calibrated on the chosen images; the float model changes, so it "
          "comes last", transform="fine-tune", targets="model"),
)
# Measured and left out (docs/export.md): the unrolled LSTM ("--route unroll" calibrated the
# same way) kept a float SPLIT op, was 46 % of float32's size and no more accurate than plain.
ROUTE_NAMES: Tuple[str, ...] = tuple(r.name for r in ROUTES)

#: Upper bound on the training images the wide calibration reads (before the jittered copies).
WIDE_CALIB_SIZE = 500
#: Upper bound on the training images the fine-tune route trains on.
FINE_TUNE_IMAGES = 4000


def get(name: str) -> Route:
    """The route called ``name``.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    for r in ROUTES:
        if r.name == name:
            return r
    raise ValueError(f"unknown int8 route {name!r}; valid routes: {', '.join(ROUTE_NAMES)}")


def ladder(first: str = "plain", only: bool = False) -> List[Route]:
    """The routes to try: ``first`` and, unless ``only``, the ones after it."""
    start = ROUTE_NAMES.index(get(first).name)
    return [ROUTES[start]] if only else list(ROUTES[start:])


def jitter(images: np.ndarray, copies: int = 1, seed: int = 0) -> np.ndarray:
    """``images`` plus ``copies`` jittered versions of each: contrast x(0.7..1.3) about the mean,
    brightness +-12, Gaussian noise of std 0..8 grey levels (training's augmentation ranges for
    the photometric changes, the ones that move activation ranges), as uint8 (N*(1+copies), H,
    W[, C]). Grey (N, H, W) and colour (N, H, W, C) images alike: one contrast and brightness per
    image, as training draws them."""
    if images.ndim not in (3, 4) or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W) or (N, H, W, C); got {images.dtype} "
                         f"{images.shape}")
    rng = np.random.default_rng(seed)
    out = [images]
    x = images.astype(np.float32)
    n = len(images)
    per_image = (n,) + (1,) * (images.ndim - 1)
    for _ in range(copies):
        mean = x.mean(axis=tuple(range(1, images.ndim)), keepdims=True)
        c = rng.uniform(0.7, 1.3, per_image).astype(np.float32)
        b = rng.uniform(-12, 12, per_image).astype(np.float32)
        std = rng.uniform(0, 8, per_image).astype(np.float32)
        y = (x - mean) * c + mean + b + rng.standard_normal(x.shape).astype(np.float32) * std
        out.append(np.clip(np.rint(y), 0, 255).astype(np.uint8))
    return np.concatenate(out)


def wide_calibration(run: Any, data_dir: Optional[Path], seed: int) -> Any:
    """The wide route's calibration set (an ImageSet): up to :data:`WIDE_CALIB_SIZE` images of
    the run's training split, each followed by one :func:`jitter` copy (named ``NAME~jitter``)."""
    from .runfolder import ImageSet, load_split

    more = load_split(run, "train", data_dir, limit=WIDE_CALIB_SIZE, seed=seed)
    return ImageSet(names=more.names + [f"{n}~jitter" for n in more.names],
                    labels=more.labels + more.labels,
                    images=jitter(more.images, copies=1, seed=seed), skipped=more.skipped,
                    origin=f"{more.origin}, plus one jittered copy of each image",
                    source="the run's training split, plus one jittered copy of each image")


@dataclass
class Trial:
    """One route converted and verified (or failed)."""

    route: str
    graph: str
    calibration_images: int
    seq_acc: Optional[float] = None
    cer: Optional[float] = None
    agreement: Optional[float] = None
    drop_pp: Optional[float] = None
    tflite_size: Optional[int] = None
    float_compute_ops: Optional[List[str]] = None
    passed: bool = False
    error: Optional[str] = None
    #: the fine-tune route: frame agreement with the fine-tuned float model it was converted
    #: from (``agreement`` is with the trained model, as for every route)
    own_float_agreement: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def best(trials: Sequence[Trial]) -> Optional[Trial]:
    """The first passing trial, else the most accurate one without float ops (then any);
    ``trials`` are in the order they were tried."""
    for t in trials:
        if t.passed:
            return t
    done = [t for t in trials if t.error is None and t.seq_acc is not None]
    clean = [t for t in done if not t.float_compute_ops] or done
    if not clean:
        return None
    order = {id(t): k for k, t in enumerate(trials)}  # a tie goes to the earlier route
    return max(clean, key=lambda t: (t.seq_acc, t.agreement or 0.0, -order[id(t)]))


#: (route, calibration images) -> flatbuffer bytes, or an error message.
ConvertFn = Callable[[Route, np.ndarray], Any]
#: flatbuffer -> (seq_acc, cer, frame agreement)
ScoreFn = Callable[[bytes], Tuple[float, float, float]]


def try_routes(routes: Sequence[Route], convert: ConvertFn, score: ScoreFn,
               calibration: Callable[[Route], np.ndarray], keras_acc: float, max_drop: float,
               *, first: Optional[Tuple[Any, np.ndarray]] = None,
               say: Callable[[str], None] = lambda s: None) -> Tuple[List[Trial], Dict[str, bytes]]:
    """Convert and score ``routes`` in order until one loses at most ``max_drop`` pp.

    ``first`` is the result the CLI already has for ``routes[0]`` (flatbuffer bytes or an error
    message, and its calibration images), so it is not converted twice.
    Returns the trials and the flatbuffers by route name.
    """
    from . import verify

    trials: List[Trial] = []
    files: Dict[str, bytes] = {}
    for k, route in enumerate(routes):
        if k == 0 and first is not None:
            res, cal = first
        else:
            cal = calibration(route)
            say(f"[int8] trying route {route.name} ({len(cal)} calibration images): "
                f"{route.summary}")
            res = convert(route, cal)
        t = Trial(route.name, route.graph, int(len(cal)))
        if not isinstance(res, (bytes, bytearray)):
            t.error = str(res)
            trials.append(t)
            say(f"[int8] route {route.name} failed: {t.error}")
            continue
        flat = bytes(res)
        files[route.name] = flat
        t.tflite_size = len(flat)
        t.float_compute_ops = verify.float_compute_ops(flat)
        t.seq_acc, t.cer, t.agreement = score(flat)
        t.drop_pp = 100 * (keras_acc - t.seq_acc)
        t.passed = t.drop_pp <= max_drop and not t.float_compute_ops
        trials.append(t)
        say(f"[int8] route {route.name}: seq acc {100 * t.seq_acc:.2f} % "
            f"({t.drop_pp:+.2f} pp below Keras), frame agreement {100 * t.agreement:.2f} %"
            + (" - passes" if t.passed else ""))
        if t.passed:
            break
    return trials, files


def fine_tune_job(a: argparse.Namespace, run: Any, work: Path, graph: str,
                  check: Optional[Tuple[Path, Sequence[str]]] = None) -> Dict[str, Any]:
    """The worker job's ``fine_tune`` entry (:func:`captcha_edge.export.convert.transform`):
    up to :data:`FINE_TUNE_IMAGES` labelled training images saved in ``work``, and the
    validation images (a saved .npy and their texts) the fine-tuned float model is scored on.

    Raises:
        ExportError: the training images cannot be read or have no labels.
    """
    from .runfolder import ExportError, load_split

    train = load_split(run, "train", a.data_dir, limit=FINE_TUNE_IMAGES, seed=a.seed)
    if not train.names or any(lbl is None for lbl in train.labels):
        raise ExportError(f"the fine-tune route needs the labelled training images of "
                          f"{run.path}; pass --data-dir")
    index = {c: k for k, c in enumerate(run.charset)}
    path = work / "fine_tune_images.npy"
    np.save(path, train.images)
    job: Dict[str, Any] = {
        "images": str(path), "labels": [[index[c] for c in str(t)] for t in train.labels],
        "blank": run.blank, "model_config": run.info.model_config.to_dict(), "route": graph,
        "seed": a.seed}
    if check is not None:
        job["check"] = {"images": str(check[0]), "texts": list(check[1]),
                        "charset": run.charset, "probs_out": str(work / "fine_tuned_probs.npy")}
    return job


def cli_convert(a: argparse.Namespace, run: Any, work: Path, keep_log: Path,
                worker: Callable[..., Dict[str, Any]],
                check: Optional[Tuple[Path, Sequence[str]]] = None,
                transforms: Optional[Dict[str, Any]] = None,
                jobs: Optional[Dict[str, Any]] = None,
                clips: Optional[Dict[str, Any]] = None) -> ConvertFn:
    """A :data:`ConvertFn` that runs the CLI's worker process for one route (its own folder).
    What each route's weight transform did goes into ``transforms``, the fine-tune job into
    ``jobs`` and what the logit clip did (export/logitclip.py) into ``clips`` (by route name)."""
    def convert(route: Route, cal: np.ndarray) -> Any:
        sub = work / f"route-{route.name}"
        sub.mkdir(exist_ok=True)
        np.save(sub / "calib.npy", cal)
        b = copy.copy(a)
        b.route = route.graph
        b.transform = route.transform
        b.fine_tune = None
        if route.transform == "fine-tune":
            from .runfolder import ExportError

            try:
                b.fine_tune = fine_tune_job(a, run, sub, route.graph, check)
            except ExportError as exc:  # this route fails; the ones tried keep their files
                return str(exc)
        if jobs is not None and b.fine_tune is not None:
            jobs[route.name] = b.fine_tune
        res = worker(b, run, ["int8"], sub, sub / "calib.npy", None, keep_log).get("int8")
        if isinstance(res, dict):
            if transforms is not None and res.get("transform") is not None:
                transforms[route.name] = res["transform"]
            if clips is not None and res.get("logit_clip") is not None:
                clips[route.name] = res["logit_clip"]
            return Path(res["path"]).read_bytes()
        return str(res)
    return convert


def _scorer(images: np.ndarray, labels: Sequence[str], charset: str, blank: int,
            reference: np.ndarray) -> ScoreFn:
    from . import verify

    def score(flat: bytes) -> Tuple[float, float, float]:
        probs, _ = verify.run_model(flat, images, num_threads=1, reset=verify.is_stateful(flat))
        acc, cer = verify.scores(probs, labels, charset, blank)
        return acc, cer, float(np.mean(probs.argmax(-1) == reference.argmax(-1)))
    return score


def names_first_conv(tensor: str) -> bool:
    """Whether a diagnosis row's tensor name is the first convolution's (its fused conv, batch
    norm and ReLU: ``crnn/relu1/Relu;crnn/bn1/...;crnn/conv1/Conv2D``)."""
    return any(part in ("conv1", "bn1", "relu1") for part in re.split(r"[;/:]", tensor))


def suggestion(diagnosis: Optional[Dict[str, Any]]) -> Optional[str]:
    """What the diagnosis names, as a :attr:`Route.targets` value: ``"first-conv"`` when the
    layer whose float copy recovers the most (frame agreement, then sequence accuracy) is the
    first convolution and it recovers something; ``"ranges"`` for any other layer; None when
    there is no diagnosis or no layer recovers anything."""
    if not diagnosis or "error" in diagnosis:
        return None
    for row in diagnosis.get("worst") or []:
        if row.get("agreement_gain_pp", 0) <= 0 and row.get("gain_pp", 0) <= 0:
            continue
        return "first-conv" if names_first_conv(str(row.get("tensor", ""))) else "ranges"
    return None


def order(routes: Sequence[Route], diagnosis: Optional[Dict[str, Any]]) -> List[Route]:
    """``routes`` with the ones acting on what the diagnosis names first (each group keeps the
    table's order); unchanged when the diagnosis names nothing."""
    want = suggestion(diagnosis)
    if want is None:
        return list(routes)
    return ([r for r in routes if r.targets == want]
            + [r for r in routes if r.targets != want])


def choose_for_cli(a: argparse.Namespace, run: Any, work: Path, results: Dict[str, Any],
                   cal: Any, val: Any, keras_probs: Optional[np.ndarray],
                   keras_acc: Optional[float], *, worker: Callable[..., Dict[str, Any]],
                   keep_log: Path, say: Callable[[str], None]) -> Dict[str, Any]:
    """The CLI's int8 step after the first conversion: try routes, diagnose; update ``results``.

    The plain route's file is scored first. When it loses more than ``--max-drop`` (or with
    ``--diagnose``) it is diagnosed, and the other routes are tried in the order the diagnosis
    suggests (:func:`order`); the chosen route, if not plain, is diagnosed too.
    ``results["int8"]`` (the worker's result for the plain route) is replaced by the chosen
    route's file. Returns ``{"route", "graph", "trials", "passed", "diagnosis", "order"}`` for
    the metadata and the report.
    """
    first = results.get("int8")
    plain_flat = Path(first["path"]).read_bytes() if isinstance(first, dict) else str(first)
    out: Dict[str, Any] = {"route": "plain" if a.int8_route == "auto" else a.int8_route,
                           "graph": a.route, "trials": [], "passed": None,
                           "diagnosis": None}
    if val is None or keras_probs is None or keras_acc is None:
        return out  # --no-verify: nothing to measure a drop against
    labels = [str(x) for x in val.labels]
    score = _scorer(val.images, labels, run.charset, run.blank, keras_probs)
    wide: Dict[str, np.ndarray] = {}

    forced = a.int8_route != "auto"

    def calibration(route: Route) -> np.ndarray:
        if route.calibration == "given" or forced:  # a forced route's set is ``cal`` already
            return np.asarray(cal.images)
        if "w" not in wide:
            wide["w"] = wide_calibration(run, a.data_dir, a.seed).images
        return wide["w"]

    routes = [r if r.graph != "tf_keras" else replace(r, graph=a.route)
              for r in ladder(first=a.int8_route if forced else "plain", only=forced)
              if not (r.graph == "unroll" and a.route == "unroll" and r.name != "plain")]
    transforms: Dict[str, Any] = {}
    clips: Dict[str, Any] = {}
    # A forced fine-tune route was the CLI's first conversion: its job is on ``a``.
    jobs: Dict[str, Any] = {routes[0].name: getattr(a, "fine_tune", None)}
    val_file = work / "val.npy"  # saved by the CLI for the Keras reference
    convert = cli_convert(a, run, work, keep_log, worker,
                          check=(val_file, labels) if val_file.exists() else None,
                          transforms=transforms, jobs=jobs, clips=clips)
    trials, files = try_routes(routes[:1], convert, score, calibration, keras_acc, a.max_drop,
                               first=(plain_flat, np.asarray(cal.images)), say=say)
    plain = trials[0]
    n = min(a.diagnose_images, len(val.images))
    diags: Dict[str, Any] = {}

    def diagnosis_of(key: str, route: Route, images: np.ndarray) -> Dict[str, Any]:
        if not diags:
            np.save(work / "diag_images.npy", val.images[:n])
            np.save(work / "diag_reference.npy", keras_probs[:n])
        d = _diagnose(a, run, work, keep_log, key, route, images, labels[:n], n, say,
                      fine_tune=jobs.get(route.name))
        diags[key] = d
        return d

    failed = plain.drop_pp is not None and plain.drop_pp > a.max_drop
    if a.diagnose or failed:  # a forced route is the chosen one: its diagnosis says so
        diagnosis_of("chosen" if forced else "plain", routes[0], np.asarray(cal.images))
    rest = order(routes[1:], diags.get("plain"))
    if rest and not plain.passed:
        out["order"] = [r.name for r in rest]
        if suggestion(diags.get("plain")) is not None:
            say(f"[int8] the diagnosis names {suggestion(diags.get('plain'))}: trying "
                f"{', '.join(out['order'])}")
        more, more_files = try_routes(rest, convert, score, calibration, keras_acc, a.max_drop,
                                      say=say)
        trials += more
        files.update(more_files)
    if isinstance(first, dict) and first.get("transform") is not None:
        transforms.setdefault(routes[0].name, first["transform"])
    if isinstance(first, dict) and first.get("logit_clip") is not None:
        clips.setdefault(routes[0].name, first["logit_clip"])
    for t in trials:
        if t.route in files and t.route in transforms:
            _own_float(t, transforms[t.route], jobs.get(t.route), files[t.route], val.images,
                       keras_acc, say)
    chosen = best(trials)
    out["trials"] = [t.to_dict() for t in trials]
    out["passed"] = bool(chosen and chosen.passed)
    if chosen is not None:
        out["route"], out["graph"] = chosen.route, chosen.graph
        if get(chosen.route).calibration == "wide":
            out["calibration"] = {"source": "the run's training split, plus one jittered copy "
                                            "of each image", "images": chosen.calibration_images}
        if chosen.route != "plain":
            path = work / f"chosen-{chosen.route}.tflite"
            path.write_bytes(files[chosen.route])
            results["int8"] = {**(first if isinstance(first, dict) else {}), "path": str(path),
                               "seconds": (first or {}).get("seconds", 0.0)
                               if isinstance(first, dict) else 0.0}
            results["int8"].pop("logit_clip", None)  # the plain route's; the chosen one's:
            if chosen.route in clips:
                results["int8"]["logit_clip"] = clips[chosen.route]
            if diags and "chosen" not in diags:
                route = get(chosen.route)
                diagnosis_of("chosen", route, calibration(route))
    out["diagnosis"] = diags or None
    if transforms:
        out["transforms"] = transforms
    if clips:
        out["logit_clips"] = clips
    return out


def _own_float(t: Trial, done: Any, job: Optional[Dict[str, Any]], flat: bytes,
               images: np.ndarray, keras_acc: float, say: Callable[[str], None]) -> None:
    """For a fine-tune trial: say what the fine-tuned float model reads, and set the int8
    file's frame agreement with it (from the probabilities the worker saved)."""
    from . import verify

    if not isinstance(done, dict) or "float_seq_acc" not in done or not job:
        return
    path = Path(job.get("check", {}).get("probs_out", ""))
    if path.is_file():
        ref = np.load(path)
        probs, _ = verify.run_model(flat, images, num_threads=1, reset=verify.is_stateful(flat))
        t.own_float_agreement = float(np.mean(probs.argmax(-1) == ref.argmax(-1)))
    say(f"[int8] route {t.route}: {done['steps']} steps on {done['images']} training images "
        f"(loss {done['loss_first']:.3f} -> {done['loss_last']:.3f}); the fine-tuned float "
        f"model reads {100 * done['float_seq_acc']:.2f} % (trained model "
        f"{100 * keras_acc:.2f} %)"
        + (f", int8 agrees with it on {100 * t.own_float_agreement:.2f} % of frames"
           if t.own_float_agreement is not None else ""))


def _diagnose(a: argparse.Namespace, run: Any, work: Path, keep_log: Path, key: str,
              route: Route, images: np.ndarray, labels: List[str], n: int,
              say: Callable[[str], None], fine_tune: Optional[Dict[str, Any]] = None
              ) -> Dict[str, Any]:
    """The diagnosis (export/diagnose.py, in a child process) of ``route`` on the first ``n``
    validation images (saved in ``work`` by the caller), calibrated on ``images``."""
    from . import diagnose

    say(f"[int8] diagnosing route {route.name} on {n} validation images "
        "(tf.lite.experimental.QuantizationDebugger) ...")
    np.save(work / f"diag_calib_{key}.npy", images)
    job = {"model": str(run.model), "keras": run.meta.get("keras", "keras3"),
           "model_config": run.meta["model_config"],
           "route": a.route if route.graph == "tf_keras" else route.graph,
           "transform": route.transform, "fine_tune": fine_tune,
           "logit_clip": not getattr(a, "no_logit_clip", False),
           "calibration": str(work / f"diag_calib_{key}.npy"),
           "images": str(work / "diag_images.npy"),
           "reference": str(work / "diag_reference.npy"), "labels": labels,
           "charset": run.charset, "blank": run.blank}
    d = diagnose.run_child(job, work, timeout=a.timeout, log_path=keep_log)
    d["route"] = route.name
    say(d["error"] if "error" in d else diagnose.format_table(d))
    return d
