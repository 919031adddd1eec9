"""Any captcha style (issue 11): input geometry and colour from the data, --case fold, the
time-budget schedule, RGB from training to the int8 runtime, --init-from with a new charset,
and old run folders without the new keys.

The folders here are drawn with Pillow at known sizes and colours, so the expected choices are
known without looking at any real data.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
from captcha_edge.preprocess import channels, make_recipe, to_array
from captcha_edge.train import cli
from captcha_edge.train import data as D
from captcha_edge.train.fit import WARMUP_MAX_SHARE, BudgetSchedule
from captcha_edge.train.model import ModelConfig
from PIL import Image, ImageDraw

INK = (20, 20, 20)
COLOURS = [(200, 30, 30), (30, 150, 40), (40, 60, 210), (190, 120, 0)]


def _draw(path: Path, text: str, size: Tuple[int, int], *, coloured: bool, seed: int) -> None:
    """A captcha-like picture: text over three noise lines; coloured text over black lines when
    ``coloured``, else all black on white."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(img)
    for _ in range(3):
        d.line([(0, int(rng.integers(0, h))), (w, int(rng.integers(0, h)))], fill=INK, width=1)
    step = w / (len(text) + 1)
    for i, ch in enumerate(text):
        fill = COLOURS[(i + seed) % len(COLOURS)] if coloured else INK
        d.text((step * (i + 0.6), h * 0.3), ch, fill=fill, font_size=max(10, int(h * 0.5)))
    img.save(path)


def _folder(root: Path, n: int, size: Tuple[int, int], *, coloured: bool, labels: List[str]
            ) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _draw(root / f"{labels[i % len(labels)]}_{i:03d}.png", labels[i % len(labels)], size,
              coloured=coloured, seed=i)
    return root


def _prepare(*argv: str):
    a = cli.build_parser().parse_args([*argv, "--out", "unused", "-q"])
    return cli.prepare(a)


# ----------------------------------------------------------------------------------------------
# Geometry and colour choice


def test_geometry_v2_style_stays_200x50():
    assert D.choose_geometry([(200, 50)] * 10, 5)[:2] == (50, 200)


def test_geometry_keeps_aspect_ratio_when_frames_suffice():
    h, w, _ = D.choose_geometry([(330, 60)] * 5 + [(341, 62)], 4)
    assert (h, w) == (60, 328)  # 60 x 5.5 = 330, rounded to a multiple of the 8-pixel time pool
    assert w // 8 >= D.FRAMES_PER_CHAR * 4


def test_geometry_widens_short_images_for_long_labels_and_keeps_aspect():
    h, w, why = D.choose_geometry([(92, 34)] * 5, 4)  # aspect 2.7, 4 characters
    assert w // 8 >= D.FRAMES_PER_CHAR * 4
    assert abs(w / h - 92 / 34) < 0.1 * 92 / 34  # height grew with the width
    assert "frames per character" in why


def test_geometry_height_is_capped():
    h, w, _ = D.choose_geometry([(600, 120)] * 3, 6)
    assert h == D.AUTO_HEIGHT[1] and w == 320


def test_geometry_rejects_empty():
    with pytest.raises(ValueError, match="sizes"):
        D.choose_geometry([], 5)


def test_colored_ink_share_separates_grey_and_colour(tmp_path):
    _draw(tmp_path / "g.png", "ab12", (120, 40), coloured=False, seed=0)
    _draw(tmp_path / "c.png", "ab12", (120, 40), coloured=True, seed=0)
    grey = D.colored_ink_share(Image.open(tmp_path / "g.png"))
    colour = D.colored_ink_share(Image.open(tmp_path / "c.png"))
    assert grey == 0.0
    assert colour > D.COLOR_INK_SHARE


def test_auto_choice_on_synthetic_folders(tmp_path):
    labels = ["ab12", "cd34", "ef56"]
    grey = _folder(tmp_path / "grey", 12, (120, 40), coloured=False, labels=labels)
    colour = _folder(tmp_path / "colour", 12, (120, 40), coloured=True, labels=labels)
    pat = "^([a-z0-9]+)_"
    g = _prepare("--data-dir", str(grey), "--label-pattern", pat, "--val-fraction", "0.3")
    c = _prepare("--data-dir", str(colour), "--label-pattern", pat, "--val-fraction", "0.3")
    assert g.recipe["color"] == "L" and g.model_config.channels == 1
    assert g.train_images.ndim == 3
    assert c.recipe["color"] == "RGB" and c.model_config.channels == 3
    assert c.train_images.shape[1:] == (c.recipe["height"], c.recipe["width"], 3)
    # 120x40 with 4-character labels: 20 frames need width 160, height 53 keeps the aspect 3
    assert (g.recipe["height"], g.recipe["width"]) == (53, 160)
    assert g.meta["input_choice"]["reasons"]["color"].startswith("L:")


def test_explicit_flags_win(tmp_path):
    colour = _folder(tmp_path / "colour", 10, (120, 40), coloured=True, labels=["ab12", "cd34"])
    p = _prepare("--data-dir", str(colour), "--label-pattern", "^([a-z0-9]+)_", "--height", "32",
                 "--width", "128", "--color", "L", "--val-fraction", "0.3")
    assert (p.recipe["height"], p.recipe["width"], p.recipe["color"]) == (32, 128, "L")
    reasons = p.meta["input_choice"]["reasons"]
    assert {k: reasons[k] for k in ("geometry", "color")} == {"geometry": "128x32: given",
                                                              "color": "L: given"}
    assert reasons["stem"].startswith("s2, convs 1,1,2: ")  # --stem auto, at the given input
    # one side given: the other follows the data's aspect ratio (3:1)
    p = _prepare("--data-dir", str(colour), "--label-pattern", "^([a-z0-9]+)_", "--height", "40",
                 "--val-fraction", "0.3")
    assert (p.recipe["height"], p.recipe["width"]) == (40, 120)


def test_bad_auto_value_is_a_one_line_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["--out", "x", "--height", "tall"])
    assert exc.value.code == 2
    assert "--height" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# --case


def test_case_fold_lowercases_labels_and_charset(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    for i, lab in enumerate(["AbC1", "aBc2", "XyZ3", "xyz4"] * 3):
        _draw(root / f"{lab}_{i}.png", lab, (100, 40), coloured=False, seed=i)
    kept = D.find_samples(root, label_pattern="^([A-Za-z0-9]+)_")
    folded = D.find_samples(root, label_pattern="^([A-Za-z0-9]+)_", case="fold")
    assert {s.label for s in kept} == {"AbC1", "aBc2", "XyZ3", "xyz4"}
    assert {s.label for s in folded} == {"abc1", "abc2", "xyz3", "xyz4"}
    p = _prepare("--data-dir", str(root), "--label-pattern", "^([A-Za-z0-9]+)_", "--case", "fold",
                 "--val-fraction", "0.3")
    assert p.charset == "1234abcxyz"
    assert p.meta["data"]["case"] == "fold"
    with pytest.raises(D.TrainDataError, match="--case"):
        D.find_samples(root, case="upper")


# ----------------------------------------------------------------------------------------------
# Schedule


def test_budget_schedule_ends_at_the_floor_whichever_bound_comes_first():
    s = BudgetSchedule(peak=1e-3, total_steps=1000, warmup_steps=100, budget_seconds=60)
    floor = s.alpha * s.peak
    assert s(0, 0.0) == pytest.approx(s.peak / 10, rel=0.01)  # warm-up starts at peak / 10
    assert s(100, 1.0) == pytest.approx(s.peak, rel=0.03)  # full peak, 10 % into the cosine
    # step-bound: the end of the steps is the floor
    assert s(1000, 1.0) == pytest.approx(floor)
    # time-bound: half the budget gone at step 200 -> half-way down the cosine, not at step 500
    assert s(200, 30.0) == pytest.approx(floor + (s.peak - floor) * 0.5, rel=1e-6)
    assert s.progress(200, 60.0) == 1.0 and s(200, 60.0) == pytest.approx(floor)
    # decreasing after warm-up
    lrs = [s(k, k * 0.05) for k in range(100, 1001, 50)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_budget_schedule_warmup_never_outlasts_its_share_of_a_short_budget():
    s = BudgetSchedule(peak=1e-3, total_steps=10**6, warmup_steps=10**5, budget_seconds=100)
    assert s(10, WARMUP_MAX_SHARE * 100) == pytest.approx(
        s.peak * (s.alpha + (1 - s.alpha) * 0.5 * (1 + np.cos(np.pi * WARMUP_MAX_SHARE))))


# ----------------------------------------------------------------------------------------------
# Old run folders


def test_old_model_config_and_recipe_load_as_before():
    old = {"num_classes": 20, "height": 50, "width": 200, "size": "base", "dropout": 0.2,
           "filters": [16, 32, 48], "dense": 128, "rnn": 128, "time_pool": 8}
    cfg = ModelConfig.from_dict(old)
    assert cfg.channels == 1 and cfg.convs == (1, 1, 1)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    recipe_without_color = {k: v for k, v in make_recipe().items() if k != "color"}
    assert channels(recipe_without_color) == 1
    img = Image.new("RGB", (200, 50), (10, 200, 30))
    assert to_array(img, recipe_without_color).shape == (50, 200)
    assert to_array(img, make_recipe(color="RGB")).shape == (50, 200, 3)
    with pytest.raises(ValueError, match="color"):
        make_recipe(color="CMYK")


def test_rgb_recipe_composites_transparency_on_the_background():
    rgba = Image.new("RGBA", (40, 20), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    arr = to_array(rgba, make_recipe(color="RGB", height=20, width=40))
    assert arr[0, 0].tolist() == [0, 0, 255]
    assert arr[10, 20].tolist() == [255, 255, 255]


@pytest.mark.tf
def test_old_graph_layer_names_unchanged():
    pytest.importorskip("tensorflow")
    from captcha_edge.train.model import build_inference_model

    m = build_inference_model(ModelConfig(num_classes=5, height=32, width=64, time_pool=8))
    names = [layer.name for layer in m.layers]
    assert [n for n in names if n.startswith(("conv", "bn"))] == [
        "conv1", "bn1", "conv2", "bn2", "conv3", "bn3"]
    deeper = build_inference_model(ModelConfig(num_classes=5, height=32, width=64, time_pool=8,
                                               convs=(1, 2, 2), channels=3))
    assert deeper.input_shape == (None, 32, 64, 3)
    assert "conv2b" in [layer.name for layer in deeper.layers]


# ----------------------------------------------------------------------------------------------
# End to end (TensorFlow)


def _train(args: List[str]) -> None:
    from captcha_edge.train.cli import main

    assert main([*args, "--epochs", "1", "--size", "small", "--batch-size", "8",
                 "--threads", "2", "-q"]) == 0


@pytest.mark.tf
@pytest.mark.slow  # one epoch on 40 images + an int8 export: ~1 min on a busy 2-core CPU
def test_rgb_end_to_end_train_int8_runtime_same_pixels(tmp_path):
    pytest.importorskip("tensorflow")
    from captcha_edge import Recognizer
    from captcha_edge.export.cli import main as export_main

    data = _folder(tmp_path / "rgb", 40, (120, 40), coloured=True,
                   labels=["ab12", "cd34", "ba21", "dc43"])
    run = tmp_path / "run"
    _train(["--data-dir", str(data), "--label-pattern", "^([a-z0-9]+)_", "--out", str(run)])
    meta = json.loads((run / "model.json").read_text())
    assert meta["preprocess"]["color"] == "RGB"
    assert meta["input_shape"] == [meta["preprocess"]["height"], meta["preprocess"]["width"], 3]
    assert meta["model_config"]["channels"] == 3
    assert export_main([str(run), "--int8", "--calib-size", "20", "--max-drop", "100",
                        "--diagnose", "--diagnose-images", "6", "-q"]) == 0
    # the diagnosis reads RGB images too (it once added a grey channel axis to them)
    diag = json.loads((run / "export_report.json").read_text())["int8_diagnosis"]["plain"]
    assert "error" not in diag and diag["images"] == 6 and diag["worst"]
    rec = Recognizer(run / "model_int8.tflite")
    assert rec.recipe == meta["preprocess"]
    inp = rec.info()["input"]
    assert inp["shape"] == [1, meta["preprocess"]["height"], meta["preprocess"]["width"], 3]
    assert inp["dtype"] == "uint8"
    name = meta["val_files"][0]
    training_pixels = D.load_samples([D.Sample(name, "x", data / name)], meta["preprocess"]).images[0]
    np.testing.assert_array_equal(rec.preprocess(data / name), training_pixels)
    text = rec.predict(data / name)
    assert set(text) <= set(meta["charset"])


@pytest.mark.tf
@pytest.mark.slow  # two one-epoch runs on 24 images: ~1 min on a busy 2-core CPU
def test_init_from_with_a_new_charset(tmp_path):
    tf = pytest.importorskip("tensorflow")  # noqa: F841
    import keras
    from captcha_edge.train.fit import warm_start
    from captcha_edge.train.model import build_inference_model

    first = _folder(tmp_path / "a", 24, (100, 40), coloured=False, labels=["ab12", "ba21"])
    run_a = tmp_path / "run_a"
    _train(["--data-dir", str(first), "--label-pattern", "^([a-z0-9]+)_", "--out", str(run_a),
            "--convs", "1,2,1"])
    meta_a = json.loads((run_a / "model.json").read_text())
    second = _folder(tmp_path / "b", 24, (150, 30), coloured=True, labels=["ab9z", "z9ba"])

    # the CLI takes geometry, colour and architecture from the earlier run, not from the data
    p = _prepare("--data-dir", str(second), "--label-pattern", "^([a-z0-9]+)_",
                 "--init-from", str(run_a), "--val-fraction", "0.3")
    assert p.recipe == meta_a["preprocess"]
    assert p.model_config.convs == (1, 2, 1) and p.charset == "9abz"
    assert p.model_config.num_classes == 5
    with pytest.raises(D.TrainDataError, match="--init-from"):
        _prepare("--data-dir", str(second), "--label-pattern", "^([a-z0-9]+)_",
                 "--init-from", str(run_a), "--width", "256")
    # an architecture option that the warm start would ignore is refused; the same value is not
    for opt, val in (("--dropout", "0.1"), ("--size", "large"), ("--convs", "1,1,2"),
                     ("--head", "lstm")):
        with pytest.raises(D.TrainDataError, match=f"^{opt} {val} differs from the --init-from"):
            _prepare("--data-dir", str(second), "--label-pattern", "^([a-z0-9]+)_",
                     "--init-from", str(run_a), opt, val)
    assert _prepare("--data-dir", str(second), "--label-pattern", "^([a-z0-9]+)_",
                    "--init-from", str(run_a), "--convs", "1, 2,1",
                    "--head", "conv").model_config.convs == (1, 2, 1)

    # the weights: every layer but the output copied; shared symbols keep their output rows
    old = keras.models.load_model(str(run_a / "model.keras"), compile=False)
    new = build_inference_model(p.model_config, keras)
    summary = warm_start(new, p.init_from, p.charset, keras)
    assert "logits: 2 new of 4 symbols" in summary
    for name in ("conv1", "conv2b", "bn3", "proj", "ctx1", "ctx_bn3"):  # the conv head (default)
        for a, b in zip(old.get_layer(name).get_weights(), new.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    k_old, b_old = old.get_layer("logits").get_weights()
    k_new, b_new = new.get_layer("logits").get_weights()
    old_cs, new_cs = meta_a["charset"], p.charset
    for c in "ab":
        np.testing.assert_array_equal(k_new[:, new_cs.index(c)], k_old[:, old_cs.index(c)])
    np.testing.assert_array_equal(k_new[:, -1], k_old[:, -1])  # blank
    assert not np.array_equal(k_new[:, new_cs.index("z")], k_old[:, old_cs.index("1")])

    run_b = tmp_path / "run_b"
    _train(["--data-dir", str(second), "--label-pattern", "^([a-z0-9]+)_", "--out", str(run_b),
            "--init-from", str(run_a / "model.keras")])
    meta_b = json.loads((run_b / "model.json").read_text())
    assert meta_b["charset"] == "9abz"
    assert meta_b["init_from"].endswith("model.keras")
    assert meta_b["preprocess"] == meta_a["preprocess"]


@pytest.mark.tf
def test_augmentation_gate_holds_until_switched_on():
    tf = pytest.importorskip("tensorflow")
    from captcha_edge.train.augment import AugmentConfig
    from captcha_edge.train.fit import make_dataset

    images = np.random.default_rng(0).integers(0, 256, (8, 32, 64, 3)).astype(np.uint8)
    targets = np.zeros((8, 3), np.int32)
    gate = tf.Variable(0.0, trainable=False)
    ds = make_dataset(images, targets, 8, 0, AugmentConfig(), gate)
    x, _ = next(iter(ds))
    assert sorted(map(tuple, x.numpy().reshape(-1, 3 * 32 * 64))) == \
        sorted(map(tuple, images.astype(np.float32).reshape(-1, 3 * 32 * 64)))  # untouched
    gate.assign(1.0)
    x, _ = next(iter(ds))
    assert x.shape == (8, 32, 64, 3)
    assert not np.isin(x.numpy().reshape(8, -1)[:, :50], images.reshape(8, -1)[:, :50]).all()
