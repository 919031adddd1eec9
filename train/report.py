"""Run-folder artifacts: atomic writes, history.csv, curves.png, samples.png (no TensorFlow)."""
from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

from .._common import atomic_write_with


def atomic_write(path: Path, write: Callable[[Path], object], suffix: str = "") -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it over ``path``."""
    atomic_write_with(path, write, suffix)


def write_bytes(path: Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    atomic_write(path, lambda p: p.write_bytes(data))


def write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode("utf-8"))


def write_history(path: Path, rows: Sequence[Dict[str, Any]]) -> None:
    """Atomically write per-epoch rows as CSV (columns in first-seen order)."""
    cols: List[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_bytes(path, buf.getvalue().encode("utf-8"))


def _save_figure(fig: Any, path: Path) -> None:
    """Lay out and write ``fig``. Labels in a script the plotting font lacks (Chinese, say) are
    drawn as boxes in samples.png; matplotlib's warning for each missing glyph is not repeated to
    the user, whose model and files are unaffected."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=100)
    write_bytes(path, buf.getvalue())


def plot_curves(path: Path, rows: Sequence[Dict[str, Any]]) -> None:
    """curves.png: training/validation loss and validation sequence accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["loss"] for r in rows], label="train loss")
    ax1.plot(epochs, [r["val_loss"] for r in rows], label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("CTC loss")
    ax1.set_yscale("log")
    ax1.legend()
    ax2.plot(epochs, [r["val_seq_acc"] for r in rows], label="val sequence accuracy")
    ax2.plot(epochs, [1 - r["val_cer"] for r in rows], label="val 1 - CER")
    ax2.set_xlabel("epoch")
    ax2.set_ylim(0, 1.01)
    ax2.legend(loc="lower right")
    _save_figure(fig, path)
    plt.close(fig)


def plot_samples(path: Path, images: np.ndarray, truths: Sequence[str], preds: Sequence[str],
                 n: int = 24) -> None:
    """samples.png: validation images titled truth -> prediction, the wrong ones first, in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wrong = [i for i, (t, p) in enumerate(zip(truths, preds)) if t != p]
    right = [i for i, (t, p) in enumerate(zip(truths, preds)) if t == p]
    pick = (wrong + right)[:n]
    cols = 4
    rows = max(1, (len(pick) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3, rows * 1.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, pick):
        bad = truths[i] != preds[i]
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{'WRONG ' if bad else ''}{truths[i]} -> {preds[i] or '(empty)'}",
                     color="red" if bad else "black", fontsize=9)
    fig.suptitle(f"validation: {len(wrong)} wrong of {len(truths)}", fontsize=10)
    _save_figure(fig, path)
    plt.close(fig)
