#!/usr/bin/env python
"""Render the measured figures in README.md and docs/*.md from benchmarks/results/*.json.

Examples:
    python scripts/render_results.py            # rewrite every marked region in place
    python scripts/render_results.py --check    # exit 1 and name each region that differs
    python scripts/render_results.py --list     # every region and the files it is rendered from

A region is the text between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` (HTML
comments, invisible in rendered markdown; ``<!-- bench:decoder -->``, the block that
scripts/bench_decoder_table.py writes, is one too). When the opening marker ends its line the
region is a block (tables); otherwise it is inline text inside a hand-written sentence. The
JSON is the source of truth: edit a figure by rerunning its benchmark, then this script, never
by hand inside a region. The bundled models' sizes and accuracy come from the model files
themselves (runtime/models/*.tflite and their embedded metadata). Needs only the standard
library: no TensorFlow, no numpy.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import re
import sys
import tempfile
import zipfile
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ROOT / "runtime" / "models"
DOC_GLOBS = ("README.md", "docs/*.md")

MARKER = re.compile(
    r"<!-- (?P<name>(?:results|bench):[a-z0-9-]+) -->(?P<body>.*?)<!-- /(?P=name) -->", re.S)


# --------------------------------------------------------------------------------------------
# Sources


class Sources:
    """Where the figures come from; the test points these at a temporary copy."""

    def __init__(self, results: Path = RESULTS, models: Path = MODELS) -> None:
        self.results, self.models = Path(results), Path(models)
        self._cache: dict[str, Any] = {}

    def json(self, name: str) -> Any:
        """The parsed ``benchmarks/results/<name>``."""
        if name not in self._cache:
            self._cache[name] = json.loads((self.results / name).read_text(encoding="utf-8"))
        return self._cache[name]

    def model(self, stem: str) -> tuple[int, dict[str, Any]]:
        """(file size in bytes, embedded metadata) of ``runtime/models/<stem>.tflite``."""
        key = f"model:{stem}"
        if key not in self._cache:
            path = self.models / f"{stem}.tflite"
            with zipfile.ZipFile(path) as zf:  # the metadata is an appended zip member
                meta = json.loads(zf.read("captcha_edge.json"))
            self._cache[key] = (path.stat().st_size, meta)
        return self._cache[key]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# Number formats (as the hand-written docs had them)

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven",
                8: "eight", 9: "nine", 10: "ten"}


def fix(x: float, digits: int = 0, sep: bool = False) -> str:
    """``x`` rounded half up (1586.5 -> '1587', 40.05 -> '40.1', as a person rounds; Python's
    format rounds the binary value half to even), with thousands separators when ``sep``."""
    q = Decimal(repr(float(x))).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    return f"{q:,f}" if sep else f"{q:f}"


def pct(x: float, digits: int = 1) -> str:
    """0.974 -> '97.4 %', 1.0 -> '100 %' (a whole hundred reads better without decimals)."""
    return "100 %" if x == 1 else f"{x * 100:.{digits}f} %"


def pct2(x: float) -> str:
    """0.9957 -> '99.57 %' (export tables keep two decimals, 100 included)."""
    return f"{fix(x * 100, 2)} %"


def count(x: float) -> str:
    """Thousands separated, no decimals: 1966.6 -> '1,967'."""
    return fix(x, 0, True)


def rate(x: float) -> str:
    """captchas/s: '63.3' below 100, else '1,086'."""
    return fix(x, 1) if x < 100 else count(x)


def ms(x: float) -> str:
    """Latency in ms: '1.5', '22.9' below 100, else '190'."""
    return fix(x, 1) if x < 100 else fix(x, 0, True)


def cpu_ms(x: float) -> str:
    """Server CPU per captcha: '1.18' below 10, else '30.7'."""
    return fix(x, 2) if x < 10 else fix(x, 1)


def span(values: Iterable[float], fmt: Callable[[float], str], unit: str = "") -> str:
    """'lo–hi' (en dash), or one value when both ends format alike."""
    vals = list(values)
    lo, hi = fmt(min(vals)), fmt(max(vals))
    return f"{lo}{unit}" if lo == hi else f"{lo}–{hi}{unit}"


def kib(n: int) -> str:
    """Bytes as KB of 1024, no decimals: 255812 -> '250 KB'."""
    return f"{fix(n / 1024, 0)} KB"


def kib1(n: int) -> str:
    """Bytes as KB of 1024, one decimal: 1304430 -> '1273.9 KB' (the export tables)."""
    return f"{fix(n / 1024, 1)} KB"


def table(header: Sequence[str], align: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:  # an empty cell is "| |", as the docs write it
        return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"
    lines = [line(header), "|" + "|".join(align) + "|", *(line(r) for r in rows)]
    return "\n".join(lines) + "\n"


def bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


# --------------------------------------------------------------------------------------------
# Regions


Render = Callable[[Sources], str]


class Region(NamedTuple):
    name: str
    sources: tuple[str, ...]
    render: Render
    block: bool


REGIONS: dict[str, Region] = {}


def region(name: str, *sources: str, block: bool = False) -> Callable[[Render], Render]:
    """Register ``fn`` as the renderer of ``<!-- NAME -->`` (``results:`` unless it has a
    prefix); ``sources`` are file names under benchmarks/results (or ``runtime/models``)."""
    full = name if ":" in name else f"results:{name}"

    def deco(fn: Render) -> Render:
        REGIONS[full] = Region(full, sources, fn, block)
        return fn
    return deco


# ---- the bundled models (runtime/models) ----------------------------------------------------

@region("bundled-models", "runtime/models", "int8-invoke-ratios.json")
def _bundled_models(src: Sources) -> str:
    i8, _ = src.model("default_int8")
    f32, _ = src.model("default_float32")
    dyn, _ = src.model("default_dynamic")
    case = _invoke_ratio_case(src)
    x86 = span(case["int8_over_float32_x86"], lambda v: fix(v, 2), "×")
    return (f"int8 {kib(i8)} ({fix(i8 / f32 * 100, 1)} % of float32), float32 {kib(f32)}, "
            f"dynamic {kib(dyn)}; an int8 invoke takes {x86} the time of a float32 one on x86")


@region("bundled-int8-size", "runtime/models")
def _bundled_int8_size(src: Sources) -> str:
    return kib(src.model("default_int8")[0])


@region("bundled-accuracy", "runtime/models")
def _bundled_accuracy(src: Sources) -> str:
    acc = src.model("default_int8")[1]["accuracy"]
    return f"{pct(acc['seq_acc'])} of the captchas (CER {pct(acc['cer'], 2)})"


def _invoke_ratio_case(src: Sources) -> dict[str, Any]:
    cases = src.json("int8-invoke-ratios.json")["cases"]
    return next(c for c in cases if c["case"] == "v2 bundled model")


@region("pi-invoke-ratio", "int8-invoke-ratios.json")
def _pi_invoke_ratio(src: Sources) -> str:
    case = _invoke_ratio_case(src)
    pi = [v for v in case["int8_over_float32_emulated_pi"] if v is not None]
    x86 = [v for v in case["int8_over_float32_x86"] if v is not None]
    runs = "one run" if len(pi) == 1 else f"{NUMBER_WORDS.get(len(pi), len(pi))} runs"
    rows = case.get("later_runs_emulated_pi", [])
    later = [r["int8_over_float32"] for r in rows]
    busy = sum(bool(r["other_jobs_beside"]) for r in rows)
    more = "" if not later else (
        f"; {NUMBER_WORDS.get(len(later), len(later))} later runs of the Pi step read "
        f"{span(later, lambda v: fix(v, 2), '×')} under emulation"
        f"{f', {NUMBER_WORDS.get(busy, busy)} with other jobs beside them' if busy else ''}: the "
        "emulated ratio moves a lot from run to run, and int8 was the faster in every one")
    return (f"{span(pi, lambda v: fix(v, 2), '×')} the invoke time of its float32 twin under "
            f"emulation, but {span(x86, lambda v: fix(v, 2), '×')} natively on the x86 host "
            f"({runs}, each ratio from the same run{more})")


# ---- training -------------------------------------------------------------------------------

@region("train", "train_cpu.json")
def _train(src: Sources) -> str:
    run = src.json("train_cpu.json")[-1]
    right = round(run["val_seq_acc"] * run["val_count"])
    at99 = run["first_epoch_at_99"]
    return (f"{pct(run['val_seq_acc'])} validation sequence accuracy ({right}/{run['val_count']}); "
            f"99 % reached after ≈ {fix(at99['train_cpu_seconds'], 0)} CPU-seconds "
            f"({fix(at99['train_seconds'], 0)} s wall at load ≈ "
            f"{fix(run['load_avg_1min']['mean'], 0)})")


def _style_run(src: Sources, style: str, config: str) -> dict[str, Any]:
    runs = [r for r in src.json("styles.json") if r["style"] == style and r["config"] == config]
    return runs[-1]  # type: ignore[no-any-return]


def _int8_case(src: Sources, case: str) -> dict[str, Any]:
    return next(c for c in src.json("int8-cases.json") if c["case"] == case)


def _warm(src: Sources, style: str, n: int, warm: bool) -> dict[str, Any]:
    runs = [r for r in src.json("warmstart.json")
            if r["style"] == style and r["train"] == n and r["warm"] == warm]
    return runs[-1]  # type: ignore[no-any-return]


@region("styles", "styles.json", "int8-cases.json", "warmstart.json")
def _styles(src: Sources) -> str:
    dc = _style_run(src, "digits-color", "defaults-30min-cpu")["int8"]["seq_acc"]
    sw = _style_run(src, "swust", "defaults-30min-cpu")["int8"]["seq_acc"]
    am = _int8_case(src, "amazon-15min")["int8"]["seq_acc"]
    warm, cold = _warm(src, "amazon", 100, True), _warm(src, "amazon", 100, False)
    return (f"digits-color {pct(dc)} int8, swust {pct(sw)}, amazon {pct(am)}; with "
            f"`--init-from` a v2 run, 100 amazon images reach {pct(warm['result']['val_seq_acc'])} "
            f"in {warm['minutes']:g} CPU-minutes ({pct(cold['result']['val_seq_acc'])} from "
            f"scratch)")


#: The issue-22 panel comparison at 4 CPU-minutes: the defaults against the graph and schedule
#: before issue 22 (for the shared styles, their earlier 4-5 CPU-minute runs of those defaults).
PANEL_STYLES = ("scratch-grey", "wide-color", "mixed-case", "small", "dotted-digits", "varlen",
                "v2", "amazon", "digits-color", "swust")
PANEL_OLD_SHARED = {"v2": "new-defaults-gated", "amazon": "new-defaults",
                    "digits-color": "new-defaults-gated", "swust": "new-defaults-gated"}


def _entry(src: Sources, style: str, config: str) -> dict[str, Any] | None:
    """The newest styles.json entry of ``style`` and ``config`` that did not fail, or None."""
    runs = [r for r in src.json("styles.json") if r["style"] == style and r["config"] == config
            and "error" not in r]
    return runs[-1] if runs else None


def _panel_entry(src: Sources, style: str, old: bool) -> dict[str, Any] | None:
    config = (PANEL_OLD_SHARED.get(style, "old-defaults-4min-cpu") if old
              else "defaults-4min-cpu")
    return _entry(src, style, config)


def _ms_per_image(e: dict[str, Any], old: bool) -> float:
    """Training CPU-ms per training image seen (validation included), from the epoch count."""
    passes = -(-int(e["train_count"]) // 16)
    steps = passes if old else max(passes, 200)  # --epochs auto: epochs of >= 200 steps
    return 1000.0 * float(e["train_cpu_seconds"]) / (int(e["epochs_run"]) * steps * 16)


def _panel_acc(e: dict[str, Any]) -> tuple[float, str]:
    test = e.get("int8_test")
    if test:
        return float(test["seq_acc"]), "unseen"
    return float(e["int8"]["seq_acc"]), "held-out"


def _first_read(e: dict[str, Any]) -> str:
    hit = [c for c, a in e.get("curve_cpu_s_val_acc") or [] if a > 0]
    return f"{hit[0]:.0f}" if hit else ("-" if not e.get("curve_cpu_s_val_acc") else "never")


@region("panel-compare", "styles.json", block=True)
def _panel_compare(src: Sources) -> str:
    rows = []
    for style in PANEL_STYLES:
        new, old = _panel_entry(src, style, False), _panel_entry(src, style, True)
        if new is None:
            continue
        acc, where = _panel_acc(new)
        o_acc = _panel_acc(old)[0] if old else None
        rows.append([
            style, f"{new['geometry']} {'grey' if new['color'] == 'L' else new['color']}",
            fix(_ms_per_image(new, False), 1),
            fix(_ms_per_image(old, True), 1) if old else "-", _first_read(new),
            bold(pct(acc), o_acc is None or acc >= o_acc) + f" ({where})",
            (pct(o_acc) + f" ({old['geometry']})") if old and o_acc is not None else "-",
            pct2(new["int8"]["frame_agreement"]) if new.get("int8") else "-"])
    return table(["style", "input (new)", "ms/img new", "ms/img old", "val > 0 at CPU-s",
                  "int8 new", "int8 old", "frame agreement (new)"],
                 ["---", "---", "---:", "---:", "---:", "---:", "---:", "---:"], rows)


#: The whole panel at the CLI's own 30-minute budget (one thread), with the defaults of now (the
#: conv head, --contrast auto, --stem auto): config conv-30min-cpu in styles.json.
PANEL_30_CONFIG = "conv-30min-cpu"
#: The styles whose input the tall-input rule (data.tall_geometry) changed at 30 minutes were run
#: again with it: their newest defaults are config tall-30min-cpu, preferred where present.
PANEL_30_TALL = "tall-30min-cpu"
#: The styles whose run stopped on the old "perfect and stable" rule (the best epoch perfect, not
#: the last five) were run again with the new one: config stable-30min-cpu, preferred first.
PANEL_30_STABLE = "stable-30min-cpu"
#: The two styles the 30-minute default had trained with s4 (wide-color, varlen) were run with
#: the s2 graph at the input shrunk for it, which --stem auto has chosen since (same options,
#: same seed): config s2-c112-forced-30min-cpu, preferred before all.
PANEL_30_FINE_SHRINK = "s2-c112-forced-30min-cpu"
#: Every panel style was run again once training ran 8 steps per call of the compiled step
#: (fit.execution_steps), at the same inputs and graphs: config spe8-30min-cpu.
PANEL_30_SPE8 = "spe8-30min-cpu"
#: Newest defaults first.
PANEL_30_PREFERENCE = (PANEL_30_SPE8, PANEL_30_FINE_SHRINK, PANEL_30_STABLE, PANEL_30_TALL,
                       PANEL_30_CONFIG)
#: What each style read before, at the same budget: the defaults with the BiLSTM head (the runs
#: of the table this one replaced: s2 runs of dotted-digits and scratch-grey were recorded as
#: s2-c112-30min-cpu, wide-color's s4 run as defaults-30min-cpu, the others as auto-30min-cpu).
PANEL_30_BEFORE = {"scratch-grey": "s2-c112-30min-cpu", "dotted-digits": "s2-c112-30min-cpu",
                   "wide-color": "defaults-30min-cpu"}


def _graph(e: dict[str, Any]) -> str:
    mc = e["model_config"]
    convs = ",".join(str(c) for c in mc.get("convs", [1, 1, 1]))
    return f"{mc.get('stem', 'pool')}, convs {convs}"


#: The 30-minute table's styles: the panel, with the low-contrast style made for issue 23.
PANEL_30_STYLES = PANEL_STYLES[:6] + ("faint-grey",) + PANEL_STYLES[6:]


@region("panel-30min", "styles.json", block=True)
def _panel_30min(src: Sources) -> str:
    rows = []
    for style in PANEL_30_STYLES:
        e = next((x for x in (_entry(src, style, c) for c in PANEL_30_PREFERENCE) if x), None)
        if e is None:
            rows.append([style] + ["not run"] + ["-"] * 8)
            continue
        acc, where = _panel_acc(e)
        before = _entry(src, style, PANEL_30_BEFORE.get(style, "auto-30min-cpu"))
        # The same style's newest run at 1 step a call (the configs after spe8 in the list).
        one_step = next((x for x in (_entry(src, style, c) for c in PANEL_30_PREFERENCE[1:])
                         if x), None) if e["config"] == PANEL_30_SPE8 else None
        minutes = re.search(r"--max-minutes ([0-9.]+)", str(e.get("options", "")))
        budget = 60.0 * (float(minutes.group(1)) if minutes else 30.0)
        hit = [c for c, a in e.get("curve_cpu_s_val_acc") or [] if a > 0]
        first = f"{hit[0]:.0f} ({100 * hit[0] / budget:.0f} %)" if hit else "never"
        rows.append([
            style, f"{e['geometry']} {'grey' if e['color'] == 'L' else e['color']}", _graph(e),
            f"{e['epochs_run']}", fix(float(e["cpu_seconds_per_epoch"]), 1), first,
            bold(pct(acc), acc >= 0.95) + f" ({where})",
            pct2(e["int8"]["frame_agreement"]) if e.get("int8") else "-",
            str(e.get("int8_route") or "-"),
            (f"{pct(_panel_acc(one_step)[0])}, {one_step['epochs_run']} epochs of "
             f"{fix(float(one_step['cpu_seconds_per_epoch']), 1)}") if one_step else "-",
            pct(_panel_acc(before)[0]) if before else "-"])
    return table(["style", "input", "graph", "epochs", "CPU-s/epoch", "val > 0 at CPU-s",
                  "int8", "frame agreement", "int8 route", "1 step a call (30 min)",
                  "BiLSTM head (30 min)"],
                 ["---", "---", "---", "---:", "---:", "---:", "---:", "---:", "---", "---:",
                  "---:"], rows)


#: The logit clip A/B (export/logitclip.py): the same runs exported without the clip (the route
#: ladder's choice) and again with it (bench_styles.py --record): (before, after, budget).
LOGIT_CLIP_PAIRS = (("conv-30min-cpu", "conv-30min-cpu-clip", "30 min"),
                    ("ab-conv-8min", "ab-conv-8min-clip", "8 min"))


@region("logit-clip-ab", "styles.json", block=True)
def _logit_clip_ab(src: Sources) -> str:
    rows = []
    for before_cfg, after_cfg, budget in LOGIT_CLIP_PAIRS:
        for style in PANEL_30_STYLES:
            before, after = _entry(src, style, before_cfg), _entry(src, style, after_cfg)
            if before is None or after is None or not before.get("int8") or not after.get("int8"):
                continue
            (b_acc, where), a_acc = _panel_acc(before), _panel_acc(after)[0]
            rows.append([
                style, budget, pct(float(before["keras"]["seq_acc"])),
                f"{pct(b_acc)} ({before.get('int8_route') or '-'})",
                pct2(before["int8"]["frame_agreement"]),
                f"{pct(a_acc)} ({after.get('int8_route') or '-'})",
                bold(pct2(after["int8"]["frame_agreement"]),
                     after["int8"]["frame_agreement"] >= before["int8"]["frame_agreement"]),
                where])
    return table(["style", "budget", "Keras (validation)", "int8 without the clip (route)",
                  "frame agreement", "int8 with the clip (route)", "frame agreement", "int8 on"],
                 ["---", "---", "---:", "---:", "---:", "---:", "---:", "---"], rows)


#: The --head A/B of issue 22 (8 CPU-minutes a run, one thread, the rest the defaults).
HEAD_AB_STYLES = ("scratch-grey", "faint-grey", "mixed-case", "wide-color")


@region("head-ab", "styles.json", block=True)
def _head_ab(src: Sources) -> str:
    def cell(e: dict[str, Any] | None, strong: bool) -> str:
        if e is None:
            return "-"
        acc, _ = _panel_acc(e)
        return (bold(pct(acc), strong) + f" ({e['epochs_run']} epochs, "
                f"{fix(float(e['cpu_seconds_per_epoch']), 1)} CPU-s each; frame agreement "
                f"{pct2(e['int8']['frame_agreement'])})")
    rows = []
    for style in HEAD_AB_STYLES:
        lstm, conv = _entry(src, style, "ab-lstm-8min"), _entry(src, style, "ab-conv-8min")
        if lstm is None and conv is None:
            continue
        e = conv or lstm
        assert e is not None
        a_l = _panel_acc(lstm)[0] if lstm else -1.0
        a_c = _panel_acc(conv)[0] if conv else -1.0
        rows.append([style, f"{e['geometry']} {'grey' if e['color'] == 'L' else e['color']}",
                     cell(lstm, a_l > a_c), cell(conv, a_c >= a_l)])
    return table(["style", "input", "BiLSTM head (`--head lstm`)", "conv head (default)"],
                 ["---", "---", "---:", "---:"], rows)


#: The --stem A/B of issue 22 (6 CPU-minutes a run): two styles in stem_ab.json (run by hand,
#: with the s2-alone and pool arms), three by bench_styles.py in styles.json.
STEM_AB_STYLES = ("dotted-digits", "scratch-grey", "mixed-case", "v2", "digits-color")


def _stem_ab_arm(src: Sources, style: str, stem: str,
                 convs: Sequence[int]) -> tuple[float, int, float] | None:
    """(best validation accuracy, epochs, CPU-s per epoch) of one arm, or None."""
    for r in src.json("stem_ab.json")["runs"]:
        if (r["style"], r["stem"], list(r["convs"])) == (style, stem, list(convs)):
            c = r["curve"]
            cpu = c[-1].get("train_cpu_seconds")
            return (max(x["val_seq_acc"] for x in c), len(c),
                    float(cpu) / len(c) if cpu else float("nan"))
    config = {"s4": "ab-s4-6min-cpu", "s2": "ab-s2-c112-6min-cpu"}[stem]
    runs = [r for r in src.json("styles.json") if r["style"] == style and r["config"] == config]
    if not runs or list(convs) != ([1, 1, 1] if stem == "s4" else [1, 1, 2]):
        return None
    e = runs[-1]
    return (max(a for _, a in e["curve_cpu_s_val_acc"]), int(e["epochs_run"]),
            float(e["cpu_seconds_per_epoch"]))


@region("stem-ab", "stem_ab.json", "styles.json", block=True)
def _stem_ab(src: Sources) -> str:
    def cell(arm: tuple[float, int, float] | None, strong: bool) -> str:
        if arm is None:
            return "-"
        acc, epochs, per = arm
        cost = "" if per != per else f", {fix(per, 0)} CPU-s each"  # NaN: stopped by hand
        return bold(pct(acc), strong) + f" ({epochs} epochs{cost})"

    rows = []
    for style in STEM_AB_STYLES:
        s4 = _stem_ab_arm(src, style, "s4", (1, 1, 1))
        deep = _stem_ab_arm(src, style, "s2", (1, 1, 2))
        alone = _stem_ab_arm(src, style, "s2", (1, 1, 1))
        if s4 is None or deep is None:
            continue
        geo = next((f"{r['geometry']}" for r in src.json("stem_ab.json")["runs"]
                    if r["style"] == style), None) or next(
            f"{e['geometry']} {'grey' if e['color'] == 'L' else e['color']}"
            for e in src.json("styles.json")
            if e["style"] == style and e["config"] == "ab-s4-6min-cpu")
        rows.append([style, geo, cell(s4, s4[0] > deep[0]), cell(deep, deep[0] >= s4[0]),
                     cell(alone, False)])
    return table(["style", "input", "s4, convs 1,1,1", "s2, convs 1,1,2 (auto now)",
                  "s2, convs 1,1,1"], ["---", "---", "---:", "---:", "---:"], rows)


@region("train-speed-ratio", "train_speed.json")
def _train_speed_ratio(src: Sources) -> str:
    r = src.json("train_speed.json")[-1]["ratio_to_old-defaults"]
    return f"{fix(r.get('s4-conv-spe8', r.get('s4-conv', r['new-defaults'])), 2)}x"


#: bench_train_speed.py's configs, as the train-speed sentence names them.
TRAIN_SPEED_NAMES = (
    ("stem-s2", "`s2`"),
    ("new-defaults", "`s4` + skip, BiLSTM head"),
    ("auto-s2-c112", "`s2` + convs 1,1,2 + skip, BiLSTM head"),
    ("s4-conv", "`s4` + skip, conv head (the auto graph when the budget is short)"),
    ("auto-s2-c112-conv", "`s2` + convs 1,1,2 + skip, conv head (the auto graph where 200k "
                          "images fit)"),
    ("s4-conv-spe8", "the `s4` conv-head graph at 8 steps a call, as captcha-train now runs "
                     "it"),
    ("auto-s2-c112-conv-spe8", "the `s2` conv-head graph at 8 steps a call"),
    ("s4-conv-noaug", "the `s4` conv-head graph without augmentation"),
    ("auto-s2-c112-conv-noaug", "the `s2` conv-head graph without augmentation"),
)


@region("train-speed", "train_speed.json")
def _train_speed(src: Sources) -> str:
    e = src.json("train_speed.json")[-1]
    m, r = e["median_img_per_cpu_s"], e["ratio_to_old-defaults"]
    parts = [f"old graph {fix(m['old-defaults'], 1)} images per CPU-second"]
    headline = "s4-conv-spe8" if "s4-conv-spe8" in m else "s4-conv"
    for key, name in TRAIN_SPEED_NAMES:
        if key in m:
            ratio = f"{fix(r[key], 2)}x"
            parts.append(f"{name} {fix(m[key], 1)} ("
                         + (f"**{ratio}**" if key == headline else ratio) + ")")
    return (", ".join(parts) + f"; measured {e['date_utc'][:10]} at a load average of "
            f"{fix(e['load_avg_1min'], 1)} on 2 cores, Model.fit as captcha-train runs it, "
            "ratios from the same run")


@region("warmstart-table", "warmstart.json", block=True)
def _warmstart_table(src: Sources) -> str:
    runs = src.json("warmstart.json")
    styles: dict[str, dict[int, dict[bool, dict[str, Any]]]] = {}
    for r in runs:  # a later run of the same (style, N, start) replaces an earlier one
        styles.setdefault(r["style"], {}).setdefault(r["train"], {})[r["warm"]] = r

    def cell(r: dict[str, Any] | None, strong: bool) -> str:
        if r is None:
            return "-"
        res = r["result"]
        got = [(lvl, res[f"reached_{lvl}"]) for lvl in (90, 95) if res.get(f"reached_{lvl}")]
        if len(got) == 2 and not strong:
            got = got[1:]  # past 95 %: the 95 % mark says enough, except in the bold cells
        text = bold(pct(res["val_seq_acc"]), strong)
        marks = ", ".join(f"{lvl} % at {fix(x['train_cpu_seconds'], 0)} s" for lvl, x in got)
        return f"{text} ({marks})" if marks else text

    rows = []
    for style, by_n in styles.items():
        val = next(iter(next(iter(by_n.values())).values()))["val"]
        for i, n in enumerate(sorted(by_n)):
            cold, warm = by_n[n].get(False), by_n[n].get(True)
            # bold: the fewest images with which the warm start passes 95 % first
            first95 = min((m for m in by_n if (by_n[m].get(True) or {}).get("result", {})
                           .get("reached_95")), default=None)
            rows.append([f"{style} ({val} held out)" if i == 0 else "", str(n),
                         cell(cold, False), cell(warm, n == first95)])
    return table(["style", "N train", "cold", "warm from v2"], ["---"] * 4, rows)


# ---- export ---------------------------------------------------------------------------------

def _real840(src: Sources) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    rep = src.json("export-real840-report.json")
    by_format = {r["format"]: r for r in rep["results"]}
    bench = {b["name"].split("[")[1].rstrip("]"): b["stats"]["median"] * 1000
             for b in src.json("export-real840-bench.json")["benchmarks"]
             if b["group"] == "export-invoke"}
    return rep, by_format, bench


@region("export-invoke", "export-real840-bench.json")
def _export_invoke(src: Sources) -> str:
    _, _, bench = _real840(src)
    return f"{fix(bench['int8'], 1)} vs {fix(bench['float32'], 1)} ms"


@region("export", "export-real840-report.json", "export-real840-bench.json")
def _export(src: Sources) -> str:
    rep, fmt, bench = _real840(src)
    i8, f32 = fmt["int8"], fmt["float32"]
    v = i8["verification"]
    same = "=" if v["seq_acc"] == rep["keras"]["seq_acc"] else "vs"
    ratio = bench["int8"] / bench["float32"]
    speed = (f"**int8 is about {fix(ratio, 1)}× slower than float32 on x86**" if ratio > 1 else
             f"**int8 is about {fix(1 / ratio, 1)}× faster than float32 on x86**")
    share = fix(i8["size_bytes"] / f32["size_bytes"] * 100, 1)
    return (f"int8 {kib(i8['size_bytes'])} = {share} % "
            f"of float32 ({kib(f32['size_bytes'])}); int8 validation accuracy "
            f"{pct(v['seq_acc'])} {same} Keras ({fix(rep['int8_drop_pp'], 1)} pp drop), "
            f"{pct(v['agreement'])} frame-argmax agreement. {speed} "
            f"({_export_invoke(src)} per invoke, one thread)")


@region("export-real840-table", "export-real840-report.json", "export-real840-bench.json",
        block=True)
def _export_real840_table(src: Sources) -> str:
    _, fmt, bench = _real840(src)
    f32, i8 = fmt["float32"], fmt["int8"]
    fv, iv = f32["verification"], i8["verification"]
    share = i8["size_bytes"] / f32["size_bytes"] * 100
    return table(["", "float32", "int8"], ["---"] * 3, [
        ["file", kib1(f32["size_bytes"]),
         f"{kib1(i8['size_bytes'])} ({fix(share, 1)} % of float32)"],
        ["val sequence accuracy / CER", f"{pct2(fv['seq_acc'])} / {pct2(fv['cer'])}",
         f"{pct2(iv['seq_acc'])} / {pct2(iv['cer'])}"],
        ["frame agreement with Keras", pct2(fv["agreement"]), pct2(iv["agreement"])],
        ["single-thread invoke (pytest-benchmark median)", f"{fix(bench['float32'], 1)} ms",
         f"{fix(bench['int8'], 1)} ms"],
    ])


INT8_CASE_LABELS = {"amazon-5min": "amazon, 5 min", "digits-color-5min": "digits-color, 5 min",
                    "swust-5min": "swust, 5 min"}


@region("int8-cases-table", "int8-cases.json", block=True)
def _int8_cases_table(src: Sources) -> str:
    rows = []
    for i, (case, label) in enumerate(INT8_CASE_LABELS.items()):
        c = _int8_case(src, case)
        drop = c["drop_pp"]
        share = f"{fix(c['int8']['size'] / c['float32']['size'] * 100, 1)} %"
        rows.append([label, pct2(c["keras"]["seq_acc"]),
                     f"{pct2(c['int8']['seq_acc'])} ({c['route'].split(' (')[0]})",
                     f"{'0.00' if round(drop, 2) == 0 else f'{drop:+.2f}'} pp",
                     pct2(c["int8"]["agreement"]), share + (" of float32" if i == 0 else "")])
    return table(["case", "Keras", "int8 (route)", "drop", "frame agreement", "int8 size"],
                 ["---"] * 6, rows)


# ---- decoder --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _decoder_module() -> Any:
    """scripts/bench_decoder_table.py, whose table and targets the decoder regions reuse."""
    path = Path(__file__).resolve().parent / "bench_decoder_table.py"
    spec = importlib.util.spec_from_file_location("bench_decoder_table", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _decoder_groups(src: Sources) -> tuple[dict[str, dict[str, float]], dict[str, Any], str]:
    """bench_decoder_table.load() without its side effect (it trims the JSON in place), and the
    load average at the start."""
    data = dict(src.json("decoder-cpu.json"))   # summarize() sets data["load_range"]
    groups, loads = _decoder_module().summarize(data, "median")
    return groups, data, f"{loads[0]:.1f}" if loads else "not recorded"


@region("bench:decoder", "decoder-cpu.json", block=True)
def _decoder_table(src: Sources) -> str:
    """The table of scripts/bench_decoder_table.py, with the header taken from the JSON
    (that script prints this machine's CPU count and the load average when it ran)."""
    mod = _decoder_module()
    groups, meta, at_start = _decoder_groups(src)
    text: str = mod.make_table(groups, meta, "median", at_start)
    mi = meta.get("machine_info", {})
    cpu = mi.get("cpu", {})
    timer = next((b.get("options", {}).get("timer") for b in meta["benchmarks"]), "?")
    header = (f"µs per sample (median of the rounds, timer `{timer}`), one run of "
              f"`benchmarks/test_bench_decoder.py`; {meta.get('datetime', '')[:19]} UTC, "
              f"{cpu.get('brand_raw', mi.get('machine', '?'))}, {cpu.get('count', '?')} CPUs, "
              f"1-min load average {meta['load_range']} during the run ({at_start} at start).")
    return header + text[text.index("\n"):]


def _dec(src: Sources) -> dict[str, dict[str, float]]:
    return _decoder_groups(src)[0]


def _f0(v: float) -> str:
    return fix(v, 0)


@region("decoder", "decoder-cpu.json")
def _decoder(src: Sources) -> str:
    g = _dec(src)
    fmt = _decoder_module()._fmt
    exact = [g[f"beam10-exact-T50-C20-{k}"] for k in ("peaky", "flat")]
    beam_cy = [r["cython"] / 1000 for r in exact]
    beam_fast = [r["fast-ctc-decode"] / r["cython"] for r in exact]
    beam_py = [r["python"] / r["cython"] for k, r in g.items()
               if k.startswith("beam10-exact-") and "python" in r]
    greedy = [g[f"greedy-T50-C20-{k}"] for k in ("flat", "peaky")]
    gcy = [r["cython"] for r in greedy]
    gpy = [r["python"] / r["cython"] for r in greedy]
    gfast = [r["fast-ctc-decode"] for r in greedy]
    faster = "faster" if all(r["cython"] < r["fast-ctc-decode"] for r in greedy) else "not faster"
    target = ("**over the 1.5 µs target**" if max(gcy) > 1.5 else "within the 1.5 µs target")
    return (f"exact beam search width 10 at T=50 C=20 in "
            f"{span(beam_cy, lambda v: fix(v, 2))} ms, "
            f"{span(beam_fast, lambda v: fix(v, 0))}× faster than fast-ctc-decode, and the "
            f"Cython beam {span(beam_py, lambda v: fix(round(v, -1), 0))}× faster than its "
            f"Python twin; greedy {span(gcy, lambda v: fix(v, 1))} µs per call, "
            f"{span(gpy, lambda v: fix(v, 0))}× the Python twin and {faster} than "
            f"fast-ctc-decode here ({span(gfast, lambda v: fix(v, 1))} µs), but {target} "
            f"({' and '.join(fmt(v) for v in sorted(gcy))} µs in this run")


@region("decoder-summary", "decoder-cpu.json")
def _decoder_summary(src: Sources) -> str:
    mod = _decoder_module()
    fmt = mod._fmt
    g, meta, _ = _decoder_groups(src)
    flat, peaky = g["greedy-T50-C20-flat"], g["greedy-T50-C20-peaky"]
    pruned = g["beam10-pruned-T50-C20-peaky"]["cython"]
    exact = [g[f"beam10-exact-T50-C20-{k}"] for k in ("peaky", "flat")]
    ok = "met" if pruned <= 70 else "not met"
    faster = ("faster" if all(r["cython"] < r["fast-ctc-decode"] for r in (flat, peaky))
              else "not faster")
    unmet: dict[str, list[str]] = {}
    for group, checks in mod.TARGETS.items():
        for text, fn in checks:
            try:
                if not fn(g[group]):
                    unmet.setdefault(text, []).append(group)
            except (KeyError, ZeroDivisionError):
                unmet.setdefault(f"{text} (not measured)", []).append(group)
    missed = "; ".join(f"{t} ({', '.join(gs)})" for t, gs in unmet.items()) or "none"
    return (f"{meta.get('datetime', '')[:10]}, load {meta['load_range']}: greedy at T=50 C=20 is "
            f"{fmt(flat['cython'])} µs (flat) and {fmt(peaky['cython'])} µs (peaky), "
            f"{span([r['python'] / r['cython'] for r in (flat, peaky)], _f0)}× the Python "
            f"twin, {faster} than fast-ctc-decode ({fix(flat['fast-ctc-decode'], 1)} and "
            f"{fix(peaky['fast-ctc-decode'], 1)} µs); pruned beam width 10 is {fix(pruned, 0)} µs "
            f"(≤ 70: {ok}); exact beam width 10 is "
            f"{span([r['cython'] for r in exact], _f0)} µs, "
            f"{span([r['fast-ctc-decode'] / r['cython'] for r in exact], _f0)}× faster "
            f"than fast-ctc-decode. Targets not met in this run: {missed}")


# ---- serve ----------------------------------------------------------------------------------

def _rows(d: dict[str, Any], key: str, images: int) -> dict[int, dict[str, Any]]:
    return {r["concurrency"]: r for r in d[key] if r["images_per_request"] == images}


@region("serve-one-process", "serve.json")
def _serve_one_process(src: Sources) -> str:
    d = src.json("serve.json")
    one, sixteen = _rows(d, "serve", 1), _rows(d, "serve", 16)
    dd = _rows(d, "ddddocr_fastapi", 1)
    r1 = [one[c]["captchas_per_s"] / dd[c]["captchas_per_s"] for c in sorted(one) if c in dd]
    r16 = [sixteen[c]["captchas_per_s"] / dd[c]["captchas_per_s"]
           for c in sorted(sixteen) if c in dd and c > 1]
    errors = sum(r["errors"] for k in ("serve", "serve_microbatch_2ms", "ddddocr_fastapi")
                 for r in d.get(k, []))
    rss = dict((n, mb) for n, mb in d["rss"]["samples_requests_mb"])
    first = min(n for n in rss if n > 0)
    last = max(rss)
    rss_vals = [mb for n, mb in rss.items() if n >= first]
    return (f"one image per request {count(one[1]['captchas_per_s'])} captchas/s at 1 client "
            f"(p50 {fix(one[1]['p50_ms'], 1)} ms), {count(one[16]['captchas_per_s'])} at 16 "
            f"(p99 {fix(one[16]['p99_ms'], 0)} ms), {count(one[64]['captchas_per_s'])} at 64; "
            f"16 images per request up to "
            f"{count(max(r['captchas_per_s'] for r in sixteen.values()))} captchas/s. "
            f"{span(r1, lambda v: fix(v, 1))}× a FastAPI wrapper around ddddocr in the same run "
            f"with one image per request, {span(r16, lambda v: fix(v, 1))}× with 16; "
            f"{errors} errors; RSS flat at {span(rss_vals, lambda v: fix(v, 1))} MB from "
            f"{count(first)} to {count(last)} requests")


def _by_layout(d: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["layout"], r["load"]): r for r in d["results"]}


BATCH_BEST = "2 processes x 1 worker, default_dynamic"
DDDD = "ddddocr FastAPI wrapper"


@region("serve-batching", "serve_batching.json")
def _serve_batching(src: Sources) -> str:
    d = src.json("serve_batching.json")
    r = _by_layout(d)
    best = r[(BATCH_BEST, "16 images/request, 64 clients")]
    dd = max((v for (lay, _), v in r.items() if lay == DDDD),
             key=lambda v: v["median_captchas_per_s"])
    s16 = r[(BATCH_BEST, "1 image/request, 16 clients")]
    s64 = r[(BATCH_BEST, "1 image/request, 64 clients")]
    rounds = " / ".join(count(v) for v in sorted(best["captchas_per_s"]))
    return (f"**{count(best['median_captchas_per_s'])} captchas/s** with 16 images per request "
            f"at 64 clients (rounds {rounds}), ddddocr {fix(dd['median_captchas_per_s'], 0)} "
            f"at its best load: "
            f"**{fix(best['median_captchas_per_s'] / dd['median_captchas_per_s'], 1)}×**; "
            f"one image per request {count(s16['median_captchas_per_s'])} at 16 clients "
            f"(p99 {span(s16['p99_ms'], lambda v: fix(v, 0))} ms) and "
            f"{count(s64['median_captchas_per_s'])} at 64")


WRK_BEST = "2 processes x 1 worker"


def _wrk(src: Sources) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["layout"], r["clients"]): r for r in src.json("serve_wrk.json")["results"]}


@region("serve-wrk", "serve_wrk.json")
def _serve_wrk(src: Sources) -> str:
    w = _wrk(src)
    a, b = w[(WRK_BEST, 16)], w[(WRK_BEST, 64)]
    under = sum(1 for p in a["p99_ms"] if p <= 20)
    n = len(a["p99_ms"])
    rounds = (f"all {NUMBER_WORDS.get(n, n)} rounds" if under == n else
              f"{NUMBER_WORDS.get(under, under)} of {NUMBER_WORDS.get(n, n)} rounds")
    return (f"**{count(a['median']['requests_per_s'])} requests/s at 16 clients, p99 "
            f"{fix(a['median']['p99_ms'], 1)} ms** ({rounds} under 20 ms), "
            f"{count(b['median']['requests_per_s'])} at 64")


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


@region("serve-goals", "serve_batching.json", "serve_wrk.json")
def _serve_goals(src: Sources) -> str:
    """Issue 13's three goals, met or not by the figures of the two regions above."""
    r = _by_layout(src.json("serve_batching.json"))
    ours = [v["median_captchas_per_s"] for (lay, load), v in r.items() if lay != DDDD]
    at64 = [v["median_captchas_per_s"] for (lay, load), v in r.items()
            if lay != DDDD and load.endswith("64 clients")]
    dddd = max(v["median_captchas_per_s"] for (lay, _), v in r.items() if lay == DDDD)
    p99 = _wrk(src)[(WRK_BEST, 16)]["median"]["p99_ms"]
    goals = [("1500 captchas/s at 64 clients", max(at64) >= 1500),
             ("20× ddddocr", max(ours) / dddd >= 20),
             ("p99 ≤ 20 ms at 16 clients (with wrk)", p99 <= 20)]
    met = [g for g, ok in goals if ok]
    unmet = [g for g, ok in goals if not ok]
    parts = [f"{_and(gs)} {'is' if len(gs) == 1 else 'are'} **{word}**"
             for gs, word in ((met, "met"), (unmet, "not met")) if gs]
    return ", ".join(parts)


WRK_LAYOUTS = [  # (layout in the JSON, label in docs/serve.md, bold)
    (WRK_BEST, "`--processes 2 --workers 1` (batching while busy, pyspng)", True),
    ("2 processes x 1 worker, PNGs by Pillow (CAPTCHA_EDGE_PNG=pillow)",
     "the same, PNGs by Pillow (`CAPTCHA_EDGE_PNG=pillow`)", False),
    ("2 processes x 1 worker, --batch-while-busy off", "the same, `--batch-while-busy off`", False),
    ("1 process x 2 workers", "1 process x 2 workers (the default)", False),
]


@region("serve-wrk-table", "serve_wrk.json", block=True)
def _serve_wrk_table(src: Sources) -> str:
    w = _wrk(src)
    def f1(v: float) -> str:
        return fix(v, 1)

    def c16(r: dict[str, Any], strong: bool) -> str:
        m = r["median"]
        return (f"{bold(count(m['requests_per_s']), strong)} ({span(r['requests_per_s'], count)}); "
                f"{fix(m['p50_ms'], 1)} / {bold(f1(m['p99_ms']) + ' ms', strong)} "
                f"({span(r['p99_ms'], f1)}); {fix(m['server_cpu_ms_per_request'], 2)} ms")

    def c64(r: dict[str, Any], strong: bool) -> str:
        m = r["median"]
        return (f"{bold(count(m['requests_per_s']), strong)} ({span(r['requests_per_s'], count)}); "
                f"{fix(m['p50_ms'], 1)} / {fix(m['p99_ms'], 1)} ms")

    rows = [[label, c16(w[(lay, 16)], strong), c64(w[(lay, 64)], strong)]
            for lay, label, strong in WRK_LAYOUTS if (lay, 16) in w and (lay, 64) in w]
    return table(["server", "16 clients", "64 clients"], ["---", "---:", "---:"], rows)


@region("serve-wrk-batching-ab", "serve_wrk.json")
def _serve_wrk_ab(src: Sources) -> str:
    w = _wrk(src)
    on = {c: w[(WRK_BEST, c)]["median"] for c in (16, 64)}
    off = {c: w[("2 processes x 1 worker, --batch-while-busy off", c)]["median"] for c in (16, 64)}
    return (f"{count(on[16]['requests_per_s'])} vs {count(off[16]['requests_per_s'])} requests/s "
            f"at 16 clients (p99 {fix(on[16]['p99_ms'], 1)} vs {fix(off[16]['p99_ms'], 1)} ms) and "
            f"{count(on[64]['requests_per_s'])} vs {count(off[64]['requests_per_s'])} at 64")


def _versions(d: dict[str, Any]) -> str:
    """'ddddocr 1.6.1 onnxruntime 1.32.0 ...' -> ('1.6.1', '1.32')."""
    words = d.get("ddddocr_versions", "").split()
    v = dict(zip(words[::2], words[1::2]))
    ort = ".".join(v.get("onnxruntime", "?").split(".")[:2])
    return f"FastAPI + ddddocr {v.get('ddddocr', '?')} (onnxruntime {ort})"


BATCHING_LAYOUTS = [
    (BATCH_BEST, "`--processes 2 --workers 1` (batching while busy, pyspng)", True),
    ("2 processes x 1 worker, PNGs by Pillow (CAPTCHA_EDGE_PNG=pillow), default_dynamic",
     "the same, PNGs by Pillow", False),
    ("1 process x 2 workers, default_dynamic", "1 process x 2 workers (the default)", False),
    (DDDD, "", False),
]


@region("serve-batching-table", "serve_batching.json", block=True)
def _serve_batching_table(src: Sources) -> str:
    d = src.json("serve_batching.json")
    r = _by_layout(d)
    loads = ["1 image/request, 16 clients", "1 image/request, 64 clients",
             "16 images/request, 64 clients"]
    rows = []
    for lay, label, strong in BATCHING_LAYOUTS:
        cells = [label or _versions(d).split(" (")[0]]
        for i, load in enumerate(loads):
            x = r.get((lay, load))
            if x is None:
                cells.append("—")
                continue
            med = bold(count(x["median_captchas_per_s"]), strong)
            if i == 2:
                cells.append(f"{med} ({' / '.join(count(v) for v in sorted(x['captchas_per_s']))})")
            else:
                unit = " ms" if i == 0 else ""
                cells.append(f"{med} ({span(x['captchas_per_s'], count)}; "
                             f"p99 {span(x['p99_ms'], count)}{unit})")
        rows.append(cells)
    return table(["server", *loads],
                 ["---", "---:", "---:", "---:"], rows)


PROCESS_LAYOUTS = [
    ("1 process x 2 workers, default_dynamic",
     "1 process x 2 workers (the default), `default_dynamic`", False),
    ("1 process x 2 workers, default_float32", "1 process x 2 workers, `default_float32`", False),
    ("2 processes x 1 worker, default_dynamic", "`--processes 2 --workers 1`, `default_dynamic`",
     True),
    ("2 processes x 1 worker, default_float32", "`--processes 2 --workers 1`, `default_float32`",
     False),
]


@region("serve-processes-table", "serve_processes.json", block=True)
def _serve_processes_table(src: Sources) -> str:
    d = src.json("serve_processes.json")
    r = _by_layout(d)
    f0 = lambda v: fix(v, 0)  # noqa: E731
    rows = []
    for lay, label, strong in PROCESS_LAYOUTS:
        a = r[(lay, "1 image/request, 16 clients")]
        b = r[(lay, "16 images/request, 64 clients")]
        big = bold(count(b["median_captchas_per_s"]), strong)
        if strong:
            big += f" ({' / '.join(count(v) for v in sorted(b['captchas_per_s']))})"
        rows.append([label, f"{count(a['median_captchas_per_s'])} (p99 {span(a['p99_ms'], f0)} ms)",
                     big])
    a = r[(DDDD, "1 image/request, 16 clients")]
    b = r[(DDDD, "1 image/request, 64 clients")]
    rows.append([_versions(d), f"{count(a['median_captchas_per_s'])} (p99 "
                 f"{span(a['p99_ms'], f0)} ms)",
                 f"{count(b['median_captchas_per_s'])} at 64 clients, one image/request"])
    return table(["server", "1 image/request, 16 clients", "16 images/request, 64 clients"],
                 ["---", "---:", "---:"], rows)


@region("serve-table", "serve.json", block=True)
def _serve_table(src: Sources) -> str:
    d = src.json("serve.json")
    groups = [("serve", 1, "captcha-edge serve, 1 image/request"),
              ("serve", 16, "captcha-edge serve, 16 images/request"),
              ("serve_microbatch_2ms", 1, "`--batch-window-ms 2`, 1 image/request"),
              ("serve_microbatch_2ms", 16, "`--batch-window-ms 2`, 16 images/request"),
              ("ddddocr_fastapi", 1, f"{_versions(d)}, 1 image/request")]
    rows = []
    for key, images, label in groups:
        for i, (c, r) in enumerate(sorted(_rows(d, key, images).items())):
            rows.append([label if i == 0 else "", str(c), rate(r["captchas_per_s"]),
                         ms(r["p50_ms"]), ms(r["p99_ms"]), str(r["errors"]),
                         cpu_ms(r["server_cpu_ms_per_captcha"])])
    return table(["server (same run)", "clients", "captchas/s", "p50 ms", "p99 ms", "errors",
                  "server CPU ms / captcha"], ["---", *["---:"] * 6], rows)


def _serve_section(name: str, key: str) -> Callable[[Callable[[dict[str, Any]], str]], Render]:
    """Register ``fn`` as the renderer of region NAME, called with serve.json's section KEY."""
    def deco(fn: Callable[[dict[str, Any]], str]) -> Render:
        return region(name, "serve.json")(lambda src: fn(src.json("serve.json")[key]))
    return deco


@_serve_section("serve-rss", "rss")
def _serve_rss(rss: dict[str, Any]) -> str:
    s = dict((n, mb) for n, mb in rss["samples_requests_mb"])
    first = min(n for n in s if n > 0)
    last = max(s)
    return (f"{fix(s[0], 1)} MB after start-up, {fix(s[first], 1)} MB at {count(first)} and "
            f"{fix(s[last], 1)} MB at **{count(last)}** one-image requests "
            f"({rss['concurrency']} clients): flat, pyspng included; **{rss['errors']} errors** in "
            f"{count(rss['requests'])} requests")


@_serve_section("serve-ray", "ray")
def _serve_ray(ray: dict[str, Any]) -> str:
    return (f"{fix(ray['ray_2_actors_images_per_s'], 0)} images/s "
            f"({fix(ray['ray_seconds'], 1)} s, warm actors) vs `captcha-edge predict --threads 2` "
            f"{fix(ray['predict_threads_2_images_per_s'], 0)} images/s "
            f"({fix(ray['predict_seconds_incl_startup'], 1)} s including start-up)")


@region("serve-vs-ddddocr", "serve.json")
def _serve_vs_ddddocr(src: Sources) -> str:
    d = src.json("serve.json")
    dd = _rows(d, "ddddocr_fastapi", 1)

    def ratios(key: str, images: int) -> dict[int, float]:
        return {c: r["captchas_per_s"] / dd[c]["captchas_per_s"]
                for c, r in sorted(_rows(d, key, images).items()) if c in dd}
    one, sixteen = ratios("serve", 1), ratios("serve", 16)
    win = ratios("serve_microbatch_2ms", 16)
    c1 = sorted(one)
    return (f"{fix(one[c1[0]], 1)}× ({c1[0]} client), "
            + ", ".join(f"{fix(one[c], 1)}× ({c})" for c in c1[1:])
            + f" with one image per request; {fix(sixteen[16], 1)}× and {fix(sixteen[64], 1)}× "
              f"with 16 images per request at 16 and 64 clients ({fix(win[16], 1)}× and "
              f"{fix(win[64], 1)}× with the 2 ms window)")


@region("serve-batching-vs-ddddocr", "serve_batching.json")
def _serve_batching_vs_ddddocr(src: Sources) -> str:
    r = _by_layout(src.json("serve_batching.json"))
    best = r[(BATCH_BEST, "16 images/request, 64 clients")]["median_captchas_per_s"]
    d16 = r[(DDDD, "1 image/request, 16 clients")]["median_captchas_per_s"]
    d64 = r[(DDDD, "1 image/request, 64 clients")]["median_captchas_per_s"]
    at = "its best load (16 clients)" if d16 >= d64 else "16 clients"
    return (f"{count(best)} vs {fix(d16, 1)} = **{fix(best / d16, 1)}×** {at}, "
            f"{fix(best / d64, 1)}× at 64 clients")


@region("serve-wrk-pyspng", "serve_wrk.json")
def _serve_wrk_pyspng(src: Sources) -> str:
    w = _wrk(src)
    fast = w[(WRK_BEST, 16)]["median"]
    slow = w[("2 processes x 1 worker, PNGs by Pillow (CAPTCHA_EDGE_PNG=pillow)", 16)]["median"]
    gain = (fast["requests_per_s"] / slow["requests_per_s"] - 1) * 100
    cpu = (1 - fast["server_cpu_ms_per_request"] / slow["server_cpu_ms_per_request"]) * 100
    return (f"{'+' if gain >= 0 else ''}{fix(gain, 0)} % requests/s at 16 clients and "
            f"{fix(cpu, 0)} % {'less' if cpu >= 0 else 'more'} server CPU per request")


@region("serve-wrk-1x2", "serve_wrk_1x2.json")
def _serve_wrk_1x2(src: Sources) -> str:
    w = {(r["layout"], r["clients"]): r["median"]
         for r in src.json("serve_wrk_1x2.json")["results"]}
    on, off = "1 process x 2 workers, --batch-while-busy on", "1 process x 2 workers"
    gain = (w[(on, 64)]["requests_per_s"] / w[(off, 64)]["requests_per_s"] - 1) * 100
    return (f"{'+' if gain >= 0 else ''}{fix(gain, 0)} % requests/s at 64 clients "
            f"({count(w[(on, 64)]['requests_per_s'])} vs {count(w[(off, 64)]['requests_per_s'])})"
            f" but a {'higher' if w[(on, 16)]['p99_ms'] > w[(off, 16)]['p99_ms'] else 'lower'} "
            f"p99 at 16 clients ({fix(w[(on, 16)]['p99_ms'], 1)} vs "
            f"{fix(w[(off, 16)]['p99_ms'], 1)} ms median)")


@region("serve-processes-gain", "serve_batching.json")
def _serve_processes_gain(src: Sources) -> str:
    r = _by_layout(src.json("serve_batching.json"))
    gains = [r[(BATCH_BEST, load)]["median_captchas_per_s"]
             / r[("1 process x 2 workers, default_dynamic", load)]["median_captchas_per_s"] - 1
             for (lay, load) in r if lay == BATCH_BEST
             and ("1 process x 2 workers, default_dynamic", load) in r]
    return f"{span([g * 100 for g in gains], lambda v: fix(v, 0))} %"


# --------------------------------------------------------------------------------------------
# Rewriting and checking


def documents(root: Path = ROOT) -> list[Path]:
    """README.md and docs/*.md under ``root``."""
    out: list[Path] = []
    for pattern in DOC_GLOBS:
        out += sorted(root.glob(pattern))
    return out


def render_region(reg: Region, src: Sources) -> str:
    """The body between the markers, as written: a block is framed by newlines."""
    text = reg.render(src)
    if reg.block:
        return "\n" + (text if text.endswith("\n") else text + "\n")
    return text


def render_text(text: str, src: Sources, where: str = "") -> tuple[str, list[str]]:
    """``text`` with every region re-rendered, and one problem line per region that differed
    (or could not be rendered)."""
    problems: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name, body = m.group("name"), m.group("body")
        reg = REGIONS.get(name)
        if reg is None:
            problems.append(f"{where}: unknown region <!-- {name} --> "
                            f"(not in {Path(__file__).name})")
            return m.group(0)
        try:
            new = render_region(reg, src)
        except (OSError, KeyError, ValueError, StopIteration, IndexError, TypeError,
                ZeroDivisionError, zipfile.BadZipFile) as exc:
            problems.append(f"{where}: {name} cannot be rendered from {', '.join(reg.sources)}: "
                            f"{type(exc).__name__}: {exc}")
            return m.group(0)
        if new != body:
            problems.append(f"{where}: {name} differs from {', '.join(reg.sources)}")
        return f"<!-- {name} -->{new}<!-- /{name} -->"

    return MARKER.sub(sub, text), problems


def check(root: Path = ROOT, src: Sources | None = None) -> list[str]:
    """Problem lines: regions that differ from their sources, unknown regions, and regions
    that no document holds. Empty when README and docs agree with the results."""
    src = src or Sources()
    problems: list[str] = []
    seen: set[str] = set()
    for doc in documents(root):
        text = doc.read_text(encoding="utf-8")
        seen.update(m.group("name") for m in MARKER.finditer(text))
        problems += render_text(text, src, str(doc.relative_to(root)))[1]
    problems += [f"{name}: in no document (README.md, docs/*.md)"
                 for name in REGIONS if name not in seen]
    return problems


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, then rename it into place."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rewrite(root: Path = ROOT, src: Sources | None = None) -> list[str]:
    """Re-render every region in place; return the files changed. Files whose regions cannot
    be rendered are left alone (raises SystemExit naming them)."""
    src = src or Sources()
    changed, errors = [], []
    for doc in documents(root):
        text = doc.read_text(encoding="utf-8")
        new, problems = render_text(text, src, str(doc.relative_to(root)))
        errors += [p for p in problems if " differs from " not in p]
        if new != text and not any(" differs from " not in p for p in problems):
            write_atomic(doc, new)
            changed.append(str(doc.relative_to(root)))
    if errors:
        raise SystemExit("error: " + "\nerror: ".join(errors))
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true",
                    help="change nothing; exit 1 naming each region that differs")
    ap.add_argument("--list", action="store_true", help="list the regions and their sources")
    args = ap.parse_args(argv)
    if args.list:
        for reg in REGIONS.values():
            print(f"{reg.name}\t{'block' if reg.block else 'inline'}\t{', '.join(reg.sources)}")
        return 0
    if args.check:
        problems = check()
        for line in problems:
            print(line)
        if problems:
            print("run `python scripts/render_results.py` to regenerate", file=sys.stderr)
        return 1 if problems else 0
    changed = rewrite()
    print("\n".join(f"updated {c}" for c in changed) or "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
