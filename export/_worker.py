"""Child process that does the TensorFlow work: ``python -m captcha_edge.export._worker JOB.json``.

The TFLite calibrator can die natively (a segfault, no Python exception), so the CLI never runs
it in its own process. The job file names the inputs; this process appends one JSON line per event
to ``job["progress"]`` so the parent knows which format was in flight if this process dies:

    {"event": "start", "step": "int8"}
    {"event": "done", "step": "int8", "path": ".../int8.tflite", "seconds": 12.3}
    {"event": "error", "step": "int8", "message": "..."}   (a Python exception; next step follows)
    {"event": "fatal", "message": "..."}                    (cannot go on; exit code 3)

Steps: ``reference`` (the Keras model's probabilities on the verification images, saved as .npy),
then each requested format.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Tests set this to a format name to make the worker die with SIGSEGV when it reaches it.
CRASH_ENV = "_CAPTCHA_EDGE_EXPORT_CRASH"


def _emit(progress: Path, **event: Any) -> None:
    with progress.open("a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run(job: Dict[str, Any]) -> int:
    """Do the job; return the exit code."""
    import numpy as np

    progress = Path(job["progress"])
    work = Path(job["workdir"])
    try:
        from . import convert
        src = convert.load_keras(Path(job["model"]), job.get("keras", "keras3"))
    except ImportError as exc:
        _emit(progress, event="fatal", message=f"captcha-export needs TensorFlow and tf-keras "
                                               f'({exc}): pip install "captcha-edge[train]"')
        return 3
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        _emit(progress, event="fatal", message=f"{job['model']}: cannot load the Keras model "
                                               f"({exc.__class__.__name__}: {msg[:300]})")
        return 3
    if job.get("reference"):
        _emit(progress, event="start", step="reference")
        t0 = time.monotonic()
        images = np.load(job["reference"]["images"])
        probs = convert.keras_probs(src, images)
        np.save(job["reference"]["out"], probs)
        _emit(progress, event="done", step="reference", path=job["reference"]["out"],
              seconds=round(time.monotonic() - t0, 2))
    calib = np.load(job["calibration"]) if job.get("calibration") else None
    model = None
    clipped: Any = None
    clip_info: Any = None
    transformed: Any = None
    for fmt in job["formats"]:
        _emit(progress, event="start", step=fmt)
        t0 = time.monotonic()
        if os.environ.get(CRASH_ENV) == fmt:  # test hook: die natively, as the calibrator can
            import signal

            os.kill(os.getpid(), signal.SIGSEGV)
        try:
            if model is None:
                model = convert.rebuild(src, job["model_config"], route=job["route"],
                                        batch=job["batch"])
                if job.get("transform", "none") != "none":
                    transformed = convert.transform(model, job["transform"], calib,
                                                    job.get("fine_tune"))
            target = model
            if fmt in ("int8", "int16x8") and job.get("logit_clip", True):
                if clipped is None:
                    from .logitclip import clip_logits

                    clipped, clip_info = clip_logits(model, calib, job["batch"])
                target = clipped
            data = convert.to_tflite(target, fmt, calibration=calib,
                                     batch=job["batch"], int8_output=job["int8_output"])
            if not job.get("keep_names"):
                data = convert.strip_names(data)
        except Exception as exc:
            lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
            tail = lines[-1] if lines else exc.__class__.__name__
            _emit(progress, event="error", step=fmt,
                  message=f"{exc.__class__.__name__}: {tail[:400]}",
                  trace=traceback.format_exc()[-4000:])
            continue
        out = work / f"{fmt}.tflite"
        out.write_bytes(data)
        _emit(progress, event="done", step=fmt, path=str(out),
              seconds=round(time.monotonic() - t0, 2),
              **({"transform": transformed} if transformed is not None else {}),
              **({"logit_clip": clip_info}
                 if clip_info is not None and fmt in ("int8", "int16x8") else {}))
    return 0


def main() -> int:
    """Entry point of the child process."""
    job = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    if job.get("threads"):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(job["threads"]))
        tf.config.threading.set_inter_op_parallelism_threads(int(job["threads"]))
    return run(job)


if __name__ == "__main__":
    sys.exit(main())
