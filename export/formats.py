"""The export formats: one table that drives the CLI choices, the per-format options and the docs.

Nothing here imports TensorFlow, so the CLI can check every argument against this table first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple


@dataclass(frozen=True)
class Format:
    """One TFLite flavour that ``captcha-export`` can write."""

    name: str
    suffix: str  # file name: <stem>_<suffix>.tflite
    summary: str  # one line for --help and docs/export.md
    weights: str  # weight storage
    compute: str  # what the arithmetic runs in
    input_dtype: str  # the interpreter's input tensor
    calibrated: bool  # needs representative images


FORMATS: Dict[str, Format] = {
    f.name: f
    for f in (
        Format("float32", "float32", "no quantization; the reference TFLite model",
               "float32", "float32", "float32", False),
        Format("float16", "float16", "float16 weights, dequantized to float32 at load",
               "float16", "float32", "float32", False),
        Format("dynamic", "dynamic", "int8 weights, activations quantized on the fly "
               "(dynamic-range); no calibration",
               "int8", "hybrid int8/float32", "float32", False),
        Format("int8", "int8", "full integer: every compute op int8, uint8 raw-pixel input, "
               "calibrated on training images",
               "int8", "int8", "uint8", True),
    )
}

#: Output tensor types a full-int8 model may end with (``--int8-output``).
INT8_OUTPUTS: Tuple[str, ...] = ("int8", "float32")


def parse_formats(text: str) -> List[str]:
    """``"float32,int8"`` -> ``["float32", "int8"]`` (table order); ``"all"`` -> every format.

    Raises:
        ValueError: empty list or an unknown name (the message lists the valid ones).
    """
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"--formats is empty; valid formats: {', '.join(FORMATS)} or all")
    if "all" in names:
        return list(FORMATS)
    for n in names:
        if n not in FORMATS:
            raise ValueError(f"unknown format {n!r}; valid formats: {', '.join(FORMATS)} or all")
    return [n for n in FORMATS if n in names]


def markdown_table() -> str:
    """The formats as a Markdown table (pasted into docs/export.md; a test keeps them in sync)."""
    rows = ["| format | weights | compute | input | calibration | what it is |",
            "|---|---|---|---|---|---|"]
    for f in FORMATS.values():
        rows.append(f"| `{f.name}` | {f.weights} | {f.compute} | {f.input_dtype} | "
                    f"{'yes' if f.calibrated else 'no'} | {f.summary} |")
    return "\n".join(rows)
