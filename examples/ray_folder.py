"""Read a folder of captcha images with Ray Data: ``map_batches`` over an actor pool.

    pip install "captcha-edge[ray]"
    python examples/ray_folder.py captchas/ --actors 2             # a local Ray instance
    python examples/ray_folder.py s3://bucket/captchas/ --address auto   # a running cluster

Each actor gets the :class:`~captcha_edge.Recognizer` by pickle: the model's bytes travel, not
its path, and every actor builds its own interpreter on first use, so the workers need
``captcha-edge`` installed but not the model file. The same code runs on a multi-node cluster;
the one line that changes is the ``ray.init`` call (``ray.init(address="auto")`` on a node of
the cluster, or ``ray.init("ray://head:10001")`` from outside), which ``--address`` selects here.

Output: one JSON line per image, ``{"path", "text", "confidence", "error"}`` like
``captcha-edge predict --json``, then a summary line on stderr (images/s).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from captcha_edge import CaptchaEdgeError, Recognizer

#: The suffixes Ray reads (captcha_edge's own list, without the dot).
from captcha_edge._common import IMAGE_SUFFIXES

EXTENSIONS = sorted(s.lstrip(".") for s in IMAGE_SUFFIXES)


class CaptchaReader:
    """A Ray Data actor: one Recognizer (one interpreter) per actor process."""

    def __init__(self, recognizer: Recognizer, options: dict[str, Any] | None = None) -> None:
        self.rec = recognizer  # unpickled here: interpreters are created on first use
        self.options = options or {}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts, confidences, errors = [], [], []
        for path, data in zip(batch["path"], batch["bytes"]):
            buf = io.BytesIO(bytes(data))
            buf.name = str(path)
            try:
                pred = self.rec.recognize(buf, **self.options)
            except CaptchaEdgeError as exc:  # one bad image never stops the batch
                texts.append(None)
                confidences.append(None)
                errors.append(str(exc))
            else:
                texts.append(pred.text)
                confidences.append(round(pred.confidence, 6))
                errors.append(None)
        return {"path": batch["path"], "text": np.array(texts, dtype=object),
                "confidence": np.array(confidences, dtype=object),
                "error": np.array(errors, dtype=object)}


def recognize_folder(folder: str, recognizer: Recognizer, *, actors: int = 2,
                     batch_size: int = 64, options: dict[str, Any] | None = None,
                     cpus_per_actor: float = 1.0) -> list[dict[str, Any]]:
    """Recognize every image under ``folder`` on ``actors`` Ray actors; rows sorted by path.

    ``ray.init`` must have been called (or Ray starts a local instance on first use). The
    cluster needs more logical CPUs than ``actors * cpus_per_actor``: the file-reading tasks
    need one too, or the pipeline waits for a CPU forever.
    """
    import ray

    ds = ray.data.read_binary_files(folder, include_paths=True, file_extensions=EXTENSIONS)
    out = ds.map_batches(CaptchaReader, fn_constructor_args=(recognizer, options),
                         compute=ray.data.ActorPoolStrategy(size=actors),
                         batch_size=batch_size, batch_format="numpy",
                         num_cpus=cpus_per_actor)
    rows = [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in out.take_all()]
    return sorted(rows, key=lambda r: r["path"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="folder (or any path Ray Data reads) of images")
    parser.add_argument("--model", default=None, help="a .tflite (default: the bundled model)")
    parser.add_argument("--actors", type=int, default=2, help="actor pool size (default 2)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch")
    parser.add_argument("--address", default=None,
                        help="an existing cluster ('auto', 'ray://head:10001'); default: start "
                             "a local instance")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="logical CPUs of the local instance (default: actors + 1, one "
                             "for reading files)")
    args = parser.parse_args(argv)
    if args.address is None and "://" not in args.folder and not Path(args.folder).exists():
        parser.error(f"{args.folder}: no such folder")

    import ray

    rec = Recognizer(args.model)  # the model is read here, once, and shipped as bytes
    if args.address:
        ray.init(address=args.address)                       # multi-node: this line
    else:
        ray.init(num_cpus=args.num_cpus or args.actors + 1, include_dashboard=False)
    t0 = time.perf_counter()
    rows = recognize_folder(args.folder, rec, actors=args.actors, batch_size=args.batch_size)
    wall = time.perf_counter() - t0
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))
    failed = sum(r["error"] is not None for r in rows)
    print(f"{len(rows)} images ({failed} unreadable) in {wall:.2f} s = "
          f"{len(rows) / wall:.1f} images/s with {args.actors} actors", file=sys.stderr)
    ray.shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
