"""Labels files: ``filename,label`` rows that name each image's text (``captcha_edge.labels``).

One reader for ``captcha-train --labels`` and ``captcha-edge eval --labels`` (standard library
only, so the runtime needs nothing more). A folder of captchas whose file names are not their
labels (``captcha1.jpg``) usually carries such a file; :func:`find_labels_file` finds it under
one of :data:`LABELS_FILE_NAMES`, so that both commands read it without being told.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import List, Optional, Tuple

from ._common import IMAGE_SUFFIXES
from .errors import CaptchaEdgeError

__all__ = ["LABELS_FILE_NAMES", "LabelsFileError", "find_labels_file", "read_labels_file"]

#: The names a folder's labels file is found under, first match wins.
LABELS_FILE_NAMES = ("labels.csv", "labels.tsv")
#: A first row of these two names (any case) is a header, not a file.
_HEADER_FILE = ("filename", "file", "path", "name")
_HEADER_LABEL = ("label", "text")


class LabelsFileError(CaptchaEdgeError, ValueError):
    """A labels file that cannot be read; the message names the line and the problem."""


def read_labels_file(path: Path) -> List[Tuple[str, str]]:
    """Read a ``filename,label`` CSV or TSV (tab if the file is .tsv or its first line has a tab;
    ``;`` if its first line has one and no comma, as spreadsheets write CSV in some locales).

    The first row is a header when it reads ``filename,label`` (any case, or a like pair such as
    ``file,text``), or when its first field is not an image file name and the next row's is
    (``image,answer`` above ``c1.png,4821``). Blank lines are ignored; a file listed twice is an
    error. A file name's backslashes are read as folder separators (``imgs\\a.png``, as a
    labels file written on Windows names it), so the names returned use ``/``. The error messages
    leave out the path: the caller names it with its own option. A ``label,filename`` file (every
    row's second field an image name, no first field one) is read the other way round. A file of
    more than two columns is read when its header row names the two (``id,image,text,source``).
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsFileError(f"cannot read ({exc})") from None
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    # A semicolon where a spreadsheet's locale uses the comma as its decimal mark.
    delim = "\t" if Path(path).suffix.lower() == ".tsv" or "\t" in first else \
        ";" if ";" in first and "," not in first else ","
    table = [(lineno, row) for lineno, row in enumerate(csv.reader(lines, delimiter=delim), start=1)
             if row and any(c.strip() for c in row)]
    columns = _named_columns(table[0][1]) if table and len(table[0][1]) > 2 else None
    width = len(table[0][1]) if columns else 2
    rows: List[Tuple[int, str, str]] = []
    for lineno, row in table:
        if len(row) != width:
            hint = ("; or a header row that names the file and label columns among more (image, "
                    "text, ...)") if lineno == table[0][0] else ""
            form = "as the header row" if columns else \
                f"filename{'<TAB>' if delim == chr(9) else delim}label"
            raise LabelsFileError(f"line {lineno} has {len(row)} fields; expected {width} "
                                  f"({form}){hint}")
        f, lab = columns or (0, 1)
        rows.append((lineno, row[f].strip(), row[lab].strip()))
    if columns:
        rows = rows[1:]
    elif _columns_swapped(rows):
        rows = [(lineno, b, a) for lineno, a, b in rows]
    rows = [(lineno, fname.replace("\\", "/"), label) for lineno, fname, label in rows]
    if not columns and rows and _is_header(rows):
        rows = rows[1:]
    seen = set()
    for lineno, fname, label in rows:
        if not fname or not label:
            raise LabelsFileError(f"line {lineno} has an empty "
                                  f"{'filename' if not fname else 'label'}")
        if Path(fname).as_posix() in seen:
            raise LabelsFileError(f"{fname} is listed twice")
        seen.add(Path(fname).as_posix())
    if not rows:
        raise LabelsFileError("no rows")
    return [(fname, label) for _, fname, label in rows]


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


#: Column names that pick the file and label columns of a header row of more than two fields.
_NAMED_FILE = _HEADER_FILE + ("image", "img", "file_name", "filepath", "image_path", "image_name")
_NAMED_LABEL = _HEADER_LABEL + ("solution", "answer", "captcha", "labels", "code")


def _named_columns(header: List[str]) -> Optional[Tuple[int, int]]:
    """The (file, label) columns a header row of more than two fields names, or None."""
    names = [c.strip().lower() for c in header]
    files = [i for i, n in enumerate(names) if n in _NAMED_FILE]
    labels = [i for i, n in enumerate(names) if n in _NAMED_LABEL]
    return (files[0], labels[0]) if len(files) == 1 and len(labels) == 1 else None


def _columns_swapped(rows: List[Tuple[int, str, str]]) -> bool:
    """True for a ``label,filename`` file: every row but a possible header names an image in its
    second field and none in its first (no label ends in ``.png``, so the order is not in doubt)."""
    body = rows[1:] if rows and not any(map(_is_image_name, rows[0][1:])) else rows
    return bool(body) and all(_is_image_name(b) and not _is_image_name(a) for _, a, b in body)


def _is_header(rows: List[Tuple[int, str, str]]) -> bool:
    _, fname, label = rows[0]
    if fname.lower() in _HEADER_FILE and label.lower() in _HEADER_LABEL:
        return True
    # A header's first field is a column name, not an image file (as the rows below it are).
    return len(rows) > 1 and not _is_image_name(fname) and _is_image_name(rows[1][1])


def find_labels_file(folder: Path) -> Optional[Path]:
    """``folder``'s labels file (one of :data:`LABELS_FILE_NAMES`), or None."""
    for name in LABELS_FILE_NAMES:
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    return None
