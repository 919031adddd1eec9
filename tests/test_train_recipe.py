"""The training recipe of issue 22: strided stems, the skip around the BiLSTM, the cost-aware
geometry and ``--epochs auto``; the old graph stays what it was for old run folders."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from captcha_edge.train import cli
from captcha_edge.train import data as D
from captcha_edge.train.model import STEMS, ModelConfig


def test_old_model_config_loads_as_the_old_graph() -> None:
    old = {"num_classes": 20, "height": 50, "width": 200, "size": "small", "dropout": 0.2,
           "filters": [16, 32, 32], "dense": 48, "rnn": 48, "time_pool": 4, "channels": 1,
           "convs": [1, 1, 1]}  # a model.json written before stem/skip existed
    cfg = ModelConfig.from_dict(old)
    assert cfg.stem == "pool" and cfg.skip is False
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_stem_and_too_small_s4_are_refused() -> None:
    with pytest.raises(ValueError, match="stem must be one of"):
        ModelConfig(num_classes=5, stem="s8")
    with pytest.raises(ValueError, match="at least 32"):
        ModelConfig(num_classes=5, height=24, width=96, stem="s4")


@pytest.mark.tf
def test_dropout_reaches_the_graph_and_is_bounded() -> None:
    from captcha_edge.train.model import build_inference_model

    assert cli.build_parser().parse_args(["--synthetic", "8", "--out", "x"]).dropout == 0.2
    for rate in (0.0, 0.35):
        m = build_inference_model(ModelConfig(num_classes=5, height=32, width=64, dropout=rate))
        assert m.get_layer("drop").rate == rate
    with pytest.raises(ValueError, match="dropout must be in"):
        ModelConfig(num_classes=5, dropout=1.0)


@pytest.mark.tf
def test_ema_swap_exchanges_the_weights_with_their_average_and_back() -> None:
    import keras
    import numpy as np
    from captcha_edge.train.fit import swap_ema_weights

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    opt = keras.optimizers.Adam(learning_rate=0.1, use_ema=True, ema_momentum=0.5)
    model.compile(optimizer=opt, loss="mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    for _ in range(3):
        model.train_on_batch(x, y)
    live = [v.numpy().copy() for v in model.trainable_variables]
    avg = [a.numpy().copy() for a in opt._model_variables_moving_average]
    assert not np.allclose(live[0], avg[0])  # three steps of 0.1: the average lags
    swap_ema_weights(opt)
    for v, a in zip(model.trainable_variables, avg):
        np.testing.assert_array_equal(v.numpy(), a)
    swap_ema_weights(opt)
    for v, w in zip(model.trainable_variables, live):
        np.testing.assert_array_equal(v.numpy(), w)


def test_resume_refuses_another_ema_with_one_line(tmp_path) -> None:
    """The moving averages are optimizer variables in the checkpoint: a resume with another
    --ema would fail inside Keras' loader, so load_state names the option instead. A checkpoint
    from before --ema existed (no key) was trained without it."""
    import json
    from types import SimpleNamespace

    from captcha_edge.train.fit import load_state

    cfg = ModelConfig(num_classes=5, height=32, width=64)
    p = SimpleNamespace(charset="abcd", model_config=cfg, recipe={"height": 32, "width": 64})
    ck = tmp_path / "checkpoint"
    ck.mkdir()
    (ck / "last.weights.h5").write_bytes(b"")
    state = {"charset": "abcd", "model_config": cfg.to_dict(), "preprocess": p.recipe,
             "next_epoch": 1}
    (ck / "state.json").write_text(json.dumps(state))
    assert load_state(tmp_path, p, 0.0)["next_epoch"] == 1  # no key: trained without --ema
    with pytest.raises(D.TrainDataError, match=r"--ema 0, not 0\.999"):
        load_state(tmp_path, p, 0.999)
    (ck / "state.json").write_text(json.dumps({**state, "ema": 0.999}))
    assert load_state(tmp_path, p, 0.999)["next_epoch"] == 1
    with pytest.raises(D.TrainDataError, match=r"--ema 0\.999, not 0;"):
        load_state(tmp_path, p, 0.0)


def test_new_runs_default_to_the_budget_chosen_graph_and_the_skip() -> None:
    a = cli.build_parser().parse_args(["--synthetic", "8", "--out", "x"])
    assert a.stem == "auto" and a.convs == "auto" and a.skip == "on" and a.epochs == "auto"
    assert cli.DEFAULT_STEM == "s4" and a.warmup_epochs is None
    assert a.head == "conv" and a.contrast == "auto"
    assert [g[:2] for g in D.AUTO_GRAPHS] == [("s2", (1, 1, 2)), ("s4", (1, 1, 1))]


@pytest.mark.tf
@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("time_pool", (4, 8))
def test_every_stem_emits_the_same_frames(stem: str, time_pool: int) -> None:
    pytest.importorskip("tensorflow")
    import keras
    from captcha_edge.train.model import build_inference_model

    cfg = ModelConfig(num_classes=7, height=48, width=160, size="small", stem=stem,
                      time_pool=time_pool, skip=True)
    m = build_inference_model(cfg, keras)
    assert tuple(m.output.shape) == (None, 160 // time_pool, 7)
    names = [layer.name for layer in m.layers]
    assert ("pool1" in names) == (stem != "s2")  # s2's strided conv1 replaces pool1
    assert m.get_layer("conv1").strides == ((1, 1) if stem == "pool" else (2, 2))
    # the skip: the logits add a Dense of the projection to the Dense of the BiLSTM's features
    assert m.get_layer("logits").kernel.shape[0] == 2 * cfg.rnn
    assert m.get_layer("logits_skip").kernel.shape[0] == cfg.dense


@pytest.mark.tf
def test_skip_off_is_the_old_graph() -> None:
    pytest.importorskip("tensorflow")
    import keras
    from captcha_edge.train.model import build_inference_model

    cfg = ModelConfig(num_classes=7, height=32, width=96, size="small")
    m = build_inference_model(cfg, keras)
    assert not {"logits_skip", "logits_sum"} & {layer.name for layer in m.layers}
    assert m.get_layer("logits").kernel.shape[0] == 2 * cfg.rnn


def test_cost_model_grows_with_pixels_colour_and_stem() -> None:
    ms = D.train_ms_per_image
    assert ms(64, 240, 1) < ms(64, 408, 1) < ms(64, 408, 3)
    assert ms(64, 240, 1, "s4") < ms(64, 240, 1, "s2") < ms(64, 240, 1, "pool")


def test_conv_head_cost_model_is_cheaper_and_keeps_the_order() -> None:
    ms = D.train_ms_per_image
    for h, w, c in ((32, 160, 1), (64, 240, 1), (64, 408, 3)):
        assert ms(h, w, c, "s4", "conv") < ms(h, w, c, "s4", "lstm")
        assert ms(h, w, c, "s4", "conv") < min(ms(h, w, c, "s2", "conv"), ms(h, w, c, "pool", "conv"))
    assert ms(64, 240, 1, "s4", "conv") < ms(64, 408, 1, "s4", "conv") < ms(64, 408, 3, "s4", "conv")
    # measured 2.36 ms (s4) and 5.8 ms (s2, convs 1,1,2) at 240x64 grey
    assert 2.0 < ms(64, 240, 1, "s4", "conv") < 2.7 and 5.0 < ms(64, 240, 1, "s2", "conv") < 6.6
    # the 8-minute budget keeps 240x64 for the conv head, where the LSTM had to shrink it
    assert D.fit_budget(64, 240, 1, "s4", 8 * 60, 240, head="conv")[:2] == (64, 240)
    assert D.fit_budget(64, 240, 1, "s4", 8 * 60, 240)[0] < 64
    assert D.choose_graph(64, 240, 1, 30 * 60, 32, "conv")[0] == "s2"
    assert D.choose_graph(64, 408, 3, 30 * 60, 32, "conv")[0] == "s4"


def test_choose_graph_takes_the_finest_the_budget_has_room_for() -> None:
    stem, convs, why = D.choose_graph(64, 192, 3, 30 * 60, 32)  # ~270k images in 30 minutes
    assert (stem, convs) == ("s2", (1, 1, 2)) and "270k" in why and "at 192x64" in why
    stem, convs, why = D.choose_graph(64, 192, 3, 4 * 60, 32)
    assert (stem, convs) == ("s4", (1, 1, 1)) and "fewer than 200k" in why
    assert D.choose_graph(64, 408, 3, 30 * 60, 32)[0] == "s4"  # too wide for s2 in 30 minutes
    assert D.choose_graph(24, 96, 1, 60, 32)[0] == "s2"  # s4 needs a height of 32
    assert D.choose_graph(64, 408, 3, 0, 32)[0] == "s2"  # no budget: the finest


def test_the_finest_graph_takes_an_input_shrunk_to_four_fifths_before_s4() -> None:
    """wide-color (408x64 RGB, 30 minutes): s2 at 328x52 read 98.5 % unseen, s4 at 408x64 95.9 %
    (docs/train.md, "--stem auto"); never more than 0.8x a side, never below the labels' width."""
    stem, convs, why = D.choose_graph(64, 408, 3, 30 * 60, 32, "conv", min_width=64)
    assert (stem, convs) == ("s2", (1, 1, 2)) and "at 328x52, shrunk from 408x64" in why
    # fit_budget with the chosen graph lands on the same input
    assert D.fit_budget(64, 408, 3, "s2", 30 * 60, 64, head="conv")[:2] == (52, 328)
    # 10 labels need 400 of the 408 columns: only the height could shrink, and 0.8x is not enough
    stem, _, why = D.choose_graph(64, 408, 3, 30 * 60, 32, "conv", min_width=400)
    assert stem == "s4" and "even at 0.8x each side" in why
    # 10 minutes: s2 would need the input at less than 0.8x a side
    assert D.choose_graph(64, 408, 3, 10 * 60, 32, "conv", min_width=64)[0] == "s4"
    # without min_width (a given geometry, the tall rule) nothing shrinks: as before
    assert D.choose_graph(64, 408, 3, 30 * 60, 32, "conv")[0] == "s4"


def test_cli_shrinks_the_input_for_the_finest_graph_only_with_the_auto_choices(tmp_path) -> None:
    prepare = _blank_set(tmp_path, (508, 80), "abcdef", 12)  # a wide grey style

    def geometry(*extra: str) -> tuple:
        cfg = prepare(*extra)
        return cfg.width, cfg.height, cfg.stem

    assert geometry() == (368, 58, "s2")  # 408x64 shrunk one step so that s2 fits 200k
    assert geometry("--stem", "s4") == (408, 64, "s4")
    assert geometry("--height", "64", "--width", "408") == (408, 64, "s4")  # given: no shrink


def test_fit_budget_keeps_what_fits_and_shrinks_what_does_not() -> None:
    h, w, why = D.fit_budget(64, 240, 1, "s4", 30 * 60, min_width=240)
    assert (h, w) == (64, 240) and "30-min budget" in why
    h, w, why = D.fit_budget(64, 408, 3, "s4", 12 * 60, min_width=320)
    assert h < 64 and 320 <= w < 408 and w % 8 == 0 and why.startswith("shrunk from 408x64")
    images = 12 * 60 * 1000 / D.train_ms_per_image(h, w, 3)
    assert images >= D.MIN_BUDGET_IMAGES or h == 32 and w == 320
    # never below the frames the labels need, nor below a height of 32; says so when short
    h, w, why = D.fit_budget(64, 640, 3, "s4", 60, min_width=320)
    assert (h, w) == (32, 320) and "still short" in why
    assert D.fit_budget(64, 640, 3, "s4", 0, min_width=320)[:2] == (64, 640)  # no budget


def test_tall_inputs_keep_their_height_only_where_the_finest_graph_fits() -> None:
    sizes = [(200, 80)] * 10  # scratch-grey's size, 6-character labels
    assert D.choose_geometry(sizes, 6)[:2] == (64, 240)  # the usual bound
    h, w, why = D.tall_geometry(sizes, 6, 8, 1, 30 * 60, "conv")
    assert (h, w) == (80, 240) and "the s2 graph still fits" in why and why.startswith("240x80")
    assert 30 * 60 * 1000 / D.train_ms_per_image(80, 240, 1, "s2", "conv") >= D.MIN_BUDGET_IMAGES
    assert D.tall_geometry(sizes, 6, 8, 1, 10 * 60, "conv") is None  # no room: 64 and the cost
    assert D.tall_geometry(sizes, 6, 8, 1, 0, "conv") is None  # no budget: as before
    assert D.tall_geometry([(160, 60)] * 10, 5, 8, 3, 30 * 60, "conv") is None  # not above 60
    assert D.tall_geometry([(200, 50)] * 10, 5, 8, 1, 30 * 60, "conv") is None  # v2: unchanged
    assert D.tall_geometry([(100, 100)] * 10, 4, 8, 3, 30 * 60, "conv")[:2] == (80, 160)
    assert D.tall_geometry([(300, 150)] * 10, 5, 8, 1, 30 * 60, "conv")[0] == 80  # the cap


def _blank_set(tmp_path, size: tuple, label: str, n: int):
    """``n`` blank grey images of ``size`` labelled ``label`` + a digit; ``prepare(*options)``
    returns the ModelConfig the CLI chooses for them (no TensorFlow)."""
    from PIL import Image

    data = tmp_path / "d"
    data.mkdir()
    for i in range(n):
        Image.new("L", size, 255).save(data / f"{label}{i % 3}_{i}.png")
    base = ["--data-dir", str(data), "--label-pattern", "^([a-z0-9]+)_", "--out",
            str(tmp_path / "r"), "-q"]
    return lambda *extra: cli.prepare(cli.build_parser().parse_args([*base, *extra])).model_config


def test_cli_takes_the_tall_input_only_with_the_auto_choices(tmp_path) -> None:
    prepare = _blank_set(tmp_path, (200, 80), "abcde", 12)

    def geometry(*extra: str) -> tuple:
        cfg = prepare(*extra)
        return cfg.width, cfg.height, cfg.stem

    assert geometry() == (240, 80, "s2")  # the 30-minute default has room
    assert geometry("--max-minutes", "10") == (240, 64, "s4")
    assert geometry("--stem", "s2") == (240, 64, "s2")  # a given graph: the usual bound
    assert geometry("--height", "64")[:2] == (240, 64)


def test_cli_prints_the_cost_reason(tmp_path, capsys) -> None:
    from PIL import Image

    data = tmp_path / "d"
    data.mkdir()
    for i in range(12):
        Image.new("RGB", (600, 80), (255, 255, 255)).save(data / f"abcdef{i % 3}_{i}.png")
    a = cli.build_parser().parse_args(["--data-dir", str(data), "--label-pattern",
                                       "^([a-z0-9]+)_", "--out", str(tmp_path / "r"),
                                       "--max-minutes", "3"])
    p = cli.prepare(a)
    out = capsys.readouterr().out
    assert "cost model" in out and "shrunk from" in out
    assert p.model_config.width >= 8 * D.FRAMES_PER_CHAR * 7
    a = cli.build_parser().parse_args(["--data-dir", str(data), "--label-pattern",
                                       "^([a-z0-9]+)_", "--out", str(tmp_path / "r"),
                                       "--max-minutes", "3", "--width", "600", "--height", "80"])
    assert (cli.prepare(a).model_config.width, cli.prepare(a).model_config.height) == (600, 80)


@pytest.mark.tf
@pytest.mark.slow  # ~1.5 CPU-minutes of training (2 min wall on a busy 2-core CPU)
def test_a_tiny_panel_style_learns_with_the_defaults(tmp_path) -> None:
    """The CI guard of the recipe: the panel's ``small`` style (90x30, 4 of 26, noise line and
    dots), 600 images, the CLI defaults and 1.5 CPU-minutes. Measured at 95 % (CER 1.2 %) with
    the issue-22 defaults; a recipe that stalls on CTC's blank plateau reads 0 %."""
    pytest.importorskip("tensorflow")
    import csv
    import json
    from pathlib import Path

    from conftest import load_file_module

    panel = load_file_module(Path(__file__).resolve().parents[1] / "scripts" / "style_panel.py")
    data = panel.write_style(panel.STYLES["small"], tmp_path / "small", 600, seed=0)
    run = tmp_path / "run"
    # A fresh process, as a user runs it: TensorFlow's start-up lines only show on first import.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = subprocess.run([sys.executable, "-m", "captcha_edge.train.cli", "--data-dir", str(data),
                           "--labels", str(data / "labels.csv"), "--out", str(run),
                           "--max-minutes", "1.5", "--budget-clock", "cpu", "--threads", "2"],
                          capture_output=True, text=True, timeout=900, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The epoch line counts the budget (--epochs auto only caps it), not "Epoch 1/10000".
    assert re.search(r"^Epoch 1 \(0\.\d of 1\.5 CPU-min spent\)$", proc.stdout, re.M), proc.stdout[:800]
    assert not re.search(r"^Epoch \d+/", proc.stdout, re.M)
    # TensorFlow's absl start-up notices (oneDNN, "no CUDA driver", cuInit) stay off stderr.
    assert not re.search(r"^[IW]\d{4} |absl::InitializeLog|failed call to cuInit", proc.stderr,
                         re.M), proc.stderr[:800]
    metrics = json.loads((run / "metrics.json").read_text())
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert float(rows[0]["val_cer"]) < 0.9, "still on the blank plateau after the first epoch"
    assert metrics["val_seq_acc"] >= 0.6, metrics["val_seq_acc"]


def test_stem_auto_counts_the_budget(tmp_path) -> None:
    """--stem auto: the s2 graph (a second conv in block 3) where the budget has room for it or
    below s4's height, else s4 with one conv a block; --convs given wins."""
    prepare = _blank_set(tmp_path, (96, 24), "ab", 10)

    def graph(*extra: str) -> tuple:
        cfg = prepare(*extra)
        return cfg.stem, tuple(cfg.convs)

    assert graph("--height", "24", "--width", "96", "--max-minutes", "1") == ("s2", (1, 1, 2))
    assert graph("--height", "40", "--width", "96") == ("s2", (1, 1, 2))  # 30 minutes: room
    assert graph("--height", "40", "--width", "96", "--max-minutes", "1") == ("s4", (1, 1, 1))
    assert graph("--height", "40", "--width", "96", "--max-minutes", "0") == ("s2", (1, 1, 2))
    assert graph("--height", "40", "--width", "96", "--convs", "1,2,1") == ("s2", (1, 2, 1))
    assert graph("--height", "40", "--width", "96", "--stem", "s4") == ("s4", (1, 1, 1))
    assert prepare("--height", "40", "--width", "96", "--stem", "pool").stem == "pool"


def test_head_defaults_to_the_lstm_and_round_trips() -> None:
    old = ModelConfig(num_classes=5)
    assert old.head == "lstm" and "head" not in old.to_dict()  # old model.json files unchanged
    conv = ModelConfig(num_classes=5, head="conv")
    assert conv.to_dict()["head"] == "conv" and ModelConfig.from_dict(conv.to_dict()) == conv
    with pytest.raises(ValueError, match="head must be one of"):
        ModelConfig(num_classes=5, head="gru")


@pytest.mark.tf
@pytest.mark.parametrize("skip", (True, False))
def test_conv_head_keeps_the_frames_and_sees_three_characters(skip: bool) -> None:
    """The conv head emits the same frames as the LSTM, and a logit depends on the frames within
    +-sum(dilations) of it and on no frame beyond (its receptive field, measured by gradients)."""
    pytest.importorskip("tensorflow")
    import keras
    import numpy as np
    import tensorflow as tf
    from captcha_edge.train.model import CONV_HEAD_DILATIONS, build_inference_model

    cfg = ModelConfig(num_classes=7, height=32, width=160, size="small", stem="s4", skip=skip,
                      head="conv", time_pool=8)
    m = build_inference_model(cfg, keras)
    assert tuple(m.output.shape) == (None, 20, 7)
    names = {layer.name for layer in m.layers}
    assert "bilstm" not in names and {"ctx1", "ctx_bn1", "ctx_add1"} <= names
    assert m.get_layer("logits").kernel.shape[0] == cfg.dense
    frames = keras.Model(m.input, m.get_layer("drop").output)
    head = keras.Model(m.get_layer("drop").output, m.get_layer("probs").output)
    for layer in head.layers:  # BatchNorm's moving statistics at init are 0/1: make them matter
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 0.5, "float32"))
    x = tf.Variable(np.asarray(frames(np.zeros((1, 32, 160, 1), "float32"))) + 0.5)
    with tf.GradientTape() as tape:
        y = head(x, training=False)[0, 10, 0]
    g = np.abs(np.asarray(tape.gradient(y, x))[0]).sum(-1)
    reach = sum(CONV_HEAD_DILATIONS)
    assert g[10 - reach] > 0 and g[10 + reach] > 0
    assert not g[:10 - reach].any() and not g[10 + reach + 1:].any()


@pytest.mark.tf
def test_conv_head_converts_to_an_all_integer_model_without_an_lstm() -> None:
    """The conv head's int8 file: uint8 input, no float compute op, no LSTM kernel."""
    pytest.importorskip("tensorflow")
    import numpy as np
    import tf_keras
    from captcha_edge.export import verify
    from captcha_edge.export.convert import to_tflite
    from captcha_edge.train.model import build_inference_model

    cfg = ModelConfig(num_classes=7, height=32, width=96, size="small", stem="s4", skip=True,
                      head="conv")
    m = build_inference_model(cfg, keras=tf_keras, batch_size=1)
    cal = np.random.default_rng(0).integers(0, 256, (8, 32, 96), dtype=np.uint8)
    flat = to_tflite(m, "int8", calibration=cal)
    assert verify.float_compute_ops(flat) == []
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=flat)
    ops = {d["op_name"] for d in it._get_ops_details()}
    assert "CONV_2D" in ops and not any("LSTM" in op for op in ops)
    assert it.get_input_details()[0]["dtype"] == np.uint8


def test_contrast_auto_stretches_faint_styles_only(tmp_path, capsys) -> None:
    """--contrast auto: faint ink on light paper gets ``contrast: stretch`` in the recipe (and the
    reason is printed); black on white keeps the pixels as they are, with no key in the recipe,
    so runtimes older than the key still read the model."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    faint, bold = tmp_path / "faint", tmp_path / "bold"
    for folder, paper, ink in ((faint, 225, 205), (bold, 250, 20)):
        folder.mkdir()
        for i in range(8):
            a = np.full((40, 120), paper, np.int64) + rng.integers(-3, 4, (40, 120))
            a[8:32, 10 + 5 * i:100:9] = ink
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(folder / f"ab{i % 2}_{i}.png")

    def prepared(folder, *extra):
        args = ["--data-dir", str(folder), "--label-pattern", "^([a-z0-9]+)_", "--out",
                str(tmp_path / "r"), *extra]
        return cli.prepare(cli.build_parser().parse_args(args))

    p = prepared(faint)
    assert p.recipe["contrast"] == "stretch" and "input contrast: stretch" in capsys.readouterr().out
    assert p.train_images.min() == 0 and p.train_images.max() == 255
    p = prepared(bold)
    assert "contrast" not in p.recipe and "input contrast: none" in capsys.readouterr().out
    assert "contrast" not in prepared(faint, "--contrast", "none").recipe
    assert prepared(bold, "--contrast", "stretch").recipe["contrast"] == "stretch"


def _tracker(monkeypatch, tmp_path, evaluate, patience):
    """fit._Tracker over a stand-in model, its validation scores from ``evaluate``, nothing
    written to disk."""
    from types import SimpleNamespace

    import numpy as np
    from captcha_edge.train import fit

    monkeypatch.setattr(fit, "evaluate", evaluate)
    model = SimpleNamespace(optimizer=SimpleNamespace(learning_rate=np.float32(1e-3)),
                            get_weights=lambda: [])
    p = SimpleNamespace(val_images=None, val_labels=[], charset="ab")
    o = fit.Options(out=tmp_path, patience=patience, augment=None)
    t = fit._Tracker(p, o, model, np.zeros(1), {})  # type: ignore[arg-type]
    monkeypatch.setattr(t, "save_weights", lambda which: None)
    monkeypatch.setattr(t, "save_checkpoint", lambda **k: None)
    return t


def test_patience_stops_only_in_the_last_quarter_of_the_schedule(monkeypatch, tmp_path) -> None:
    """--patience: a run whose validation stopped improving is stopped only once the schedule is
    PATIENCE_FROM through (its learning rate decayed); before that it goes on."""
    from captcha_edge.train import fit

    flat = {"val_loss": 1.0, "val_seq_acc": 0.5, "val_cer": 0.1}
    t = _tracker(monkeypatch, tmp_path, lambda *a, **k: (dict(flat), []), patience=2)
    now = {"p": 0.1}
    t.progress = lambda: now["p"]
    assert not t.on_epoch_end(0, {"loss": 1.0})  # the best so far
    assert not t.on_epoch_end(1, {"loss": 1.0}) and not t.on_epoch_end(2, {"loss": 1.0})
    assert t.since_best == 2 and not t.stop_reason  # patience spent, but early in the schedule
    now["p"] = fit.PATIENCE_FROM
    assert t.on_epoch_end(3, {"loss": 1.0}) and t.stop_reason.startswith("early stop")


def test_perfect_validation_stops_a_run_only_when_it_stays_perfect(monkeypatch, tmp_path) -> None:
    """One lucky epoch at 100 % on a small validation split does not stop the run (it did: the
    best epoch was perfect and nothing could beat it); N perfect epochs in a row do."""
    scores = iter([1.0, 0.98, 0.97, 0.98, 0.96, 0.98, 1.0, 1.0, 1.0])

    def evaluate(*a, **k):
        acc = next(scores)
        return {"val_loss": 0.1, "val_seq_acc": acc, "val_cer": 0.0 if acc == 1.0 else 0.01}, []

    t = _tracker(monkeypatch, tmp_path, evaluate, patience=9)  # perfect for max(3, 9 // 3) epochs
    t.progress = lambda: 0.2
    stops = [t.on_epoch_end(e, {"loss": 1.0}) for e in range(8)]
    assert stops == [False] * 8 and t.best_epoch == 1  # the lucky first epoch stays the best
    assert t.on_epoch_end(8, {"loss": 1.0}) and t.stop_reason == "validation is perfect and stable"
