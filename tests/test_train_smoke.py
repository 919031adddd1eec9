"""captcha-train end to end on ~64 images: artifacts, metadata, falling loss, Ctrl-C and --resume.

Uses the shared real captchas when present (../shared/data/captcha_images_v2), else synthetic ones.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from captcha_edge.train import data as D
from captcha_edge.train import fit
from captcha_edge.train.cli import main
from captcha_edge.train.model import ModelConfig, build_model, ctc_loss, pack_targets
from captcha_edge.train.runinfo import RunInfo

pytestmark = pytest.mark.tf

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "captcha_images_v2"
CONTRACT_KEYS = {"charset", "blank", "preprocess", "input_shape", "time_steps", "max_label_length",
                 "model_config", "data", "split", "val_files", "train_files", "package_version",
                 "keras"}


def _data_args(tmp_path: Path) -> list:
    if REAL.is_dir():
        names = sorted(p.name for p in REAL.glob("*.png"))[:64]
        labels = tmp_path / "labels.csv"
        labels.write_text("".join(f"{n},{Path(n).stem}\n" for n in names))
        return ["--data-dir", str(REAL), "--labels", str(labels)]
    pytest.importorskip("captcha")
    return ["--synthetic", "64", "--synthetic-length", "4-5", "--charset", "0123456789abcdef"]


@pytest.mark.slow  # ~45 s on an idle 2-core CPU; independent of the decoder engine
def test_smoke_train_interrupt_resume(tmp_path: Path, monkeypatch, capsys) -> None:
    run = tmp_path / "run"
    args = _data_args(tmp_path) + ["--out", str(run), "--size", "small", "--batch-size", "16",
                                   "--epochs", "2", "--warmup-epochs", "0", "--lr", "3e-3",
                                   "--threads", "2", "--seed", "1"]
    original = fit._Tracker.on_epoch_end

    def ctrl_c_in_second_epoch(self, epoch, logs):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch, logs)

    monkeypatch.setattr(fit._Tracker, "on_epoch_end", ctrl_c_in_second_epoch)
    assert main(args) == 130
    assert "--resume" in capsys.readouterr().err
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["interrupted"] and state["next_epoch"] == 1
    assert (run / "model.keras").is_file()  # usable model written even though interrupted

    monkeypatch.setattr(fit._Tracker, "on_epoch_end", original)
    assert main(args + ["--resume"]) == 0

    for name in ("model.keras", "model.json", "history.csv", "curves.png", "samples.png",
                 "metrics.json"):
        assert (run / name).stat().st_size > 0, name
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]

    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])  # it learns

    meta = json.loads((run / "model.json").read_text())
    assert CONTRACT_KEYS <= set(meta)
    assert RunInfo.from_dict(meta).to_dict() == meta  # written through the contract
    assert meta["blank"] == len(meta["charset"])
    cfg = ModelConfig.from_dict(meta["model_config"])
    assert meta["input_shape"] == [50, 200, 1]
    assert meta["time_steps"] == cfg.time_steps == 200 // cfg.time_pool
    assert meta["keras"] == "keras3"
    assert cfg.num_classes == len(meta["charset"]) + 1
    train, val = set(meta["train_files"]), set(meta["val_files"])
    assert train and val and not train & val and len(train | val) == 64
    expect_val = {s.name for s in D.split_samples([D.Sample(n, "x") for n in train | val],
                                                  meta["split"]["val_fraction"])[1]}
    assert val == expect_val

    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["val_seq_acc"] <= 1 and metrics["val_count"] == len(val)

    import keras

    model = keras.models.load_model(run / "model.keras")
    assert model.input.name.startswith("image") or model.layers[0].name == "image"
    assert model.layers[-1].name == "probs"
    x = np.full((1, 50, 200, 1), 255.0, np.float32)
    probs = np.asarray(model(x))
    assert probs.shape == (1, meta["time_steps"], len(meta["charset"]) + 1)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)


def test_ctc_loss_ignores_padding_of_variable_length_labels() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 12, 5)).astype(np.float32)
    labels = ["ab", "dcab", "b"]
    codes, lengths = D.encode_labels(labels, "abcd", max_len=4)
    batch = np.asarray(ctc_loss(pack_targets(codes, lengths), logits))
    for i, lab in enumerate(labels):
        c, n = D.encode_labels([lab], "abcd", max_len=len(lab))
        alone = np.asarray(ctc_loss(pack_targets(c, n), logits[i:i + 1]))
        np.testing.assert_allclose(batch[i], alone[0], rtol=1e-5)
    # a batch padded further (max_len 7) gives the same losses
    codes7, _ = D.encode_labels(labels, "abcd", max_len=7)
    np.testing.assert_allclose(np.asarray(ctc_loss(pack_targets(codes7, lengths), logits)), batch,
                               rtol=1e-5)


def test_dataset_batches_and_augmentation_stay_in_range() -> None:
    imgs = np.random.default_rng(1).integers(0, 256, (10, 50, 200), dtype=np.uint8)
    codes, lengths = D.encode_labels(["ab", "abcd", "c"] * 3 + ["d"], "abcd", max_len=4)
    targets = pack_targets(codes, lengths)
    plain = list(fit.make_dataset(imgs, targets, 4, seed=0, augment=None))
    assert [b[0].shape[0] for b in plain] == [4, 4, 2]
    x = np.concatenate([b[0].numpy() for b in plain])[..., 0]
    y = np.concatenate([b[1].numpy() for b in plain])
    order = [int(np.flatnonzero((imgs == xi).all(axis=(1, 2)))[0]) for xi in x]
    assert sorted(order) == list(range(10))  # a permutation, pixels untouched
    np.testing.assert_array_equal(y, targets[order])
    from captcha_edge.train.augment import AugmentConfig

    aug = np.concatenate([b[0].numpy() for b in fit.make_dataset(imgs, targets, 4, 0,
                                                                  AugmentConfig())])
    assert aug.shape == (10, 50, 200, 1) and aug.min() >= 0 and aug.max() <= 255
    assert not np.allclose(np.sort(aug.reshape(10, -1), 0), np.sort(x.reshape(10, -1), 0))


def test_inference_and_train_models_share_weights() -> None:
    cfg = ModelConfig(num_classes=6, size="small")
    train, inference = build_model(cfg)
    assert [w.shape for w in train.weights] == [w.shape for w in inference.weights]
    x = np.random.default_rng(2).uniform(0, 255, (2, 50, 200, 1)).astype(np.float32)
    logits = np.asarray(train(x))
    np.testing.assert_allclose(np.asarray(inference(x)), fit.softmax(logits), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("time_pool,frames", [(4, 50), (8, 25)])
def test_keras3_and_tf_keras_build_the_same_layers(time_pool: int, frames: int) -> None:
    tf_keras = pytest.importorskip("tf_keras")
    import keras
    from captcha_edge.train.model import build_inference_model

    cfg = ModelConfig(num_classes=20, time_pool=time_pool)
    k3 = build_inference_model(cfg, keras)
    k2 = build_inference_model(cfg, tf_keras)
    assert [layer.name for layer in k3.layers] == [layer.name for layer in k2.layers]
    assert [tuple(w.shape) for w in k3.get_weights()] == [tuple(w.shape) for w in k2.get_weights()]
    k2.set_weights(k3.get_weights())
    x = np.random.default_rng(3).uniform(0, 255, (1, 50, 200, 1)).astype(np.float32)
    a, b = np.asarray(k3(x)), np.asarray(k2(x))
    assert a.shape == (1, frames, 20)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_model_config_round_trip_and_old_dicts() -> None:
    cfg = ModelConfig(num_classes=7, size="large", time_pool=8)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in cfg.to_dict().items() if k != "time_pool"}  # written before time_pool
    assert ModelConfig.from_dict(old).time_steps == 50
    with pytest.raises(ValueError, match="time_pool must be 4 or 8"):
        ModelConfig(num_classes=7, time_pool=2)


def _layer_weights(path: Path) -> dict:
    import h5py

    out: dict = {}
    with h5py.File(path, "r") as f:
        f["layers"].visititems(lambda name, obj: out.__setitem__(name, obj[()])
                               if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.mark.slow  # two one-epoch runs, ~20 s
@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_ema_keeps_the_average_as_the_best_weights(tmp_path: Path, ema: float) -> None:
    """One epoch: without --ema the best weights are the last ones; with it they are the moving
    average, while the checkpoint that --resume continues from keeps the live weights."""
    run = tmp_path / "run"
    args = _data_args(tmp_path) + ["--out", str(run), "--size", "small", "--epochs", "1",
                                   "--max-minutes", "0", "--threads", "2", "--seed", "1",
                                   "--ema", str(ema)]
    assert main(args) == 0
    best = _layer_weights(run / "checkpoint" / "best.weights.h5")
    last = _layer_weights(run / "checkpoint" / "last.weights.h5")
    assert best.keys() == last.keys() and len(best) > 10
    # BatchNorm's moving statistics are not averaged; every trained kernel is.
    differ = [k for k in best if not np.array_equal(best[k], last[k])]
    if ema:
        assert any("conv" in k or "dense" in k for k in differ), differ
    else:
        assert differ == []


@pytest.mark.slow  # one epoch of 72 steps of the small model, ~10 s
def test_an_epoch_runs_whole_calls_of_eight_steps_and_no_more(tmp_path: Path) -> None:
    """An epoch of at least 70 steps runs 8 steps a call of the compiled step, rounded up to 72
    (Keras runs whole calls only): the optimizer counts 72 steps, and an epoch of 4 steps (64
    images) still runs 4, one a call."""
    from captcha_edge.train import cli, fit

    assert fit.execution_steps(200, 8) == 8 and fit.execution_steps(63, 8) == 1
    assert fit.execution_steps(4, 8) == 1 and fit.execution_steps(500, 1) == 1
    run = tmp_path / "run"
    args = _data_args(tmp_path) + ["--out", str(run), "--size", "small", "--seed", "1"]
    prepared = cli.prepare(cli.build_parser().parse_args(args))
    for min_steps, want in ((70, 72), (0, 4)):
        opts = fit.Options(out=run, epochs=1, min_epoch_steps=min_steps, warmup_epochs=0,
                           threads=2, verbose=False, augment=None)
        assert len(prepared.train_images) <= 64
        fit.train(prepared, opts)
        state = json.loads((run / "checkpoint" / "state.json").read_text())
        assert state["step"] == want and state["next_epoch"] == 1


@pytest.mark.slow  # ~40 s: three tiny epochs and an int8 export
def test_mixed_precision_trains_and_exports(tmp_path: Path) -> None:
    """The GPU's mixed_float16 path, forced on the CPU (no GPU in CI): the loss stays finite and
    falls (the loss scaling and the float32 softmax/loss work), the run records the policy, the
    process-wide policy is put back afterwards, and the int8 export of its float16-trained
    weights reads like the Keras model."""
    import keras
    from captcha_edge.export.cli import main as export_main

    run = tmp_path / "run"
    args = _data_args(tmp_path) + ["--out", str(run), "--size", "small", "--epochs", "3",
                                   "--mixed-precision", "on", "--threads", "2", "--seed", "1",
                                   "--quiet"]
    before = keras.mixed_precision.global_policy().name
    try:
        assert main(args) == 0
        assert keras.mixed_precision.global_policy().name == before  # train() puts it back
    finally:  # the policy is process-wide: later tests build float32 models
        keras.mixed_precision.set_global_policy("float32")
    with (run / "history.csv").open(newline="") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh)]
    assert len(losses) == 3 and np.isfinite(losses).all() and losses[-1] < losses[0], losses
    assert json.loads((run / "model.json").read_text())["mixed_precision"] == "mixed_float16"

    assert export_main([str(run), "--int8"]) == 0
    report = json.loads((run / "export_report.json").read_text())
    check = next(r for r in report["results"] if r["format"] == "int8")["verification"]
    assert check["agreement"] >= 0.99 and check["max_abs_diff"] < 0.25, check
