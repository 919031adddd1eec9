"""Dump raw output tensors and decoded texts for the first N captchas (Pi-emulation harness).

Runs the same way on the emulated Raspberry Pi and on x86, with only the runtime installed (no
TensorFlow), so scripts/pi-emulation.sh can compare the two element by element:

    python tests/pi/dump_outputs.py --model m.tflite --images DIR --n 64 --out aarch64.npz

Raw outputs come from one interpreter of the runtime's backend (1 thread) fed with the runtime's
own preprocessing; texts come from `Recognizer.predict` (the user-facing path).
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
from captcha_edge import Recognizer
from captcha_edge import metadata as _metadata
from captcha_edge._backend import backend_version, get_interpreter_class
from captcha_edge.preprocess import make_recipe, to_array


def load(model: Path) -> tuple:
    """(interpreter with 1 thread, input details, output details, preprocessing recipe, backend)."""
    flatbuffer, meta = _metadata.split(model.read_bytes(), str(model))
    backend, cls = get_interpreter_class()
    interp = cls(model_content=flatbuffer, num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    return interp, inp, out, make_recipe(**meta["preprocess"]), backend


def feed(interp, inp: dict, a: np.ndarray) -> None:
    """Set the input tensor from a uint8 (H, W) preprocessed image, quantizing as the model says."""
    if inp["dtype"] == np.float32:
        x = a.astype(np.float32)
    else:
        scale, zero = inp["quantization"]
        if inp["dtype"] == np.uint8 and scale == 1.0 and zero == 0:
            x = a
        else:
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.rint(a / scale) + zero, info.min, info.max).astype(inp["dtype"])
    interp.set_tensor(inp["index"], x.reshape(inp["shape"]))


def images(folder: Path, n: int) -> list:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if len(files) < n:
        raise SystemExit(f"--images {folder}: need {n} images, found {len(files)}")
    return files[:n]


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: python tests/pi/dump_outputs.py --model "
                                        "runtime/models/default_int8.tflite --images "
                                        "../shared/data/captcha_images_v2 --n 64 --out x86.npz")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    interp, inp, out, recipe, backend = load(args.model)
    rec = Recognizer(args.model, num_threads=1)

    files = images(args.images, args.n)
    raws, texts = [], []
    for path in files:
        feed(interp, inp, to_array(path, recipe))
        interp.invoke()
        raws.append(interp.get_tensor(out["index"])[0].copy())
        texts.append(rec.predict(path))

    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez(tmp, raw=np.stack(raws), texts=np.array(texts), names=np.array([p.name for p in files]),
             machine=platform.machine(), backend=backend, backend_version=backend_version(backend),
             numpy=np.__version__)
    tmp.replace(args.out)
    print(f"{platform.machine()}: {len(files)} images -> {args.out.name}: raw {raws[0].dtype} "
          f"{np.stack(raws).shape}, backend {backend} {backend_version(backend)}, "
          f"e.g. {files[0].name} -> {texts[0]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
