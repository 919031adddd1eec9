"""scripts/style_panel.py: the synthetic hard styles of the development panel are seeded,
offline and what they say they are."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import load_file_module
from PIL import Image

# The panel's fonts come from the captcha package (the [train] extra): the runtime-only venvs
# (the emulated Pi's) have no panel.
pytest.importorskip("captcha")
panel = load_file_module(Path(__file__).resolve().parents[1] / "scripts" / "style_panel.py")


@pytest.mark.parametrize("name", list(panel.ALL_STYLES))
def test_a_style_is_a_pure_function_of_seed_and_index(name: str) -> None:
    style = panel.ALL_STYLES[name]
    text, img = panel.draw(style, 3, 17)
    again_text, again = panel.draw(style, 3, 17)
    assert text == again_text and np.array_equal(np.asarray(img), np.asarray(again))
    other_text, other = panel.draw(style, 3, 18)
    assert (other_text, np.asarray(other).tobytes()) != (text, np.asarray(img).tobytes())
    lo, hi = style.lengths
    assert lo <= len(text) <= hi and set(text) <= set(style.charset)


def test_the_styles_have_the_modes_and_sizes_they_promise() -> None:
    sizes = {n: panel.draw(panel.STYLES[n], 0, i)[1] for i, n in enumerate(
        ("scratch-grey", "wide-color", "small", "dotted-digits"))}
    assert sizes["scratch-grey"].mode == "L" and sizes["scratch-grey"].size == (200, 80)
    assert sizes["wide-color"].mode == "RGBA" and 410 <= sizes["wide-color"].width <= 690
    assert sizes["small"].size == (90, 30)
    assert sizes["dotted-digits"].mode == "P" and sizes["dotted-digits"].size == (240, 80)
    faint = np.asarray(panel.draw(panel.STYLES["faint-grey"], 0, 5)[1], np.int16)
    assert faint.shape == (60, 180)
    assert 5 <= np.median(faint) - np.percentile(faint, 1) <= 40  # faint: low contrast ink
    lengths = {len(panel.draw(panel.STYLES["wide-color"], 0, i)[0]) for i in range(60)}
    assert lengths == set(range(4, 9))  # variable length 4-8


def test_the_holdout_styles_are_apart_and_what_they_promise() -> None:
    assert set(panel.HOLDOUT).isdisjoint(panel.STYLES)
    inv = np.asarray(panel.draw(panel.HOLDOUT["inverted"], 0, 1)[1])
    assert inv.shape == (50, 160) and np.median(inv) < 110  # light glyphs on a dark ground
    jpeg = panel.draw(panel.HOLDOUT["jpeg-wave"], 0, 2)[1]
    assert jpeg.mode == "RGB" and jpeg.size == (200, 70)
    long_text, long_img = panel.draw(panel.HOLDOUT["long-digits"], 0, 3)
    assert long_img.size == (320, 48) and long_text.isdigit() and 9 <= len(long_text) <= 10
    assert panel.draw(panel.HOLDOUT["square"], 0, 4)[1].size == (100, 100)
    cased = panel.draw(panel.HOLDOUT["cased"], 0, 5)[1]
    assert cased.mode == "RGB" and cased.size == (180, 60)
    overlap_text, overlap = panel.draw(panel.HOLDOUT["overlap"], 0, 6)
    assert overlap.mode == "L" and overlap.size == (140, 50) and len(overlap_text) == 6
    warped = np.asarray(panel.draw(panel.HOLDOUT["warped-color"], 0, 7)[1], np.int16)
    assert warped.shape == (64, 200, 3) and np.abs(warped[..., 0] - warped[..., 2]).max() > 30
    hollow_text, hollow = panel.draw(panel.HOLDOUT["hollow"], 0, 8)
    assert hollow.mode == "L" and hollow.size == (180, 60) and len(hollow_text) == 5
    speckle = np.asarray(panel.draw(panel.HOLDOUT["speckle"], 0, 9)[1], np.int16)
    assert speckle.shape == (60, 160, 3) and np.abs(np.diff(speckle, axis=1)).mean() > 20
    grid_text, grid = panel.draw(panel.HOLDOUT["ink-grid"], 0, 10)
    assert grid.mode == "L" and grid.size == (200, 60) and len(grid_text) == 5
    view = panel.draw(panel.HOLDOUT["perspective"], 0, 11)[1]
    assert view.mode == "RGB" and view.size == (200, 70)
    tumble = {len(panel.draw(panel.HOLDOUT["tumble"], 0, i)[0]) for i in range(40)}
    assert tumble == {4, 5, 6} and panel.draw(panel.HOLDOUT["tumble"], 0, 0)[1].size == (180, 60)
    assert panel.main(["--out", "x", "--show", "nope"]) == 2  # holdouts are named, not others


def _ink(img: Image.Image) -> int:
    grey = np.asarray(img.convert("L"), np.int16)
    return int((grey < np.median(grey) - 50).sum())


@pytest.mark.parametrize("seed", range(5))
def test_cased_draws_lower_case_smaller_than_capitals(seed: int) -> None:
    """The holdout 'cased' keeps the cue ImageCaptcha drops: with the same random draws (font,
    size, places, noise), five lower-case letters leave clearly less ink than their capitals.
    (ImageCaptcha stretches each glyph's ink to the font's height: there x, v, z, s, w leave
    ~1.1x the ink of X, V, Z, S, W, see docs/train.md.)"""
    import random

    lower = _ink(panel._cased("xvzsw", random.Random(seed)))
    upper = _ink(panel._cased("XVZSW", random.Random(seed)))
    assert lower < 0.92 * upper
    mixed = panel.STYLES["mixed-case"].draw  # ImageCaptcha: no size cue, bolder lower case
    assert _ink(mixed("xvzsw", random.Random(seed))) > _ink(mixed("XVZSW", random.Random(seed)))


def test_write_style_writes_a_complete_labelled_folder(tmp_path: Path) -> None:
    out = panel.write_style(panel.STYLES["small"], tmp_path / "small", 5, seed=1)
    rows = list(csv.reader((out / "labels.csv").open()))
    assert rows[0] == ["file", "label"] and len(rows) == 6
    for name, label in rows[1:]:
        with Image.open(out / name) as im:
            assert im.size == (90, 30)
        assert label == panel.label_of(panel.STYLES["small"], 1, int(name[:7]))
    assert not list(tmp_path.glob("*.tmp"))
    assert panel.write_style(panel.STYLES["small"], out, 5, seed=1) == out  # kept, not redrawn


def test_two_writers_of_one_folder_leave_it_complete(tmp_path: Path, monkeypatch) -> None:
    """Two benchmark runs of one style draw its folder at once: the other writer starts after
    this one and finishes first; both calls return the complete folder, no temporary is left."""
    st, out, draw = panel.STYLES["small"], tmp_path / "small", panel.draw

    def racing_draw(style, seed: int, index: int):
        if index == 0 and not out.exists():
            monkeypatch.setattr(panel, "draw", draw)
            assert panel.write_style(st, out, 5, seed=1) == out
        return draw(style, seed, index)

    monkeypatch.setattr(panel, "draw", racing_draw)
    assert panel.write_style(st, out, 5, seed=1) == out
    rows = list(csv.reader((out / "labels.csv").open()))
    assert len(rows) == 6 and all((out / name).is_file() for name, _ in rows[1:])
    assert not list(tmp_path.glob("*.tmp"))


def test_a_failed_draw_leaves_no_folder(tmp_path: Path, monkeypatch) -> None:
    def broken(style, seed: int, index: int):
        raise RuntimeError("font missing")

    monkeypatch.setattr(panel, "draw", broken)
    with pytest.raises(RuntimeError):
        panel.write_style(panel.STYLES["small"], tmp_path / "small", 5, seed=1)
    assert list(tmp_path.iterdir()) == []


def test_unknown_style_is_one_error_line(capsys) -> None:
    assert panel.main(["--out", "x", "--styles", "small,nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "small" in err[0]


def test_the_panel_picture_joins_configs_in_the_order_given() -> None:
    bench = load_file_module(Path(__file__).resolve().parents[1] / "scripts" / "bench_styles.py")
    curve = [[60.0, 0.5]]
    entries = [{"style": "a", "config": "old", "curve_cpu_s_val_acc": curve, "n": 1},
               {"style": "a", "config": "new", "curve_cpu_s_val_acc": curve, "n": 2},
               {"style": "a", "config": "new", "curve_cpu_s_val_acc": curve, "n": 3},
               {"style": "b", "config": "old", "curve_cpu_s_val_acc": curve, "n": 4},
               {"style": "b", "config": "new", "curve_cpu_s_val_acc": None, "n": 5},
               {"style": "c", "config": "other", "curve_cpu_s_val_acc": curve, "n": 6}]
    got = bench.newest_per_style(entries, ["new", "old"])
    assert {s: e["n"] for s, e in got.items()} == {"a": 3, "b": 4}  # newest; no curve, no entry
    assert {s: e["n"] for s, e in bench.newest_per_style(entries, ["old"]).items()} == {
        "a": 1, "b": 4}


def test_the_error_summary_counts_case_only_mistakes() -> None:
    bench = load_file_module(Path(__file__).resolve().parents[1] / "scripts" / "bench_styles.py")
    truth = ["abVx", "abcd", "xyzw", "Vvvv", "abcd"]
    preds = ["abvx", "abcd", "xyz", "vvvV", "abce"]
    e = bench.errors(truth, preds)
    assert e["wrong"] == 4 and e["case_only"] == 2
    assert e["seq_acc_ignoring_case"] == 1 - 2 / 5
    # V->v twice (abVx, Vvvv), v->V once, d->e once; the wrong length is not counted
    assert e["top_substitutions"][0] == ["V", "v", 2]
    assert sorted(map(tuple, e["top_substitutions"][1:])) == [("d", "e", 1), ("v", "V", 1)]
