"""Command-line inputs: expand files, folders, globs and ``-`` into named items, read them all.

Also how their names are shown: a file name may hold bytes that are not UTF-8 (Python keeps them
as lone surrogates such as ``\\udcff``) or control characters such as a newline. Text output
shows both as Python-style escapes (``lat\\udcff.png``, ``a\\nb.png``), so one image is one line;
JSON output escapes them as JSON ``\\uXXXX`` (valid UTF-8; ``json.loads`` gives back the
surrogate, and ``os.fsencode`` the original bytes).
"""
from __future__ import annotations

import errno
import glob
import io
import json
import os
import re
import stat
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Union

from ._common import IMAGE_SUFFIXES
from .errors import CaptchaEdgeError
from .preprocess import MAX_STREAM_BYTES

#: Shown instead of ``<stdin>`` in messages: the name the user typed.
STDIN = "-"

_SURROGATE = re.compile("[\ud800-\udfff]")
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with control characters and undecodable bytes as escapes: one line, valid UTF-8."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def json_line(obj: Any, default: Optional[Callable[[Any], Any]] = None) -> str:
    """One JSON line, valid UTF-8 even when ``obj`` holds undecodable file-name bytes."""
    text = json.dumps(obj, ensure_ascii=False, default=default)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@dataclass(frozen=True)
class Input:
    """One item to read: its display name and either a source or why it cannot be read."""

    name: str
    source: Union[str, bytes, None] = None  # a path, or stdin's bytes
    error: Optional[str] = None


def _skip_reason(path: str) -> Optional[str]:
    """Why a listed entry is not read (None for a regular file or a link to one)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return "dangling symbolic link"
        return f"cannot read ({exc.strerror or exc})"
    if stat.S_ISREG(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        return "a folder, not an image"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO (named pipe); give it as its own argument to read it"
    return "not a regular file"


def _listed(paths: list[str]) -> list[Input]:
    """Regular image files among ``paths`` (sorted), and one skip line per odd image entry."""
    out = []
    for p in sorted(paths, key=Path):
        if os.path.splitext(p)[1].lower() not in IMAGE_SUFFIXES:
            continue
        why = _skip_reason(p)
        out.append(Input(p, p) if why is None else Input(p, error=f"{p}: skipped: {why}"))
    return out


def expand(args: Sequence[str], stdin: Optional[BinaryIO] = None) -> list[Input]:
    """Turn files, folders, globs and ``-`` into :class:`Input` items, in the order given.

    A folder gives its image files (by suffix, sorted); entries with an image suffix that are
    not regular files (dangling or looping links, FIFOs, folders named ``*.png``) each give an
    item with an error, as do an empty folder, a glob that matches nothing and a second ``-``.
    A path given by itself is read whatever it is (a FIFO or ``<(cat img.png)`` included).
    """
    out: list[Input] = []
    stdin_used = False
    for p in args:
        if p == STDIN:
            if stdin_used:
                out.append(Input(STDIN, error=f"{STDIN}: stdin can be given only once"))
            else:
                stdin_used = True
                data = stdin.read(MAX_STREAM_BYTES + 1) if stdin is not None else b""
                out.append(Input(STDIN, data) if len(data) <= MAX_STREAM_BYTES else
                           Input(STDIN, error=f"{STDIN}: more than {MAX_STREAM_BYTES} bytes on "
                                              "stdin; not a captcha image"))
        elif p and os.path.isdir(p):
            try:
                names = [str(Path(p) / e) for e in os.listdir(p)]
            except OSError as exc:
                out.append(Input(p, error=f"{p}: cannot list folder ({exc.strerror or exc})"))
                continue
            found = _listed(names)
            if not found:
                exts = ", ".join(sorted(IMAGE_SUFFIXES))
                out.append(Input(p, error=f"{p}: folder has no image files ({exts})"))
            out.extend(found)
        elif not os.path.lexists(p) and glob.has_magic(p):
            matches = [str(Path(m)) for m in glob.glob(p, recursive=True)]
            files = sorted((m for m in matches if os.path.isfile(m)), key=Path)
            odd = [i for i in _listed([m for m in matches if not os.path.isfile(m)]) if i.error]
            if not files and not odd:
                out.append(Input(p, error=f"{p}: no files match this pattern"))
            out.extend([Input(f, f) for f in files] + odd)
        else:
            out.append(Input(p, p))
    return out


def _label(name: str) -> str:
    return name or "''"


def _open(item: Input) -> Any:
    """What the Recognizer reads for one item: stdin bytes get a name for error messages."""
    if isinstance(item.source, bytes):
        buf = io.BytesIO(item.source)
        buf.name = "<stdin>"
        return buf
    return item.source


def recognize_all(rec: Any, items: Sequence[Input], opts: dict[str, Any], threads: int = 1,
                  step: Optional[Callable[[], None]] = None) -> Iterator[dict[str, Any]]:
    """Read every item in order, ``threads`` at a time; never raises for one bad input.

    Yields ``{"path", "text", "confidence", "error", "seconds"}`` per item; ``error`` is one
    message naming the input (``seconds`` is None for an item that was never read).
    """

    def one(item: Input) -> dict[str, Any]:
        res: dict[str, Any] = {"path": item.name, "text": None, "confidence": None,
                               "error": item.error, "seconds": None}
        if item.error:
            return res
        if item.source == b"":
            res["error"] = f"{item.name}: empty input (0 bytes)"
            return res
        t0 = time.perf_counter()
        try:
            pred = rec.recognize(_open(item), **opts)
        except CaptchaEdgeError as exc:
            msg = str(exc).replace("<stdin>", STDIN) if item.name == STDIN else str(exc)
            res["error"] = msg if msg.startswith(_label(item.name)) else \
                f"{_label(item.name)}: {msg}"
        except Exception as exc:  # noqa: BLE001 -- one odd input must not end the batch
            res["error"] = f"{_label(item.name)}: {type(exc).__name__}: {exc}"
        else:
            res["text"], res["confidence"] = pred.text, round(pred.confidence, 6)
        res["seconds"] = time.perf_counter() - t0
        return res

    def done(r: dict[str, Any]) -> dict[str, Any]:
        if step is not None:
            step()
        return r

    if threads <= 1 or len(items) <= 1:
        for item in items:
            yield done(one(item))
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for r in pool.map(one, items):
                yield done(r)
