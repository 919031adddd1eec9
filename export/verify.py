"""Check an exported flatbuffer with the interpreter the runtime uses (no TensorFlow here).

:func:`inspect` reads everything export reports about a file from ONE interpreter: the
input/output tensors, every op with its tensor types (so a full-int8 file can be proven to have no
float compute left; ``captcha-export`` warns and the report lists ``float_compute_ops``), and
whether the model keeps state between invokes. :func:`evaluate` runs a model over labelled images
and measures sequence accuracy, character error rate, frame-argmax agreement with the Keras model
and single-thread latency (a second interpreter, with the default delegate, as the runtime runs).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import metrics
from ..metrics import edit_distance as edit_distance  # re-exported: the name callers know

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
    from ..train.tflog import quiet_native_stderr

    with quiet_native_stderr():  # TFLite's "INFO: Created TensorFlow Lite XNNPACK delegate"
        it = cls(**kwargs)
        it.allocate_tensors()
    return it


def _ops(it: Any) -> List[Dict[str, Any]]:
    """Every op of an interpreter's graph with its input and output tensor dtypes."""
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in it.get_tensor_details()}
    ops = []
    for op in it._get_ops_details():  # the only op listing the Python API offers
        ins = [dtypes.get(int(i), "?") for i in op["inputs"] if int(i) >= 0]
        outs = [dtypes.get(int(i), "?") for i in op["outputs"] if int(i) >= 0]
        ops.append({"op": op["op_name"], "inputs": ins, "outputs": outs})
    return ops


def _float_ops(ops: Sequence[Dict[str, Any]]) -> List[str]:
    return [o["op"] for o in ops
            if o["op"] not in BOUNDARY_OPS and any(t in _FLOAT for t in o["inputs"] + o["outputs"])]


def _io(it: Any) -> Dict[str, Any]:
    """Input/output dtype, shape and quantization of an interpreter's first input and output."""
    i, o = it.get_input_details()[0], it.get_output_details()[0]

    def quant(d: Dict[str, Any]) -> Optional[List[float]]:
        scale, zp = d["quantization"]
        return [float(scale), int(zp)] if scale else None

    return {"input_dtype": np.dtype(i["dtype"]).name, "input_shape": [int(v) for v in i["shape"]],
            "input_quant": quant(i), "output_dtype": np.dtype(o["dtype"]).name,
            "output_shape": [int(v) for v in o["shape"]], "output_quant": quant(o)}


def _stateful(it: Any) -> bool:
    """Feed A, B, A without a reset: does the second A differ from the first?"""
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    rng = np.random.default_rng(0)
    probe = rng.integers(0, 256, size=i["shape"]).astype(i["dtype"])
    other = rng.integers(0, 256, size=i["shape"]).astype(i["dtype"])
    it.reset_all_variables()
    outs = []
    for x in (probe, other, probe):
        it.set_tensor(i["index"], x)
        it.invoke()
        outs.append(it.get_tensor(o["index"]).copy())
    it.reset_all_variables()
    return not np.array_equal(outs[0], outs[2])


@dataclass(frozen=True)
class Inspection:
    """What one interpreter (no delegate, so the ops are the file's own) says about a model."""

    io: Dict[str, Any]  # input/output dtype, shape, quantization (see io_details)
    ops: List[Dict[str, Any]]  # every op with its tensor dtypes (see op_report)
    stateful: bool  # the caller must reset_all_variables() before each invoke

    @property
    def float_compute_ops(self) -> List[str]:
        """Ops other than the QUANTIZE/DEQUANTIZE at the edges that read or write floats."""
        return _float_ops(self.ops)


def inspect(flatbuffer: bytes) -> Inspection:
    """Tensors, ops and statefulness of a model, from a single interpreter."""
    it = interpreter(flatbuffer, delegates=False)
    return Inspection(io=_io(it), ops=_ops(it), stateful=_stateful(it))


def op_report(flatbuffer: bytes) -> List[Dict[str, Any]]:
    """Every op of the model (no delegate applied) with its input and output tensor dtypes."""
    return _ops(interpreter(flatbuffer, delegates=False))


def float_compute_ops(flatbuffer: bytes) -> List[str]:
    """Names of ops, other than the QUANTIZE/DEQUANTIZE at the edges, that read or write floats."""
    return _float_ops(op_report(flatbuffer))


def io_details(flatbuffer: bytes) -> Dict[str, Any]:
    """Input/output dtype, shape and quantization (scale, zero point or None) of a model."""
    return _io(interpreter(flatbuffer, delegates=False))


def greedy(frames: np.ndarray, charset: str, blank: int) -> str:
    """Best path of per-frame class indices: merge repeats, drop blanks (via the decoder)."""
    num_classes = len(charset) + 1
    onehot = np.zeros((1, len(frames), num_classes), np.float32)
    onehot[0, np.arange(len(frames)), np.asarray(frames, dtype=np.int64)] = 1.0
    return metrics.greedy_texts(onehot, charset, blank=blank)[0]


def run_model(flatbuffer: bytes, images: np.ndarray, *, num_threads: int = 1,
              timed: int = 0, reset: bool = True,
              it: Optional[Any] = None) -> Tuple[np.ndarray, List[float]]:
    """(N, T, C) float32 outputs (dequantized) for uint8 (N, H, W) images, and per-invoke seconds.

    The input is fed in the model's own dtype: raw pixels as uint8 for int8 models, as float32
    otherwise. ``reset`` clears the variable tensors (the fused LSTM's state) before each invoke,
    as a caller of a ``stateful`` model must; it is included in the timing. The first ``timed``
    invokes (after two warm-up ones) are timed. ``it``: an interpreter of ``flatbuffer`` to reuse
    (its variable tensors are reset first) instead of building one.
    """
    if it is None:
        it = interpreter(flatbuffer, num_threads=num_threads)
    it.reset_all_variables()
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

    def accuracy(self, reference_acc: Optional[float]) -> Dict[str, Any]:
        """The metadata's ``accuracy`` entry: this run on the validation split, beside the
        sequence accuracy of the model it was converted from (``keras_seq_acc``)."""
        return {"seq_acc": self.seq_acc, "cer": self.cer, "frame_agreement": self.agreement,
                "keras_seq_acc": reference_acc, "images": self.images, "split": "validation"}


def scores(probs: np.ndarray, labels: Sequence[str], charset: str,
           blank: int) -> Tuple[float, float]:
    """(sequence accuracy, CER) of greedy decoding."""
    s = metrics.score(list(labels), metrics.greedy_texts(probs, charset, blank=blank))
    return s["seq_acc"], s["cer"]


def evaluate(fmt: str, flatbuffer: bytes, size: int, images: np.ndarray, labels: Sequence[str],
             charset: str, blank: int, reference: Optional[np.ndarray] = None, *,
             timed: int = 100, stateful: Optional[bool] = None) -> Verification:
    """Run ``flatbuffer`` over ``images`` single-threaded and score it against ``labels``.

    ``stateful``: from :func:`inspect` when the caller has it (else probed here). One interpreter
    serves the run with resets and, for a stateful model, the run without.
    """
    if stateful is None:
        stateful = is_stateful(flatbuffer)
    it = interpreter(flatbuffer, num_threads=1)
    probs, times = run_model(flatbuffer, images, timed=timed, reset=stateful, it=it)
    acc, cer = scores(probs, labels, charset, blank)
    agree = diff = no_reset = None
    if reference is not None:
        agree = float(np.mean(probs.argmax(-1) == reference.argmax(-1)))
        diff = float(np.max(np.abs(probs - reference)))
        if stateful:
            stale, _ = run_model(flatbuffer, images, reset=False, it=it)
            no_reset = float(np.mean(stale.argmax(-1) == reference.argmax(-1)))
    latency = float(np.median(times) * 1e3) if times else float("nan")
    return Verification(fmt, acc, cer, agree, diff, latency, size, len(images), stateful,
                        no_reset)


def is_stateful(flatbuffer: bytes) -> bool:
    """Whether one invoke changes the next one's output (state kept in variable tensors).

    The fused TFLite LSTM keeps its final state in variable tensors and starts the next invoke
    from it unless the caller runs ``interpreter.reset_all_variables()`` first.
    """
    return _stateful(interpreter(flatbuffer, delegates=False))
