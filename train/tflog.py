"""Keep TensorFlow's native start-up lines off the terminal, as ``TF_CPP_MIN_LOG_LEVEL`` means to.

TensorFlow 2.21 writes its C++ log lines through absl before ``absl::InitializeLog`` runs, and
those lines ignore ``TF_CPP_MIN_LOG_LEVEL`` (tensorflow/tensorflow#100442). Every
``captcha-train`` run began with six of them on a CPU machine: oneDNN and "Could not find cuda
drivers" notices, printed twice, and "E0000 ... failed call to cuInit: ... CUDA error", which
reads like a failure on a machine that has no GPU to use.

:func:`quiet_native_stderr` sends file descriptor 2 to a temporary file around the calls that
print them (``import tensorflow`` and the first device query). When the block ends, it writes
back every line except the absl-format ones below the level ``TF_CPP_MIN_LOG_LEVEL`` asks for
(the CLIs default it to 2: warnings and info dropped). TFLite's "INFO: Created TensorFlow Lite
XNNPACK delegate for CPU." (its own format) is an info line too: captcha-export makes its
interpreters inside the block. Python's own messages and tracebacks written in the block come
back unchanged. One error line is dropped as well: cuInit's failure, when TensorFlow said in the
same process that it found no CUDA driver, since the run then says
"CPU" itself. Set ``TF_CPP_MIN_LOG_LEVEL=0`` to see everything.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator, List

from .._common import crash_traceback_to

__all__ = ["filter_lines", "quiet_native_stderr"]

#: An absl log line: severity letter, MMDD, time, thread id, file:line] message.
_ABSL = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./+-]+:\d+\] ")
_LEVELS = {"I": 0, "W": 1, "E": 2, "F": 3}
_PRE_INIT = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
#: The second line of cpu_feature_guard's notice, which has no absl prefix of its own.
_CPU_GUARD_TAIL = "To enable the following instructions:"
_NO_DRIVER = "Could not find cuda drivers"
_CUINIT = re.compile(r"cuda_platform\.cc:\d+\] failed call to cuInit")
#: TFLite's own info lines (its logger's format, not absl's), once per process: "INFO: Created
#: TensorFlow Lite XNNPACK delegate for CPU." when an interpreter is made.
_TFLITE_INFO = re.compile(r"^INFO: (Created|Initialized) TensorFlow Lite ")

#: Whether a dropped line said there is no CUDA driver (the process then has no GPU to find).
_state = {"no_driver": False}


def _min_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def filter_lines(text: str, min_level: int) -> str:
    """``text`` without the absl log lines below ``min_level`` (0 = I ... 3 = F)."""
    kept: List[str] = []
    dropped_last = False
    for line in text.splitlines(keepends=True):
        bare = line.rstrip("\r\n")
        m = _ABSL.match(bare)
        if m:
            if _NO_DRIVER in bare:
                _state["no_driver"] = True
            drop = _LEVELS[m.group(1)] < min_level or (
                m.group(1) == "E" and min_level >= 1 and _state["no_driver"]
                and _CUINIT.search(bare) is not None)
        elif bare == _PRE_INIT or _TFLITE_INFO.match(bare):
            drop = min_level >= 1
        else:
            drop = dropped_last and bare.startswith(_CPU_GUARD_TAIL)
        dropped_last = drop
        if not drop:
            kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Capture fd 2 in the block; write back what :func:`filter_lines` keeps when it ends.

    A crash inside the block would take the captured text with it: where :mod:`faulthandler` is
    on, it writes to the real stderr while the block runs (and to fd 2 after)."""
    level = _min_level()
    try:
        os.fstat(2)
    except OSError:  # no file descriptor 2 (a daemon): nothing to filter
        level = 0
    if level < 1:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            with crash_traceback_to(saved):
                yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = filter_lines(tmp.read().decode("utf-8", errors="replace"), level)
            if text:
                sys.stderr.write(text)
                sys.stderr.flush()
