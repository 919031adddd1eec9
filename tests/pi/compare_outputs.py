"""Compare two dump_outputs.py files element by element and print the verdict.

    python tests/pi/compare_outputs.py x86_64.npz aarch64.npz [--require-identical]

Exit 1 when a decoded text differs (always), or when any raw output value differs and
--require-identical is given. The first output line is the verdict (scripts/pi-emulation.sh
puts it in its summary).
"""
from __future__ import annotations

import sys

import numpy as np


def main(argv: list) -> int:
    require = "--require-identical" in argv
    argv = [a for a in argv if a != "--require-identical"]
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    a, b = (np.load(p) for p in argv)
    tag = lambda d: f"{d['machine']} {d['backend']} {d['backend_version']}"
    if list(a["names"]) != list(b["names"]):
        print(f"NOT COMPARABLE: the two files hold different images ({argv[0]} vs {argv[1]})")
        return 1
    ra, rb = a["raw"], b["raw"]
    if ra.shape != rb.shape or ra.dtype != rb.dtype:
        print(f"NOT COMPARABLE: {ra.dtype}{ra.shape} vs {rb.dtype}{rb.shape}")
        return 1
    diff = np.abs(ra.astype(np.int64) - rb.astype(np.int64)) if ra.dtype.kind in "iu" \
        else np.abs(ra.astype(np.float64) - rb.astype(np.float64))
    n_diff = int(np.count_nonzero(diff))
    imgs_diff = int(np.count_nonzero(diff.reshape(len(ra), -1).max(axis=1)))
    argmax_eq = float(np.mean(ra.argmax(-1) == rb.argmax(-1)))
    ta, tb = list(a["texts"]), list(b["texts"])
    text_eq = sum(x == y for x, y in zip(ta, tb))
    same_texts = text_eq == len(ta)
    print(f"bit-identical: {'YES' if n_diff == 0 else 'NO'}: {n_diff} of {ra.size} {ra.dtype} output "
          f"values differ (max |diff| {diff.max()} LSB, in {imgs_diff} of {len(ra)} images); "
          f"decoded texts {text_eq}/{len(ta)} identical; per-timestep argmax "
          f"{100 * argmax_eq:.2f} % equal [{tag(a)} vs {tag(b)}]")
    for name, x, y in zip(a["names"], ta, tb):
        if x != y:
            print(f"  text differs: {name}: {x!r} vs {y!r}")
    if not same_texts:
        return 1
    return 1 if require and n_diff else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
