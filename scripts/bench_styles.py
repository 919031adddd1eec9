"""Benchmark: train on each panel style with the CLI defaults (or other settings), export
int8, and record accuracy against CPU-seconds, CER, wall and CPU time and the chosen input.

The panel (issue 22) is the four shared styles (``../shared/data``) and the synthetic hard
styles of ``scripts/style_panel.py`` (drawn offline into ``runs/panel`` on first use). Every run
trains on the hash split of its training folder; a shared style is scored on the held-out
validation split (which ``captcha-export`` verifies on), a synthetic style also on its own
unseen test folder (``int8_test``: the exported int8 model through the runtime). The
validation curve (accuracy after each epoch against the training CPU-seconds) is kept, and
``--plot`` draws the curves of the newest entry per style. Each (style, config) appends one entry
to ``benchmarks/results/styles.json``; ``styles.md`` is rewritten from all entries. The machine
is shared, so the load average is sampled while each run trains and CPU seconds (the
``captcha-train`` child's user + system time) are recorded beside wall time.

Examples:
  python scripts/bench_styles.py                               # all styles, CLI defaults
  python scripts/bench_styles.py --styles scratch-grey,small --minutes 30 --threads 1
  python scripts/bench_styles.py --plot docs/img/panel_curves.png --config defaults-30min
  python scripts/bench_styles.py --styles swust --minutes 8 --clock cpu
  python scripts/bench_styles.py --styles digits-color --config deeper -- --convs 1,2,2
  python scripts/bench_styles.py --styles small --train-images 1500 --config n1500-30min-cpu
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "bench_styles"
PANEL = ROOT / "runs" / "panel"
#: Images drawn per synthetic style: training folder (hash-split into train/val) and unseen test.
PANEL_TRAIN, PANEL_TEST = 8000, 1000

#: The label options a user has to give for each shared style (nothing else is style-specific).
STYLES: Dict[str, List[str]] = {
    "v2": ["--data-dir", "{data}/captcha_images_v2"],
    "amazon": ["--data-dir", "{data}/styles/amazon"],
    "digits-color": ["--data-dir", "{data}/styles/digits-color",
                     "--labels", "{data}/styles/digits-color/labels.csv"],
    "swust": ["--data-dir", "{data}/styles/swust", "--recursive",
              "--label-pattern", "^([0-9a-z]+)_"],
}


def _style_panel() -> Any:
    sys.path.insert(0, str(ROOT / "scripts"))
    import style_panel

    return style_panel


#: The synthetic panel styles (scripts/style_panel.py); their label option is a labels.csv.
SYNTHETIC: List[str] = list(_style_panel().STYLES)
#: The holdout styles (style_panel.HOLDOUT): benchmarked only when named, never tuned on.
HOLDOUT: List[str] = list(_style_panel().HOLDOUT)
#: What --styles runs by default: the shared styles and the panel.
PANEL_STYLES: List[str] = [*STYLES, *SYNTHETIC]
SYNTHETIC += HOLDOUT
for _name in SYNTHETIC:
    STYLES[_name] = ["--data-dir", "{train}", "--labels", "{train}/labels.csv"]


def panel_folders(style: str, seed: int = 0, train: int = PANEL_TRAIN) -> Dict[str, Path]:
    """``{"train", "test"}`` folders of a synthetic style (``train`` labelled images, hash-split
    by captcha-train; the same unseen test folder whatever ``train`` is), drawn on first use."""
    return _style_panel().make_panel(PANEL, [style], train, PANEL_TEST, seed)[style]


def score_test(model: Path, folder: Path) -> Dict[str, Any]:
    """Sequence accuracy and CER of a .tflite on a labels.csv folder, through the runtime."""
    import csv

    from captcha_edge import Recognizer
    from captcha_edge.metrics import score

    with (folder / "labels.csv").open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh)][1:]
    rec = Recognizer(str(model))
    preds = rec.predict_batch([str(folder / f) for f, _ in rows])
    truth = [t for _, t in rows]
    s = score(truth, list(preds))
    return {"images": len(rows), "seq_acc": s["seq_acc"], "cer": s["cer"],
            **errors(truth, list(preds))}


def errors(truth: List[str], preds: List[str], top: int = 8) -> Dict[str, Any]:
    """What the wrong answers are: how many differ only in letter case, the sequence accuracy
    when case is ignored, and the commonest character substitutions (truth, read, count) among
    the answers of the right length."""
    from collections import Counter

    wrong = [(t, p) for t, p in zip(truth, preds) if t != p]
    subs: Counter = Counter()
    for t, p in wrong:
        if len(t) == len(p):
            subs.update((a, b) for a, b in zip(t, p) if a != b)
    case_only = sum(t.lower() == p.lower() for t, p in wrong)
    return {"wrong": len(wrong), "case_only": case_only,
            "seq_acc_ignoring_case": 1 - (len(wrong) - case_only) / max(1, len(truth)),
            "top_substitutions": [[a, b, n] for (a, b), n in subs.most_common(top)]}


def curve(run: Path) -> List[List[float]]:
    """``[[train CPU-s, val seq acc], ...]`` after each epoch, from the run's history.csv."""
    import csv

    path = run / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [[float(r["train_cpu_seconds"]), float(r["val_seq_acc"])]
                for r in csv.DictReader(fh)]


def _load_sampler(samples: List[float], stop: threading.Event) -> None:
    while not stop.wait(5.0):
        samples.append(os.getloadavg()[0])


def _children_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def _run(cmd: List[str], log: Path) -> Dict[str, Any]:
    """Run ``cmd`` with its output in ``log``; wall, CPU seconds and load average while it ran."""
    loads: List[float] = [os.getloadavg()[0]]
    stop = threading.Event()
    sampler = threading.Thread(target=_load_sampler, args=(loads, stop), daemon=True)
    sampler.start()
    cpu0, t0 = _children_cpu(), time.monotonic()
    with log.open("w") as fh:
        code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
    wall, cpu = time.monotonic() - t0, _children_cpu() - cpu0
    stop.set()
    return {"exit_code": code, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
            "load_avg_1min": {"mean": round(sum(loads) / len(loads), 2),
                              "max": round(max(loads), 2)}}


def bench_one(style: str, config: str, extra: List[str], a: argparse.Namespace) -> Dict[str, Any]:
    run = a.runs / f"{style}-{config}"
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    folders = panel_folders(style, train=a.train_images) if style in SYNTHETIC else {}
    args = [x.format(data=str(a.data), train=str(folders.get("train", ""))) for x in STYLES[style]]
    budget = ["--max-minutes", str(a.minutes), "--budget-clock", a.clock] if a.minutes else []
    nice = ["nice", "-n", str(a.nice)] if a.nice else []
    cmd = [*nice, sys.executable, "-m", "captcha_edge.train.cli", *args, "--out", str(run),
           "--overwrite", "--threads", str(a.threads), *budget, *extra]
    print(f"[{style}/{config}] {' '.join(cmd)}", flush=True)
    tr = _run(cmd, run.parent / f"{run.name}.train.log")
    return describe(run, style, config, " ".join([*budget, *extra]) or "defaults", tr, a,
                    folders.get("test"))


def describe(run: Path, style: str, config: str, options: str, tr: Dict[str, Any],
             a: argparse.Namespace, test: Optional[Path] = None) -> Dict[str, Any]:
    """The benchmark entry of a trained run folder (and its int8 export unless --no-export)."""
    nice = ["nice", "-n", str(a.nice)] if a.nice else []
    entry: Dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "style": style, "config": config,
        "options": options,
        "note": a.note, "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "threads": a.threads, "train": tr,
    }
    if tr["exit_code"] != 0 or not (run / "metrics.json").is_file():
        entry["error"] = f"captcha-train exited with {tr['exit_code']}"
        return entry
    m = json.loads((run / "metrics.json").read_text())
    meta = json.loads((run / "model.json").read_text())
    choice = meta.get("input_choice") or {}
    entry.update({
        "geometry": f"{meta['preprocess']['width']}x{meta['preprocess']['height']}",
        "color": meta["preprocess"].get("color", "L"),
        "choice_reasons": choice.get("reasons"),
        "model_config": meta["model_config"], "parameters": m["parameters"],
        "train_count": m["train_count"], "val_count": m["val_count"],
        "epochs_run": m["epochs_run"], "best_epoch": m["best_epoch"],
        "stop_reason": m["stop_reason"], "train_seconds": m["train_seconds"],
        "train_cpu_seconds": m.get("train_cpu_seconds"),
        "keras": {"seq_acc": m["val_seq_acc"], "cer": m["val_cer"]},
    })
    hist = (run / "history.csv").read_text().splitlines()
    entry["history_rows"] = len(hist) - 1
    entry["curve_cpu_s_val_acc"] = curve(run)
    epochs = entry["history_rows"] or 1
    entry["cpu_seconds_per_epoch"] = round((m.get("train_cpu_seconds") or 0) / epochs, 1)
    if a.export:
        # issue 23's goal: the ladder tries the other integer routes past a 0.5 pp drop (the
        # entry records the route; exit 1 = none held, the best file is still scored). --force:
        # a --record of a run exported before converts it again instead of stopping at exit 2.
        ex = _run([*nice, sys.executable, "-m", "captcha_edge.export.cli", str(run), "--int8",
                   "--max-drop", "0.5", "--force", "-q"], run.parent / f"{run.name}.export.log")
        entry["export"] = {k: ex[k] for k in ("exit_code", "wall_seconds", "cpu_seconds")}
        rep = run / "export_report.json"
        if rep.is_file():
            r = json.loads(rep.read_text())
            row = next((x for x in r["results"] if x["format"] == "int8"), {})
            v = row.get("verification")
            entry["int8"] = ({"seq_acc": v["seq_acc"], "cer": v["cer"],
                              "frame_agreement": v.get("agreement")} if v
                             else {"error": row.get("error", "no verification")})
            entry["int8_route"] = (r.get("int8_route") or {}).get("route")
        model = run / "model_int8.tflite"
        if test is not None and model.is_file():
            entry["int8_test"] = score_test(model, test)
    return entry


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def write_md(entries: List[Dict[str, Any]], path: Path) -> None:
    lines = ["# Any-style training benchmark (scripts/bench_styles.py)", "",
             "Train on the hash split of each style, score the held-out validation part. "
             "train CPU s = CPU time of the training loop (all threads; the JSON also has the "
             "whole process's); the 2-core machine was shared, so wall time mostly measures the "
             "other jobs (load column).", "",
             "| date (UTC) | style | config | options | geometry | colour | load mean/max | "
             "train wall s | train CPU s | epochs (best) | stop | Keras seq acc % | Keras CER % | "
             "int8 seq acc % | int8 CER % | CPU-s/epoch | int8 unseen test % |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        if "error" in e:
            lines.append(f"| {e['date_utc']} | {e['style']} | {e['config']} | {e['options']} | "
                         f"{e['error']} |" + " |" * 12)
            continue
        i8 = e.get("int8") or {}
        lines.append(
            f"| {e['date_utc']} | {e['style']} | {e['config']} | {e['options']} | "
            f"{e['geometry']} | {e['color']} | {e['train']['load_avg_1min']['mean']}/"
            f"{e['train']['load_avg_1min']['max']} | {e['train']['wall_seconds']:.0f} | "
            f"{e.get('train_cpu_seconds') or 0:.0f} | {e['epochs_run']} ({e['best_epoch']}) | "
            f"{e['stop_reason']} | {_pct(e['keras']['seq_acc'])} | {_pct(e['keras']['cer'])} | "
            f"{_pct(i8.get('seq_acc'))} | {_pct(i8.get('cer'))} | "
            f"{e.get('cpu_seconds_per_epoch', '-')} | "
            f"{_pct((e.get('int8_test') or {}).get('seq_acc'))} |")
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def newest_per_style(entries: List[Dict[str, Any]], configs: List[str]
                     ) -> Dict[str, Dict[str, Any]]:
    """The newest entry with a curve per style, from the first of ``configs`` that has one for
    that style (so one picture can join runs of the same settings made under several names)."""
    out: Dict[str, Dict[str, Any]] = {}
    for config in reversed(configs):  # earlier configs overwrite later ones
        for e in entries:
            if e.get("config") == config and e.get("curve_cpu_s_val_acc"):
                out[e["style"]] = e
    return out


def plot(entries: List[Dict[str, Any]], config: str, path: Path,
         styles: Optional[List[str]] = None) -> int:
    """Validation accuracy against training CPU-minutes, newest entry per style of ``config``
    (comma-separated names: the first that has a style wins), of ``styles`` (None: all)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = [c for c in config.split(",") if c]
    newest = {k: v for k, v in newest_per_style(entries, configs).items()
              if styles is None or k in styles}
    if not newest:
        print(f"bench_styles: error: --plot: no entry of config {config!r} has a curve",
              file=sys.stderr)
        return 2
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    colours = plt.get_cmap("tab20").colors  # 11 styles: the default cycle repeats after 10
    for i, (style, e) in enumerate(sorted(newest.items())):
        xs = [0.0] + [c / 60 for c, _ in e["curve_cpu_s_val_acc"]]
        ys = [0.0] + [100 * v for _, v in e["curve_cpu_s_val_acc"]]
        test = (e.get("int8_test") or {}).get("seq_acc")
        held = (e.get("int8") or {}).get("seq_acc")
        label = style + (f" (int8 unseen {100 * test:.1f} %)" if test is not None else
                         f" (int8 held-out {100 * held:.1f} %)" if held is not None else "")
        ax.plot(xs, ys, marker=".", label=label, color=colours[(2 * i) % 20 + (2 * i) // 20])
    ax.axhline(95, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("training CPU-minutes (one core)")
    ax.set_ylabel("validation sequence accuracy %")
    ax.set_ylim(0, 100)
    used = [c for c in configs if any(e["config"] == c for e in newest.values())]
    ax.set_title("captcha-train defaults on the style panel\n(" + ", ".join(used) + ")",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)
    print(f"wrote {path} ({len(newest)} styles)")
    return 0


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog=__doc__.split("\n\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--styles", default=",".join(PANEL_STYLES),
                   help=f"comma-separated subset of {', '.join(PANEL_STYLES)} (default: all "
                        f"of these), or the holdout styles {', '.join(HOLDOUT)}")
    p.add_argument("--config", default="defaults", help="name recorded for these settings")
    p.add_argument("--minutes", type=float, default=0.0,
                   help="pass --max-minutes M (default: the CLI's own budget)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="cpu",
                   help="--budget-clock for --minutes (default cpu: load-independent)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--nice", type=int, default=5, help="run the children with nice -n N")
    p.add_argument("--no-export", dest="export", action="store_false",
                   help="skip captcha-export --int8")
    p.add_argument("--train-images", type=int, default=PANEL_TRAIN, metavar="N",
                   help=f"labelled images drawn per synthetic style (default {PANEL_TRAIN}; "
                        "fewer: the small-data regime of a real site's few thousand)")
    p.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    p.add_argument("--runs", type=Path, default=RUNS, help="where run folders go (git-ignored)")
    p.add_argument("--note", default="", help="free text stored with each entry")
    p.add_argument("--record", type=Path, metavar="RUN",
                   help="record an existing run folder instead of training (one style)")
    p.add_argument("--plot", type=Path, metavar="PNG",
                   help="draw the curves of the newest --config entry per style (of --styles) "
                        "and exit (--config a,b: a style without an entry of a takes b's)")
    p.add_argument("extra", nargs="*", help="extra captcha-train options (after --)")
    a = p.parse_args(argv)
    styles = _style_panel().pick_styles(a.styles, list(STYLES), "bench_styles")
    if styles is None:
        return 2
    if any(s not in SYNTHETIC for s in styles) and not a.data.is_dir():
        print(f"bench_styles: error: --data {a.data}: no such folder", file=sys.stderr)
        return 2
    from captcha_edge._common import atomic_write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "styles.json"
    if a.plot is not None:
        return plot(json.loads(out.read_text()) if out.exists() else [], a.config, a.plot,
                    styles)
    if a.train_images < 100:
        print(f"bench_styles: error: --train-images must be >= 100; got {a.train_images}",
              file=sys.stderr)
        return 2
    if a.record is not None and len(styles) != 1:
        print("bench_styles: error: --record needs exactly one --styles entry", file=sys.stderr)
        return 2
    for style in styles:
        if a.record is not None:  # a run trained elsewhere (e.g. by an older version)
            m = json.loads((a.record / "metrics.json").read_text())
            tr = {"exit_code": 0, "wall_seconds": m["train_seconds"],
                  "cpu_seconds": m.get("train_cpu_seconds"),
                  "load_avg_1min": {"mean": None, "max": None}}
            # a synthetic style is also scored on its unseen split, as bench_one does
            test = panel_folders(style)["test"] if style in SYNTHETIC else None
            entry = describe(a.record, style, a.config, a.note or "recorded run", tr, a, test)
        else:
            entry = bench_one(style, a.config, list(a.extra), a)
        # Two benchmark queues may finish at once: the read-append-replace runs under a lock.
        with (RESULTS / ".styles.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = json.loads(out.read_text()) if out.exists() else []
            entries.append(entry)
            atomic_write_json(out, entries)
            write_md(entries, RESULTS / "styles.md")
        print(json.dumps({k: entry.get(k) for k in ("style", "config", "geometry", "color",
                                                    "keras", "int8", "train")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
