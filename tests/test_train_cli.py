"""captcha-train user errors: each one exits with code 2 and prints one line naming the problem.

These fail before TensorFlow is imported (except --resume, which is marked), so they are fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import pytest
from captcha_edge.train.cli import main
from PIL import Image


def _folder(root: Path, labels: List[str], size=(60, 20)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for lab in labels:
        Image.new("L", size, 200).save(root / f"{lab}.png")
    return root


def _run(capsys: pytest.CaptureFixture, *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("captcha-train: error: "), err
    return lines[0]


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    return _folder(tmp_path / "data", [f"a{i:02d}b" for i in range(30)])


def test_no_data(tmp_path: Path, capsys) -> None:
    assert "give --data-dir, --labels or --synthetic" in _run(capsys, "--out", str(tmp_path / "r"))


def test_missing_and_empty_folder(tmp_path: Path, capsys) -> None:
    assert "no such folder" in _run(capsys, "--data-dir", str(tmp_path / "nope"),
                                    "--out", str(tmp_path / "r"))
    (tmp_path / "empty").mkdir()
    line = _run(capsys, "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "r"))
    assert "no image files" in line and "--recursive" in line


def test_bad_label_patterns(good: Path, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "r")
    assert "not a valid regular expression" in _run(capsys, "--data-dir", str(good),
                                                    "--label-pattern", "([a-z", "--out", out)
    assert "no capturing group" in _run(capsys, "--data-dir", str(good),
                                        "--label-pattern", "[a-z]+", "--out", out)
    assert "does not match file name" in _run(capsys, "--data-dir", str(good),
                                              "--label-pattern", r"^(\d+)$", "--out", out)


def test_labels_file_problems(good: Path, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "r")
    assert "no such file" in _run(capsys, "--data-dir", str(good), "--labels",
                                  str(tmp_path / "missing.csv"), "--out", out)
    bad = tmp_path / "bad.csv"
    bad.write_text("a00b.png\n")
    assert "line 1 has 1 fields" in _run(capsys, "--data-dir", str(good), "--labels", str(bad),
                                         "--out", out)


def test_charset_problems(good: Path, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "r")
    line = _run(capsys, "--data-dir", str(good), "--charset", "ab012345678", "--out", out)
    assert "not in the charset" in line and "'9'" in line
    assert "duplicate characters" in _run(capsys, "--data-dir", str(good), "--charset", "aab",
                                          "--out", out)


def test_label_too_long_for_the_time_steps(good: Path, tmp_path: Path, capsys) -> None:
    # width 16 -> 4 frames -> at most 1 character; the labels have 4.
    line = _run(capsys, "--data-dir", str(good), "--width", "16", "--height", "16",
                "--time-pool", "4", "--out", str(tmp_path / "r"))
    assert "CTC needs T >= 2*len+1" in line and "4 frames" in line


def test_too_many_unreadable(tmp_path: Path, capsys) -> None:
    d = _folder(tmp_path / "d", [f"x{i}" for i in range(10)])
    (d / "bad1.png").write_bytes(b"not a png")
    code = main(["--data-dir", str(d), "--out", str(tmp_path / "r"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    # the unreadable files are listed first, then the one error line
    assert err[0] == "skipped 1 unreadable file(s) of 11:" and "bad1.png" in err[1]
    assert err[-1].startswith("captcha-train: error: 1 of 11 images are unreadable")


def test_all_unreadable(tmp_path: Path, capsys) -> None:
    d = tmp_path / "d"
    d.mkdir()
    for i in range(3):
        (d / f"z{i}.png").write_bytes(b"")
    code = main(["--data-dir", str(d), "--out", str(tmp_path / "r"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("captcha-train: error: none of the 3 images could be read")
    assert err[0] == "skipped 3 unreadable file(s) of 3:"  # the list comes first


@pytest.mark.parametrize("args,msg", [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--val-fraction", "1.5"], "--val-fraction must be in (0, 1)"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--threads", "-2"], "--threads must be >= 0"),
    (["--augment", "spin=3"], "--augment: expected KEY=VALUE"),
    (["--augment", "rotate=2", "--no-augment"], "exclude each other"),
    (["--width", "204"], "width % 8 == 0"),
    (["--width", "202", "--time-pool", "4"], "width % 4 == 0"),
    (["--filters", "8,x,8"], "--filters must be three ints"),
    (["--filters", "8,8"], "filters must be 3 positive ints"),
    (["--ema", "1"], "--ema must be at least 0 and below 1; got 1.0"),
    (["--dropout", "1"], "--dropout must be at least 0 and below 1; got 1.0"),
    (["--dropout", "-0.1"], "--dropout must be at least 0 and below 1"),
    (["--synthetic-length", "6-4"], "--synthetic-length"),
    (["--size", "huge"], "invalid choice: 'huge'"),
    (["--epochs", "many"], "expected an integer or 'auto'; got 'many'"),
])
def test_bad_options(good: Path, tmp_path: Path, capsys, args, msg) -> None:
    try:
        line = _run(capsys, "--data-dir", str(good), "--out", str(tmp_path / "r"), *args)
    except SystemExit as exc:  # argparse's own errors exit directly, still with one line
        assert exc.code == 2
        line = capsys.readouterr().err.strip()
        assert len(line.splitlines()) == 1
    assert msg in line


def test_validation_split_can_be_empty(tmp_path: Path, capsys) -> None:
    d = _folder(tmp_path / "d", ["ab", "cd"])
    assert "validation split is empty" in _run(capsys, "--data-dir", str(d), "--val-fraction",
                                               "0.01", "--out", str(tmp_path / "r"), "-q")


def test_existing_model_is_not_overwritten(good: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "r"
    run.mkdir()
    (run / "model.keras").write_bytes(b"x")
    assert "already holds a trained model" in _run(capsys, "--data-dir", str(good),
                                                   "--out", str(run))
    assert (run / "model.keras").read_bytes() == b"x"


@pytest.mark.tf
def test_resume_without_checkpoint(good: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("tensorflow")
    assert "no checkpoint" in _run(capsys, "--data-dir", str(good), "--resume",
                                   "--out", str(tmp_path / "r"), "-q")


def test_help_has_examples(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_size_presets_grow_in_every_part() -> None:
    """small <= base <= large for each conv block, the dense projection and the LSTM."""
    from captcha_edge.train.model import SIZES

    order = ["small", "base", "large"]
    assert sorted(SIZES) == sorted(order)
    for a, b in zip(order, order[1:]):
        assert all(x <= y for x, y in zip(SIZES[a]["filters"], SIZES[b]["filters"])), (a, b)
        assert SIZES[a]["dense"] <= SIZES[b]["dense"] and SIZES[a]["rnn"] <= SIZES[b]["rnn"]
        assert SIZES[a] != SIZES[b]


def test_help_states_the_frames_the_defaults_give(capsys: pytest.CaptureFixture) -> None:
    """--help's frame arithmetic matches the defaults: width / --time-pool, 25 at 200 / 8."""
    from captcha_edge.train.cli import build_parser
    from captcha_edge.train.model import ModelConfig

    actions = {a.dest: a for a in build_parser()._actions}
    pool = actions["time_pool"].default
    width = 200 if actions["width"].default == "auto" else actions["width"].default  # v2's size
    assert "frames = width / --time-pool" in actions["width"].help
    assert "width/4" not in actions["width"].help
    frames = ModelConfig(num_classes=2, width=width, time_pool=pool).time_steps
    assert f"default {pool}: {frames} frames at width {width}" in actions["time_pool"].help


def test_a_labels_csv_in_the_data_dir_is_read_without_being_named(tmp_path: Path,
                                                                 capsys) -> None:
    """File names that are not labels (captcha1.png) and a labels.csv beside them: the labels
    come from the file (said on stdout); --label-pattern still reads the file names."""
    from captcha_edge.train import cli

    data = tmp_path / "data"
    data.mkdir()
    truths = {f"captcha{k}.png": f"{k:03d}x" for k in range(30)}
    for name in truths:
        Image.new("L", (60, 20), 200).save(data / name)
    (data / "labels.csv").write_text("filename,label\n" +
                                     "".join(f"{n},{t}\n" for n, t in truths.items()))
    args = ["--data-dir", str(data), "--out", str(tmp_path / "r"), "--max-minutes", "1"]
    prepared = cli.prepare(cli.build_parser().parse_args(args))
    assert sorted(prepared.charset) == sorted(set("".join(truths.values())))
    assert f"labels: {data / 'labels.csv'} (found in --data-dir" in capsys.readouterr().out
    prepared = cli.prepare(cli.build_parser().parse_args(args + ["--label-pattern",
                                                                 "^([a-z]+)"]))
    assert prepared.charset == "".join(sorted(set("captcha")))
    assert "labels:" not in capsys.readouterr().out


def test_names_that_are_all_label_underscore_id_give_the_part_before_the_underscore(
        tmp_path: Path, capsys) -> None:
    """swust's 113d_77b2c2f4....jpg: without a label option the label is '113d' (what
    captcha-edge eval reads by default), not the 37-character stem; one plain name keeps stems."""
    from captcha_edge.train import cli

    data = _folder(tmp_path / "data", [f"a{i:02d}b_{i * 7919:08x}" for i in range(30)])
    args = ["--data-dir", str(data), "--out", str(tmp_path / "r"), "--max-minutes", "1"]
    prepared = cli.prepare(cli.build_parser().parse_args(args))
    assert sorted(prepared.train_labels + prepared.val_labels) == [f"a{i:02d}b" for i in range(30)]
    assert "labels: the file name up to its '_' (every name is LABEL_ID" in capsys.readouterr().out
    # Not LABEL_ID: no "_", nothing before it, or no number or hash after it (an index first).
    for odd in ("plain", "_lead", "0001_ab3d"):
        Image.new("L", (60, 20), 200).save(data / f"{odd}.png")
        prepared = cli.prepare(cli.build_parser().parse_args(args))
        assert odd in prepared.train_labels + prepared.val_labels
        assert "labels:" not in capsys.readouterr().out
        (data / f"{odd}.png").unlink()


def test_names_that_are_all_number_underscore_text_are_read_whole_with_a_warning(
        tmp_path: Path, capsys) -> None:
    """0001_ab3d: an index then the label, or a label that starts with digits; the run cannot
    tell, keeps whole names (as it did) and says on stderr how to read the part after the '_'.
    With --label-pattern, or when one name is not NUMBER_TEXT, it says nothing."""
    from captcha_edge.train import cli

    data = _folder(tmp_path / "data", [f"{i:04d}_a{i:02d}b" for i in range(30)])
    args = ["--data-dir", str(data), "--out", str(tmp_path / "r"), "--max-minutes", "1", "-q"]
    prepared = cli.prepare(cli.build_parser().parse_args(args))
    assert "0007_a07b" in prepared.train_labels + prepared.val_labels
    err = capsys.readouterr().err
    assert "warning: every file name is NUMBER_TEXT (e.g. '0000_a00b.png')" in err
    pattern = err.split("--label-pattern ")[1].strip().strip("'")
    prepared = cli.prepare(cli.build_parser().parse_args(args + ["--label-pattern", pattern]))
    assert sorted(prepared.train_labels + prepared.val_labels) == [f"a{i:02d}b" for i in range(30)]
    assert "warning" not in capsys.readouterr().err
    Image.new("L", (60, 20), 200).save(data / "plain.png")
    cli.prepare(cli.build_parser().parse_args(args))
    assert "warning" not in capsys.readouterr().err


def test_the_labels_of_unreadable_files_add_no_symbols(tmp_path: Path) -> None:
    """An unreadable zzzzzz.png among readable images is skipped, and its 'z' is no class of the
    model (the charset comes from the images read), nor is its length the longest label's; with
    --synthetic the drawn labels use the same charset. A --charset given is kept as it is."""
    from captcha_edge.train import cli

    data = _folder(tmp_path / "data", [f"a{i:02d}b" for i in range(30)])
    (data / "zzzzzz.png").write_bytes(b"not a png")
    args = ["--data-dir", str(data), "--out", str(tmp_path / "r"), "--max-minutes", "1", "-q"]
    prepared = cli.prepare(cli.build_parser().parse_args(args))
    assert prepared.charset == "0123456789ab"
    assert prepared.max_label_length == 4
    assert prepared.model_config.num_classes == len("0123456789ab") + 1
    prepared = cli.prepare(cli.build_parser().parse_args(args + ["--synthetic", "20"]))
    assert "z" not in "".join(prepared.train_labels + prepared.val_labels)
    prepared = cli.prepare(cli.build_parser().parse_args(args + ["--charset",
                                                                 "0123456789abz"]))
    assert prepared.charset == "0123456789abz"


def test_an_unreadable_long_label_neither_widens_the_input_nor_fails_a_width(
        tmp_path: Path) -> None:
    """The input width counts the longest label of the images that read: a 20-character
    unreadable file gives the same automatic input as none, and an explicit --width too narrow
    for it (but wide enough for the rest) trains on the others instead of stopping."""
    from captcha_edge.train import cli

    data = _folder(tmp_path / "data", [f"a{i:02d}b" for i in range(30)])
    args = ["--data-dir", str(data), "--out", str(tmp_path / "r"), "--max-minutes", "1", "-q"]
    clean = cli.prepare(cli.build_parser().parse_args(args)).model_config
    (data / ("ab" * 10 + ".png")).write_bytes(b"not a png")
    prepared = cli.prepare(cli.build_parser().parse_args(args))
    assert (prepared.model_config.width, prepared.model_config.height) == \
        (clean.width, clean.height)
    assert prepared.max_label_length == 4
    prepared = cli.prepare(cli.build_parser().parse_args(args + ["--width", "96", "--height",
                                                                 "32"]))
    assert prepared.model_config.time_steps == 12 and prepared.max_label_length == 4
