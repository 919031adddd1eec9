"""int8 / float32 invoke-time RATIO for two models, measured in one run, interleaved.

    python tests/pi/invoke_ratio.py --int8 a.tflite --float32 b.tflite --image x.png --label emulation

Prints only a ratio (never a time): under qemu-user the absolute numbers say nothing about a
real Raspberry Pi, and even the ratio is only indicative (emulated SIMD costs differ from silicon).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from captcha_edge.preprocess import to_array
from dump_outputs import feed, load  # same folder


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--int8", type=Path, required=True)
    ap.add_argument("--float32", type=Path, required=True)
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--label", default="emulation")
    args = ap.parse_args(argv)

    models = {}
    for key in ("int8", "float32"):
        interp, inp, _out, recipe, backend = load(getattr(args, key))
        feed(interp, inp, to_array(args.image, recipe))
        for _ in range(3):  # warm-up: first invokes pack weights
            interp.invoke()
        models[key] = interp
    times: dict = {k: [] for k in models}
    for _ in range(args.rounds):
        for k, interp in models.items():
            t = time.perf_counter()
            interp.invoke()
            times[k].append(time.perf_counter() - t)
    ratio = statistics.median(times["int8"]) / statistics.median(times["float32"])
    print(f"int8/float32 invoke time ratio ({args.label}, 1 thread, median of {args.rounds} "
          f"interleaved rounds, backend {backend}): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
