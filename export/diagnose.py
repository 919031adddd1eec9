"""Where full-int8 quantization loses accuracy: ``captcha-export RUN --int8 --diagnose``.

Two measurements on the verification images, both through TensorFlow Lite's own quantization
debugger (``tf.lite.experimental.QuantizationDebugger``), which calibrates the model once and then
re-quantizes it with different options:

* **per tensor** (``tensors``): the debugger's instrumented model places a float copy of every
  quantized op beside it, fed with the same (dequantized) inputs, and a ``NumericVerify`` op that
  compares the two. So each row is the error that op's own quantization adds (not the error
  accumulated from earlier layers): RMS error, that error relative to the float signal's RMS
  (``rel_error``), the quantization step (``scale``) and the share of float values outside the
  int8 range (``clipped``, the cost of a too-narrow calibrated range).
* **left in float** (``left_in_float``): for each compute op, the whole model quantized except
  that one op (the debugger's ``denylisted_nodes``), scored end to end like the export itself:
  frame agreement with Keras and sequence accuracy. ``gain_pp`` is how much of the int8 loss that
  one op accounts for.

Why we do not call ``QuantizationDebugger.run()``: it invokes the instrumented model image after
image without ``reset_all_variables()``. The fused UNIDIRECTIONAL_SEQUENCE_LSTM keeps its state in
variable tensors (docs/export.md), so each image would start from the previous image's state and
the LSTM rows would measure that leak, not quantization. We run the debugger's instrumented and
selectively quantized models ourselves, with the reset, and keep the debugger for what it does
well (calibration once, instrumentation, selective quantization).

This module imports TensorFlow and runs in a child process
(``python -m captcha_edge.export.diagnose JOB.json``): :func:`run_child` starts it from the CLI,
so a native crash of the calibrator is reported instead of killing ``captcha-export``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from .convert import with_channels

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Ops whose quantization adds error (the rest only move int8 values: pooling, reshape, concat).
COMPUTE_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX",
                         "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "ADD",
                         "MUL", "LOGISTIC", "TANH", "MEAN", "BATCH_MATMUL"})
_NUMERIC_VERIFY = "NumericVerify"
#: At most this many ops are re-quantized with one left in float (those with the largest error).
MAX_LEFT_IN_FLOAT = 16


def _gen(images: np.ndarray) -> Callable[[], Iterator[List[np.ndarray]]]:
    def gen() -> Iterator[List[np.ndarray]]:
        for i in range(len(images)):
            yield [with_channels(images[i:i + 1]).astype(np.float32)]
    return gen


def _tf_interpreter(flatbuffer: bytes) -> Any:
    """TensorFlow's interpreter (it has the NumericVerify kernel; ai-edge-litert does not)."""
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "tf.lite.Interpreter is deprecated"
        it = tf.lite.Interpreter(
            model_content=flatbuffer, num_threads=1, experimental_preserve_all_tensors=True,
            # no XNNPACK: it would fold the ops into DELEGATE nodes and hide their names
            experimental_op_resolver_type=tf.lite.experimental.OpResolverType
            .BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def tensor_errors(debug_model: bytes, images: np.ndarray) -> List[Dict[str, Any]]:
    """Per quantized tensor of the debugger's instrumented model: the error its op adds.

    Each image runs from a fresh LSTM state (``reset_all_variables()`` before ``invoke()``).
    """
    it = _tf_interpreter(debug_model)
    ops = it._get_ops_details()  # the only op listing the Python API offers
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    defining = {int(o): op for op in ops for o in op["outputs"]}
    checks = []
    for op in ops:
        if op["op_name"] != _NUMERIC_VERIFY:
            continue
        q_idx, f_idx = (int(i) for i in op["inputs"][:2])
        q = tensors[q_idx]
        scales = q["quantization_parameters"]["scales"]
        zps = q["quantization_parameters"]["zero_points"]
        if not len(scales):
            continue
        src = defining.get(q_idx)
        checks.append({"op": src["op_name"] if src else "?",
                       "tensor": node_name(tensors[int(op["outputs"][0])]["name"]),
                       "q": q_idx, "f": f_idx, "scale": float(scales[0]), "zero_point": int(zps[0]),
                       "dtype": np.dtype(q["dtype"]), "sq": 0.0, "sig": 0.0, "n": 0, "clip": 0,
                       "max": 0.0, "fmin": np.inf, "fmax": -np.inf})
    inp = it.get_input_details()[0]
    for k in range(len(images)):
        it.set_tensor(inp["index"], with_channels(images[k:k + 1]).astype(inp["dtype"]))
        it.reset_all_variables()
        it.invoke()
        for c in checks:
            f = it.get_tensor(c["f"]).astype(np.float64)
            q = it.get_tensor(c["q"]).astype(np.float64)
            d = (q - c["zero_point"]) * c["scale"] - f
            info = np.iinfo(c["dtype"])
            lo = (info.min - c["zero_point"] - 0.5) * c["scale"]
            hi = (info.max - c["zero_point"] + 0.5) * c["scale"]
            c["sq"] += float(np.sum(d * d))
            c["sig"] += float(np.sum(f * f))
            c["n"] += f.size
            c["clip"] += int(np.count_nonzero((f < lo) | (f > hi)))
            c["max"] = max(c["max"], float(np.max(np.abs(d))))
            c["fmin"] = min(c["fmin"], float(f.min()))
            c["fmax"] = max(c["fmax"], float(f.max()))
    rows = []
    for c in checks:
        n = max(1, c["n"])
        rms = (c["sq"] / n) ** 0.5
        sig = (c["sig"] / n) ** 0.5
        info = np.iinfo(c["dtype"])
        rows.append({
            "op": c["op"], "tensor": c["tensor"], "scale": c["scale"],
            "zero_point": c["zero_point"],
            "int8_range": [(info.min - c["zero_point"]) * c["scale"],
                           (info.max - c["zero_point"]) * c["scale"]],
            "float_range": [c["fmin"], c["fmax"]], "rms_error": rms,
            "rel_error": rms / sig if sig > 0 else 0.0, "max_abs_error": c["max"],
            "error_in_steps": rms / c["scale"] if c["scale"] else 0.0,
            "clipped": c["clip"] / n})
    return rows


def node_name(numeric_verify_name: str) -> str:
    """The calibrated model's tensor name that ``denylisted_nodes`` takes, from the name of a
    NumericVerify output (``NumericVerify/<name>[digit]:<index>``).

    The quantizer appends one digit to the name of the quantized copy; this is the rule the
    debugger itself applies (``QuantizationDebugger._get_operand_name_and_index``).
    """
    name = numeric_verify_name.rsplit(":", 1)[0][len(_NUMERIC_VERIFY) + 1:]
    return name[:-1] if name and name[-1].isdigit() else name


def _float_ops(flatbuffer: bytes) -> List[str]:
    from . import verify

    return verify.float_compute_ops(flatbuffer)


def _score(flatbuffer: bytes, images: np.ndarray, reference: np.ndarray,
           labels: Sequence[str], charset: str, blank: int) -> Dict[str, float]:
    from . import verify

    probs, _ = verify.run_model(flatbuffer, images, num_threads=1, reset=True)
    acc, cer = verify.scores(probs, labels, charset, blank)
    agree = float(np.mean(probs.argmax(-1) == reference.argmax(-1)))
    return {"agreement": agree, "seq_acc": acc, "cer": cer}


def diagnose(model: Any, calibration: np.ndarray, images: np.ndarray, reference: np.ndarray,
             labels: Sequence[str], charset: str, blank: int, *, route: str = "tf_keras",
             log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """The diagnosis of full-int8 quantization of ``model`` (rebuilt, batch 1).

    Args:
        model: from :func:`captcha_edge.export.convert.rebuild`.
        calibration: uint8 (N, H, W) grey or (N, H, W, 3) RGB images the int8 ranges are
            calibrated on.
        images: uint8 verification images, shaped likewise; ``reference`` the Keras (M, T, C) probs.
        labels, charset, blank: for sequence accuracy.

    Returns:
        ``{"tool", "images", "keras", "all_int8", "tensors", "left_in_float", "worst"}``.
    """
    import tensorflow as tf

    from . import convert

    t0 = time.monotonic()
    keras_acc, keras_cer = _keras_scores(reference, labels, charset, blank)
    conv = convert.quantized_converter(model, "int8", calibration=calibration)
    dbg = tf.lite.experimental.QuantizationDebugger(
        converter=conv, debug_dataset=_gen(images[:1]),
        debug_options=tf.lite.experimental.QuantizationDebugOptions())
    log(f"calibrated in {time.monotonic() - t0:.0f}s; measuring each tensor's error")
    tensors = tensor_errors(dbg.get_debug_quantized_model(), images)
    base = _score(dbg.get_nondebug_quantized_model(), images, reference, labels, charset, blank)
    left: List[Dict[str, Any]] = []
    candidates = [t for t in tensors if t["op"] in COMPUTE_OPS]
    if len(candidates) > MAX_LEFT_IN_FLOAT:  # the unrolled graph has hundreds: the worst ones
        keep = sorted(candidates, key=lambda t: -t["rel_error"])[:MAX_LEFT_IN_FLOAT]
        candidates = [t for t in candidates if any(t is k for k in keep)]
    for k, t in enumerate(candidates, 1):
        log(f"left in float {k}/{len(candidates)}: {t['op']} {t['tensor']}")
        try:
            dbg.options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=[t["tensor"]])
            flat = dbg.get_nondebug_quantized_model()
        except Exception as exc:  # the quantizer refused this node; say so, go on
            left.append({"op": t["op"], "tensor": t["tensor"],
                         "error": f"{exc.__class__.__name__}: {str(exc)[:200]}"})
            continue
        floats = _float_ops(flat)
        if not floats:  # the name did not match: the model is all-int8 again; say so
            left.append({"op": t["op"], "tensor": t["tensor"],
                         "error": "the quantizer did not leave this node in float"})
            continue
        s = _score(flat, images, reference, labels, charset, blank)
        left.append({"op": t["op"], "tensor": t["tensor"], "float_ops": sorted(set(floats)),
                     **s,
                     "gain_pp": 100 * (s["seq_acc"] - base["seq_acc"]),
                     "agreement_gain_pp": 100 * (s["agreement"] - base["agreement"])})
    worst = worst_layers(tensors, left)
    return {
        "tool": f"tf.lite.experimental.QuantizationDebugger (TensorFlow {tf.__version__}); "
                "its instrumented and selectively quantized models run with "
                "reset_all_variables() before every invoke",
        "images": int(len(images)), "calibration_images": int(len(calibration)),
        "keras": {"seq_acc": keras_acc, "cer": keras_cer},
        "all_int8": base, "tensors": tensors, "left_in_float": left, "worst": worst,
        "seconds": round(time.monotonic() - t0, 1)}


def _keras_scores(reference: np.ndarray, labels: Sequence[str], charset: str,
                  blank: int) -> List[float]:
    from . import verify

    return list(verify.scores(reference, labels, charset, blank))


def worst_layers(tensors: Sequence[Dict[str, Any]], left: Sequence[Dict[str, Any]],
                 top: int = 5) -> List[Dict[str, Any]]:
    """The ``top`` compute ops, worst first: by how much leaving them in float recovers
    (frame agreement, then sequence accuracy), then by their own relative error."""
    by_tensor = {t["tensor"]: t for t in tensors}
    rows = []
    for r in left:
        if "error" in r:
            continue
        t = by_tensor.get(r["tensor"], {})
        rows.append({"op": r["op"], "tensor": r["tensor"],
                     "rel_error": t.get("rel_error"), "clipped": t.get("clipped"),
                     "scale": t.get("scale"), "float_range": t.get("float_range"),
                     "agreement_gain_pp": r["agreement_gain_pp"], "gain_pp": r["gain_pp"]})
    rows.sort(key=lambda r: (-r["agreement_gain_pp"], -r["gain_pp"], -(r["rel_error"] or 0)))
    return rows[:top]


def format_table(diag: Dict[str, Any]) -> str:
    """The printed diagnosis: the baseline and the worst layers."""
    b, k = diag["all_int8"], diag["keras"]
    lines = [f"int8 diagnosis on {diag['images']} verification images: Keras seq acc "
             f"{100 * k['seq_acc']:.2f} %, all-int8 {100 * b['seq_acc']:.2f} %, frame agreement "
             f"{100 * b['agreement']:.2f} %",
             f"{'op':<28} {'rel err %':>9} {'clip %':>7} {'float range':>17} "
             f"{'float: agree +pp':>16} {'seq +pp':>7}  tensor"]
    for r in diag["worst"]:
        lo, hi = r["float_range"] or (float("nan"), float("nan"))
        lines.append(f"{r['op']:<28} {100 * (r['rel_error'] or 0):>9.2f} "
                     f"{100 * (r['clipped'] or 0):>7.3f} {f'[{lo:.2f}, {hi:.2f}]':>17} "
                     f"{r['agreement_gain_pp']:>16.2f} {r['gain_pp']:>7.2f}  "
                     f"{r['tensor'][:60]}")
    return "\n".join(lines)


# -- child process --------------------------------------------------------------------------------

def _child(job: Dict[str, Any]) -> int:
    from . import convert

    def log(msg: str) -> None:
        print(f"[diagnose] {msg}", flush=True)

    src = convert.load_keras(Path(job["model"]), job.get("keras", "keras3"))
    model = convert.rebuild(src, job["model_config"], route=job["route"], batch=1)
    images = np.load(job["images"])
    reference = np.load(job["reference"])
    calib = np.load(job["calibration"])
    convert.transform(model, job.get("transform", "none"), calib, job.get("fine_tune"))
    if job.get("logit_clip", True):  # the graph the export ships (export/logitclip.py)
        from .logitclip import clip_logits

        model, _ = clip_logits(model, calib, 1)
    diag = diagnose(model, calib, images, reference, job["labels"], job["charset"],
                    int(job["blank"]), route=job["route"], log=log)
    Path(job["out"]).write_text(json.dumps(diag, indent=1), encoding="utf-8")
    return 0


def _keep(log: Path, dest: Path) -> None:
    """Append the child's log to ``dest`` (beside the outputs) when something failed."""
    try:
        with dest.open("ab") as f:
            f.write(log.read_bytes())
    except OSError:
        pass


def run_child(job: Dict[str, Any], work: Path, *, timeout: float,
              log_path: Path) -> Dict[str, Any]:
    """Run the diagnosis in a child process; return its result, or ``{"error": ...}``.

    The child's log is appended to ``log_path`` only when it failed.

    ``job`` holds ``model``, ``keras``, ``model_config``, ``route``, ``transform`` (optional,
    :data:`captcha_edge.export.convert.TRANSFORMS`), ``calibration`` (.npy),
    ``images`` (.npy), ``reference`` (.npy), ``labels``, ``charset``, ``blank``.
    """
    out = work / "diagnosis.json"
    job = {**job, "out": str(out)}
    job_file = work / "diagnose_job.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    log = work / "diagnose.log"
    with log.open("ab") as lf:
        try:
            proc = subprocess.run([sys.executable, "-m", "captcha_edge.export.diagnose",
                                   str(job_file)], stdout=lf, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            _keep(log, log_path)
            return {"error": f"the diagnosis took longer than {timeout:g}s; stopped "
                             f"(log: {log_path})"}
    if proc.returncode != 0 or not out.is_file():
        rc = proc.returncode
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        _keep(log, log_path)
        return {"error": f"the diagnosis process failed ({how}); log: {log_path}"}
    result: Dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the child process: ``python -m captcha_edge.export.diagnose JOB.json``."""
    args = list(sys.argv[1:] if argv is None else argv)
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return _child(job)


if __name__ == "__main__":
    sys.exit(main())
