"""captcha_edge.train data handling: labels, split, loading, synthetic data, CTC helpers (no TF)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from captcha_edge.preprocess import make_recipe
from captcha_edge.train import ctc
from captcha_edge.train import data as D
from captcha_edge.train.augment import AugmentConfig, parse_augment
from PIL import Image


def _png(path: Path, mode: str = "L", size=(40, 20), color=128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


# -- labels ------------------------------------------------------------------------------------

def test_label_is_stem_by_default(tmp_path: Path) -> None:
    _png(tmp_path / "ab12c.png")
    _png(tmp_path / "x9.jpg", mode="RGB", color=(1, 2, 3))
    (tmp_path / "notes.txt").write_text("not an image")
    samples = D.find_samples(tmp_path)
    assert [(s.name, s.label) for s in samples] == [("ab12c.png", "ab12c"), ("x9.jpg", "x9")]


def test_label_pattern_takes_first_group(tmp_path: Path) -> None:
    _png(tmp_path / "ab12c-3.png")
    _png(tmp_path / "zz7-10.png")
    samples = D.find_samples(tmp_path, label_pattern=r"^([a-z0-9]+)-\d+$")
    assert sorted(s.label for s in samples) == ["ab12c", "zz7"]


def test_label_pattern_needs_a_group_and_must_match(tmp_path: Path) -> None:
    _png(tmp_path / "ab12c-3.png")
    with pytest.raises(D.TrainDataError, match="no capturing group"):
        D.find_samples(tmp_path, label_pattern=r"[a-z]+")
    with pytest.raises(D.TrainDataError, match="does not match file name 'ab12c-3.png'"):
        D.find_samples(tmp_path, label_pattern=r"^(\d+)$")


def test_data_dir_that_is_an_archive_says_to_unpack_it(tmp_path: Path) -> None:
    (tmp_path / "set.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(D.TrainDataError, match=r"set.tar.gz: an archive, not a folder: unpack it"):
        D.find_samples(tmp_path / "set.tar.gz")
    _png(tmp_path / "a.png")
    with pytest.raises(D.TrainDataError, match=r"a.png: not a folder$"):
        D.find_samples(tmp_path / "a.png")


def test_recursive_finds_subfolders_with_relative_names(tmp_path: Path) -> None:
    _png(tmp_path / "top1.png")
    _png(tmp_path / "sub" / "deep2.png")
    assert [s.name for s in D.find_samples(tmp_path)] == ["top1.png"]
    assert [s.name for s in D.find_samples(tmp_path, recursive=True)] == ["sub/deep2.png",
                                                                          "top1.png"]


@pytest.mark.parametrize("name,text", [
    ("labels.csv", "filename,label\na.png,abc\nsub/b.png,x y\n"),
    ("labels.tsv", "a.png\tabc\nsub/b.png\tx y\n"),
    ("labels.txt", "a.png\tabc\n\nsub/b.png\tx y\n"),
    # Other header names: a first field that is no image name, above rows that are, is one.
    ("labels.csv", "image,solution\na.png,abc\nsub/b.png,x y\n"),
    ("labels.csv", "File,Text\na.png,abc\nsub/b.png,x y\n"),
    # A spreadsheet's CSV in a locale whose decimal mark is the comma; a ';' in a label is kept.
    ("labels.csv", "filename;label\na.png;abc\nsub/b.png;x y\n"),
    ("labels.csv", "\ufeffa.png;abc\nsub/b.png;x y\n"),
    # Written on Windows: a backslash between folder and file.
    ("labels.csv", "filename,label\r\na.png,abc\r\nsub\\b.png,x y\r\n"),
    # The columns the other way round, with a header or without one.
    ("labels.csv", "text,file\nabc,a.png\nx y,sub\\b.png\n"),
    ("labels.csv", "abc,a.png\nx y,sub/b.png\n"),
    ("labels.tsv", "solution\timage\nabc\ta.png\nx y\tsub/b.png\n"),
    # More than two columns, the header naming the file's and the label's.
    ("labels.csv", "id,Image,source,Text\n7,a.png,site1,abc\n8,sub\\b.png,site2,x y\n"),
])
def test_labels_file_csv_and_tsv(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    samples = D.find_samples(None, labels_file=tmp_path / name)
    assert [(s.name, s.label, s.path) for s in samples] == [
        ("a.png", "abc", tmp_path / "a.png"), ("sub/b.png", "x y", tmp_path / "sub" / "b.png")]


def test_labels_file_errors(tmp_path: Path) -> None:
    f = tmp_path / "l.csv"
    f.write_text("a.png,abc,extra\n")
    with pytest.raises(D.TrainDataError, match="line 1 has 3 fields"):
        D.find_samples(None, labels_file=f)
    f.write_text("a.png,abc\na.png,abd\n")
    with pytest.raises(D.TrainDataError, match="a.png is listed twice"):
        D.find_samples(None, labels_file=f)
    f.write_text("a.png,\n")
    with pytest.raises(D.TrainDataError, match="empty label"):
        D.find_samples(None, labels_file=f)
    f.write_text("filename,label\n")
    with pytest.raises(D.TrainDataError, match="no rows"):
        D.find_samples(None, labels_file=f)
    # Rows that all name files without an image suffix: none is taken for a header.
    f.write_text("a,abc\nb,abd\n")
    assert [s.label for s in D.find_samples(None, labels_file=f)] == ["abc", "abd"]
    f.write_text("a.png,a;b\nb.png,abd\n")  # a comma in the first line: its ';' is text
    assert [s.label for s in D.find_samples(None, labels_file=f)] == ["a;b", "abd"]
    f.write_text("id,image,text\n1,a.png,abc\n2,b.png\n")  # a named header's width holds
    with pytest.raises(D.TrainDataError, match="line 3 has 2 fields; expected 3"):
        D.find_samples(None, labels_file=f)
    f.write_text("id,path,source\n1,a.png,abc\n")  # no label column named
    with pytest.raises(D.TrainDataError, match="line 1 has 3 fields; expected 2 .*header row"):
        D.find_samples(None, labels_file=f)
    f.write_text("a.png;abc\nb.png;abd;x\n")
    with pytest.raises(D.TrainDataError, match=r"line 2 has 3 fields; expected 2 \(filename;"):
        D.find_samples(None, labels_file=f)


def test_charset_inference_and_checks() -> None:
    s = [D.Sample("1", "cab"), D.Sample("2", "ba9")]
    assert D.infer_charset([x.label for x in s]) == "9abc"
    assert D.check_labels(s, "9abc", time_steps=50) == 3
    with pytest.raises(D.TrainDataError, match=r"1: label 'cab' has characters not in the "
                                               r"charset: 'c'"):
        D.check_labels(s, "9ab", time_steps=50)
    with pytest.raises(D.TrainDataError, match="duplicate characters: 'a'"):
        D.check_charset("abca")


def test_ctc_length_bound_is_2len_plus_1() -> None:
    # T = 7 frames fit at most 3 characters (worst case "aaa" needs a-_-a-_-a = 5 <= 7; 4 needs 9).
    assert D.check_labels([D.Sample("ok", "abc")], "abc", time_steps=7) == 3
    with pytest.raises(D.TrainDataError, match="has 4 characters but the model emits 7 frames"):
        D.check_labels([D.Sample("long", "abca")], "abc", time_steps=7)


# -- split -------------------------------------------------------------------------------------

def _names(n: int, prefix: str = "f") -> list:
    return [D.Sample(f"{prefix}{i:05d}.png", "x") for i in range(n)]


def test_split_is_deterministic_disjoint_and_complete() -> None:
    samples = _names(3000)
    tr1, va1 = D.split_samples(samples, 0.2)
    _, va2 = D.split_samples(list(reversed(samples)), 0.2)
    assert {s.name for s in va1} == {s.name for s in va2}
    assert not {s.name for s in tr1} & {s.name for s in va1}
    assert len(tr1) + len(va1) == len(samples)
    assert abs(len(va1) / len(samples) - 0.2) < 0.03


def test_split_is_stable_when_files_are_added() -> None:
    old = _names(1000)
    _, va_old = D.split_samples(old, 0.25)
    _, va_new = D.split_samples(old + _names(500, prefix="new"), 0.25)
    assert {s.name for s in va_new if s.name.startswith("f")} == {s.name for s in va_old}


def test_split_salt_changes_the_split() -> None:
    samples = _names(500)
    a = {s.name for s in D.split_samples(samples, 0.2)[1]}
    b = {s.name for s in D.split_samples(samples, 0.2, salt="other")[1]}
    assert a != b


# -- loading -----------------------------------------------------------------------------------

def test_rgba_transparent_background_becomes_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (40, 20), (0, 0, 0, 0))  # fully transparent *black*
    img.paste((0, 0, 0, 255), (10, 5, 20, 15))  # an opaque black box
    img.save(tmp_path / "ab.png")
    loaded = D.load_samples(D.find_samples(tmp_path), make_recipe(height=20, width=40))
    arr = loaded.images[0]
    assert arr[0, 0] == 255 and arr[10, 15] == 0


@pytest.mark.parametrize("mode,color", [("L", 90), ("RGB", (90, 90, 90)), ("P", 3),
                                        ("I;16", 90 * 257), ("1", 1)])
def test_any_mode_loads_to_uint8_of_the_recipe_size(tmp_path: Path, mode: str, color) -> None:
    Image.new(mode, (37, 13), color).save(tmp_path / "k.png")
    loaded = D.load_samples(D.find_samples(tmp_path), make_recipe(height=16, width=48))
    assert loaded.images.shape == (1, 16, 48) and loaded.images.dtype == np.uint8
    assert not loaded.unreadable


def test_unreadable_files_are_listed_and_counted(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / f"good{i}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "empty.png").write_bytes(b"")
    loaded = D.load_samples(D.find_samples(tmp_path), make_recipe(height=16, width=48))
    assert [s.name for s in loaded.samples] == ["good0.png", "good1.png", "good2.png"]
    assert sorted(n for n, _ in loaded.unreadable) == ["broken.png", "empty.png"]
    assert all(n in why for n, why in loaded.unreadable)
    with pytest.raises(D.TrainDataError, match="2 of 5 images are unreadable"):
        D.check_unreadable(5, loaded.unreadable)
    D.check_unreadable(40, loaded.unreadable)  # 5 %: allowed
    with pytest.raises(D.TrainDataError, match="none of the 2 images"):
        D.check_unreadable(2, loaded.unreadable)


def test_variable_length_labels_are_padded_with_lengths() -> None:
    codes, lengths = D.encode_labels(["ab", "cabc", "b"], "abc", max_len=4)
    assert codes.tolist() == [[0, 1, 0, 0], [2, 0, 1, 2], [1, 0, 0, 0]]
    assert lengths.tolist() == [2, 4, 1]


# -- synthetic ---------------------------------------------------------------------------------

def test_synthetic_is_deterministic_per_seed() -> None:
    pytest.importorskip("captcha")
    recipe = make_recipe(height=50, width=200)
    a = D.synthetic_samples(6, "abc123", (3, 5), seed=7)
    b = D.synthetic_samples(6, "abc123", (3, 5), seed=7)
    c = D.synthetic_samples(6, "abc123", (3, 5), seed=8)
    assert [s.label for s in a] == [s.label for s in b]
    assert all(3 <= len(s.label) <= 5 and set(s.label) <= set("abc123") for s in a)
    ia = D.load_samples(a, recipe).images
    ib = D.load_samples(b, recipe).images
    ic = D.load_samples(c, recipe).images
    assert ia.shape == (6, 50, 200)
    np.testing.assert_array_equal(ia, ib)
    assert not np.array_equal(ia, ic)
    assert ia.std() > 10  # there is something drawn, not a blank canvas


def test_synthetic_length_range_parsing() -> None:
    assert D.parse_length_range("5") == (5, 5)
    assert D.parse_length_range("4-6") == (4, 6)
    for bad in ("6-4", "0", "a-b", "4-"):
        with pytest.raises(D.TrainDataError, match="--synthetic-length"):
            D.parse_length_range(bad)


# -- augmentation config -----------------------------------------------------------------------

def test_parse_augment_overrides_and_errors() -> None:
    cfg = parse_augment("rotate=5, noise=0")
    assert cfg.rotate == 5 and cfg.noise == 0 and cfg.shear == AugmentConfig().shear
    for bad, msg in (("spin=3", "KEY=VALUE"), ("rotate=x", "must be a number"),
                     ("blur=2", "probability"), ("noise=-1", ">= 0")):
        with pytest.raises(D.TrainDataError, match=re.escape(msg)):
            parse_augment(bad)


# -- CTC helpers -------------------------------------------------------------------------------

def _onehot(path, classes: int) -> np.ndarray:
    p = np.full((len(path), classes), 0.01, np.float32)
    p[np.arange(len(path)), path] = 1.0
    return p / p.sum(1, keepdims=True)


def test_greedy_decode_merges_repeats_and_drops_blank() -> None:
    cs = "abc"  # blank = 3
    probs = np.stack([_onehot([0, 0, 3, 0, 1, 1, 3, 3, 2], 4), _onehot([3] * 9, 4)])
    assert ctc.greedy_decode(probs, cs) == ["aabc", ""]


def test_edit_ops_and_scores() -> None:
    assert ctc.edit_ops("abcde", "abxde") == (1, [("c", "x")])
    assert ctc.edit_ops("abc", "ac") == (1, [("b", "")])
    assert ctc.edit_ops("ac", "abc") == (1, [("", "b")])
    s = ctc.score(["abcd", "xyz"], ["abcd", "xy"])
    assert s["seq_acc"] == 0.5 and s["cer"] == pytest.approx(1 / 7)
    conf = ctc.confusions(["mn", "mm", "ab"], ["nn", "nm", "ab"])
    assert conf[0] == {"truth": "m", "pred": "n", "count": 2}


# -- run-folder pictures -----------------------------------------------------------------------

def test_samples_picture_of_labels_the_font_lacks_warns_nothing(tmp_path: Path) -> None:
    """Chinese labels are drawn as boxes in samples.png, without one warning a glyph."""
    import warnings

    pytest.importorskip("matplotlib")
    from captcha_edge.train.report import plot_samples

    images = np.full((2, 20, 40), 200, np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_samples(tmp_path / "samples.png", images, ["中文ab", "ab"], ["中文ab", "a"])
    with Image.open(tmp_path / "samples.png") as im:
        assert im.format == "PNG" and im.size[0] > 100
