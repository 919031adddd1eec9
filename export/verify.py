"""Check an exported flatbuffer with the interpreter the runtime uses (no TensorFlow here).

:func:`evaluate` runs a model over labelled images and measures sequence accuracy, character
error rate, frame-argmax agreement with the Keras model and single-thread latency.
:func:`op_report` lists every op with its tensor types, so a test (and ``--check-ops``) can prove
that a full-int8 file has no float compute left.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

#: Ops allowed to touch float tensors in a full-int8 model: the conversions at its edges.
BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
_FLOAT = ("float32", "float16", "float64")


def interpreter(flatbuffer: bytes, *, num_threads: int = 1, delegates: bool = True) -> Any:
    """An allocated ai-edge-litert interpreter, created the way the runtime creates it."""
    from .._backend import get_interpreter_class

    _, cls = get_interpreter_class("ai-edge-litert")
    kwargs: Dict[str, Any] = {"model_content": flatbuffer, "num_threads": num_threads}
    if not delegates:
        from ai_edge_litert.interpreter import OpResolverType

        kwargs["experimental_op_resolver_type"] = \
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = cls(**kwargs)
    it.allocate_tensors()
    return it


def op_report(flatbuffer: bytes) -> List[Dict[str, Any]]:
    """Every op of the model (no delegate applied) with its input and output tensor dtypes."""
    it = interpreter(flatbuffer, delegates=False)
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in it.get_tensor_details()}
    ops = []
    for op in it._get_ops_details():  # the only op listing the Python API offers
        ins = [dtypes.get(int(i), "?") for i in op["inputs"] if int(i) >= 0]
        outs = [dtypes.get(int(i), "?") for i in op["outputs"] if int(i) >= 0]
        ops.append({"op": op["op_name"], "inputs": ins, "outputs": outs})
    return ops


def float_compute_ops(flatbuffer: bytes) -> List[str]:
    """Names of ops, other than the QUANTIZE/DEQUANTIZE at the edges, that read or write floats."""
    return [o["op"] for o in op_report(flatbuffer)
            if o["op"] not in BOUNDARY_OPS and any(t in _FLOAT for t in o["inputs"] + o["outputs"])]


def io_details(flatbuffer: bytes) -> Dict[str, Any]:
    """Input/output dtype, shape and quantization (scale, zero point or None) of a model."""
    it = interpreter(flatbuffer, delegates=False)
    i, o = it.get_input_details()[0], it.get_output_details()[0]

    def quant(d: Dict[str, Any]) -> Optional[List[float]]:
        scale, zp = d["quantization"]
        return [float(scale), int(zp)] if scale else None

    return {"input_dtype": np.dtype(i["dtype"]).name, "input_shape": [int(v) for v in i["shape"]],
            "input_quant": quant(i), "output_dtype": np.dtype(o["dtype"]).name,
            "output_shape": [int(v) for v in o["shape"]], "output_quant": quant(o)}


def greedy(frames: np.ndarray, charset: str, blank: int) -> str:
    """Best path: merge repeated frame labels, drop blanks."""
    out, prev = [], -1
    for k in frames.tolist():
        if k != prev and k != blank:
            out.append(charset[k])
        prev = k
    return "".join(out)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def run_model(flatbuffer: bytes, images: np.ndarray, *, num_threads: int = 1,
              timed: int = 0, reset: bool = True) -> Tuple[np.ndarray, List[float]]:
    """(N, T, C) float32 outputs (dequantized) for uint8 (N, H, W) images, and per-invoke seconds.

    The input is fed in the model's own dtype: raw pixels as uint8 for int8 models, as float32
    otherwise. ``reset`` clears the variable tensors (the fused LSTM's state) before each invoke,
    as a caller of a ``stateful`` model must; it is included in the timing. The first ``timed``
    invokes (after two warm-up ones) are timed.
    """
    it = interpreter(flatbuffer, num_threads=num_threads)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    batch = int(i["shape"][0])
    scale, zp = o["quantization"]
    outs: List[np.ndarray] = []
    times: List[float] = []
    for _ in range(2 if timed else 0):
        it.set_tensor(i["index"], np.zeros(i["shape"], i["dtype"]))
        it.invoke()
    for s in range(0, len(images), batch):
        chunk = images[s:s + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
        chunk = chunk if chunk.ndim == 4 else chunk[..., None]  # grey gets its channel axis
        it.set_tensor(i["index"], chunk.astype(i["dtype"]))
        t0 = time.perf_counter()
        if reset:
            it.reset_all_variables()
        it.invoke()
        if len(times) < timed:
            times.append(time.perf_counter() - t0)
        y = it.get_tensor(o["index"])[:n]
        if np.issubdtype(y.dtype, np.integer):
            y = (y.astype(np.float32) - zp) * scale
        outs.append(y.astype(np.float32))
    return np.concatenate(outs), times


@dataclass
class Verification:
    """What ``captcha-export`` reports per format."""

    format: str
    seq_acc: float
    cer: float
    agreement: Optional[float]  # frame-argmax agreement with Keras
    max_abs_diff: Optional[float]  # largest |prob - keras prob|
    latency_ms: float  # median single-thread invoke, one batch
    size_bytes: int
    images: int
    stateful: bool  # the caller must reset_all_variables() before each invoke
    agreement_without_reset: Optional[float]  # what a caller that forgets the reset gets

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def scores(probs: np.ndarray, labels: Sequence[str], charset: str,
           blank: int) -> Tuple[float, float]:
    """(sequence accuracy, CER) of greedy decoding."""
    preds = [greedy(p.argmax(-1), charset, blank) for p in probs]
    right = sum(p == t for p, t in zip(preds, labels))
    errors = sum(edit_distance(p, t) for p, t in zip(preds, labels))
    chars = sum(len(t) for t in labels)
    return right / max(1, len(labels)), errors / max(1, chars)


def evaluate(fmt: str, flatbuffer: bytes, size: int, images: np.ndarray, labels: Sequence[str],
             charset: str, blank: int, reference: Optional[np.ndarray] = None, *,
             timed: int = 100) -> Verification:
    """Run ``flatbuffer`` over ``images`` single-threaded and score it against ``labels``."""
    stateful = is_stateful(flatbuffer)
    probs, times = run_model(flatbuffer, images, num_threads=1, timed=timed, reset=stateful)
    acc, cer = scores(probs, labels, charset, blank)
    agree = diff = no_reset = None
    if reference is not None:
        agree = float(np.mean(probs.argmax(-1) == reference.argmax(-1)))
        diff = float(np.max(np.abs(probs - reference)))
        if stateful:
            stale, _ = run_model(flatbuffer, images, num_threads=1, reset=False)
            no_reset = float(np.mean(stale.argmax(-1) == reference.argmax(-1)))
    latency = float(np.median(times) * 1e3) if times else float("nan")
    return Verification(fmt, acc, cer, agree, diff, latency, size, len(images), stateful,
                        no_reset)


def is_stateful(flatbuffer: bytes) -> bool:
    """Whether one invoke changes the next one's output (state kept in variable tensors).

    The fused TFLite LSTM keeps its final state in variable tensors and starts the next invoke
    from it unless the caller runs ``interpreter.reset_all_variables()`` first.
    """
    it = interpreter(flatbuffer, delegates=False)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    rng = np.random.default_rng(0)
    probe = rng.integers(0, 256, size=i["shape"]).astype(i["dtype"])
    other = rng.integers(0, 256, size=i["shape"]).astype(i["dtype"])
    outs = []
    for x in (probe, other, probe):
        it.set_tensor(i["index"], x)
        it.invoke()
        outs.append(it.get_tensor(o["index"]).copy())
    return not np.array_equal(outs[0], outs[2])
