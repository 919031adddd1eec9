"""Benchmark: training images per CPU-second of the real training step, old vs new recipe.

Each config builds the model of ``captcha_edge.train.model`` and trains it through the same
``tf.data`` pipeline ``captcha-train`` uses (augmentation on, except in the ``-noaug``
configs), on one thread, in its own child process; the configs run interleaved for ``--rounds``
rounds, so the ratio between them comes from one run on the same (noisy, shared) machine. Process CPU time (all threads) is the clock.
Results are appended to ``benchmarks/results/train_speed.json``.

Examples:
  python scripts/bench_train_speed.py                          # 240x64 grey, old vs new
  python scripts/bench_train_speed.py --geometry 344x64 --color RGB --rounds 2
  python scripts/bench_train_speed.py --child '{"stem": "s2"}'   (one measurement, JSON out)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from _results import append_result  # scripts/ is on sys.path when a script in it runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train_speed.json"

#: The recipes compared: the model options of the CLI defaults before and after issue 22.
CONFIGS: Dict[str, Dict[str, Any]] = {
    "old-defaults": {"stem": "pool", "skip": False, "time_pool": 8},
    "stem-s2": {"stem": "s2", "skip": False, "time_pool": 8},
    "new-defaults": {"stem": "s4", "skip": True, "time_pool": 8},
    # what --stem auto / --convs auto pick where 200k training images fit the budget (30 min)
    "auto-s2-c112": {"stem": "s2", "skip": True, "time_pool": 8, "convs": [1, 1, 2]},
    # the same two graphs with the conv head instead of the BiLSTM (--head conv)
    "s4-conv": {"stem": "s4", "skip": True, "time_pool": 8, "head": "conv"},
    "auto-s2-c112-conv": {"stem": "s2", "skip": True, "time_pool": 8, "convs": [1, 1, 2],
                          "head": "conv"},
    # the two conv-head graphs as captcha-train runs them: 8 steps per call of the compiled
    # step (Options.steps_per_execution), so the callbacks run once per 8 steps
    "s4-conv-spe8": {"stem": "s4", "skip": True, "time_pool": 8, "head": "conv",
                     "steps_per_execution": 8},
    "auto-s2-c112-conv-spe8": {"stem": "s2", "skip": True, "time_pool": 8, "convs": [1, 1, 2],
                               "head": "conv", "steps_per_execution": 8},
    # the two conv-head graphs without the augmentation (--no-augment): what it costs a step
    "s4-conv-noaug": {"stem": "s4", "skip": True, "time_pool": 8, "head": "conv",
                      "augment": False},
    "auto-s2-c112-conv-noaug": {"stem": "s2", "skip": True, "time_pool": 8, "convs": [1, 1, 2],
                                "head": "conv", "augment": False},
}


def measure(arch: Dict[str, Any], height: int, width: int, channels: int, batch: int,
            steps: int, threads: int) -> Dict[str, Any]:
    """Images per CPU-second of ``steps`` training steps (rounded up to whole executions, after
    8 warm-up steps)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    from captcha_edge.train import fit
    from captcha_edge.train.augment import AugmentConfig
    from captcha_edge.train.ctc import ctc_loss, pack_targets
    from captcha_edge.train.fit import configure_tensorflow
    from captcha_edge.train.model import ModelConfig, build_model

    configure_tensorflow(threads, 0, "off")
    import keras

    arch = dict(arch)
    augment = AugmentConfig() if arch.pop("augment", True) else None
    spe = int(arch.pop("steps_per_execution", 1))
    if "convs" in arch:  # JSON has lists
        arch["convs"] = tuple(arch["convs"])
    cfg = ModelConfig(num_classes=38, height=height, width=width, channels=channels, **arch)
    rng = np.random.default_rng(0)
    n = batch * 40
    shape = (n, height, width) if channels == 1 else (n, height, width, channels)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    length = max(1, min(6, cfg.time_steps // 5))
    targets = pack_targets(rng.integers(0, 37, (n, length)), np.full(n, length))
    train, _ = build_model(cfg, keras)
    train.compile(optimizer=keras.optimizers.Adam(1e-3, clipnorm=5.0), loss=ctc_loss,
                  steps_per_execution=spe)
    ds = fit.make_dataset(images, targets, batch, 0, augment).repeat()
    # Model.fit, as captcha-train runs it (one compiled step a batch; train_on_batch adds Python
    # overhead of its own); the pipeline (augmentation) runs inside the timed part too.
    steps = -(-steps // spe) * spe  # Keras runs whole executions only

    class Schedule(keras.callbacks.Callback):  # type: ignore[misc]
        """What captcha-train's callback does before every call: read the step, set the rate."""

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            step = int(self.model.optimizer.iterations.numpy())
            self.model.optimizer.learning_rate.assign(1e-3 / (1.0 + 1e-4 * step))

    train.fit(ds, epochs=1, steps_per_epoch=spe * max(1, 8 // spe), verbose=0,
              callbacks=[Schedule()])  # trace and warm up
    c0, t0 = time.process_time(), time.monotonic()
    train.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[Schedule()])
    cpu, wall = time.process_time() - c0, time.monotonic() - t0
    return {"images": batch * steps, "cpu_seconds": round(cpu, 3), "wall_seconds": round(wall, 3),
            "img_per_cpu_s": round(batch * steps / cpu, 1), "frames": cfg.time_steps,
            "parameters": int(train.count_params())}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--geometry", default="240x64", help="WIDTHxHEIGHT (default 240x64)")
    p.add_argument("--color", choices=("L", "RGB"), default="L")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=60, help="timed steps per measurement")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    p.add_argument("--no-record", dest="record", action="store_false")
    p.add_argument("--child", metavar="JSON", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    try:
        w, h = (int(v) for v in a.geometry.lower().split("x"))
    except ValueError:
        print(f"bench_train_speed: error: --geometry must be WIDTHxHEIGHT; got {a.geometry!r}",
              file=sys.stderr)
        return 2
    channels = 3 if a.color == "RGB" else 1
    if a.child is not None:
        print(json.dumps(measure(json.loads(a.child), h, w, channels, a.batch_size, a.steps,
                                 a.threads)))
        return 0
    names = [c for c in a.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        print(f"bench_train_speed: error: --configs: unknown {', '.join(unknown)} (known: "
              f"{', '.join(CONFIGS)})", file=sys.stderr)
        return 2
    runs: Dict[str, List[Dict[str, Any]]] = {c: [] for c in names}
    for r in range(a.rounds):
        for c in names:
            cmd = [sys.executable, __file__, "--child", json.dumps(CONFIGS[c]), "--geometry",
                   a.geometry, "--color", a.color, "--batch-size", str(a.batch_size),
                   "--steps", str(a.steps), "--threads", str(a.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            runs[c].append(res)
            print(f"round {r + 1}/{a.rounds} {c}: {res['img_per_cpu_s']} img/CPU-s", flush=True)
    summary = {c: statistics.median(x["img_per_cpu_s"] for x in runs[c]) for c in names}
    base = names[0]
    entry = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "geometry": a.geometry, "color": a.color, "batch_size": a.batch_size,
        "threads": a.threads, "steps": a.steps, "rounds": a.rounds,
        "cpu": platform.processor() or platform.machine(), "load_avg_1min": os.getloadavg()[0],
        "configs": {c: CONFIGS[c] for c in names},
        "median_img_per_cpu_s": summary,
        "ratio_to_" + base: {c: round(summary[c] / summary[base], 2) for c in names},
        "runs": runs,
    }
    print(json.dumps({k: entry[k] for k in ("median_img_per_cpu_s", "ratio_to_" + base)}))
    if a.record:
        append_result(RESULTS, entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
