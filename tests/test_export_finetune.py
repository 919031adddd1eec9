"""The fine-tune route (export/finetune.py): quantization-aware fine-tuning of the weights.

The rounding is checked against the int8 grids the converter uses (per output channel for
convs, per tensor for dense layers, per gate for the LSTM); the fine-tuning on a tiny tf-keras
model: the loss falls, every rounded weight ends on its grid, and the batch-1 model gets the
trainer's weights. The route comes last in the ladder whatever the diagnosis names. The CLI
path (``--int8-route fine-tune``) runs in tests/test_export_int8.py with every other route.
"""
from __future__ import annotations

import numpy as np
import pytest
from captcha_edge.export import routes


def _on_grid(w, scale):
    q = w / scale
    return np.allclose(q, np.rint(q), atol=1e-3) and np.abs(np.rint(q)).max() <= 127


@pytest.mark.tf
def test_quantize_uses_the_converters_grids():
    pytest.importorskip("tensorflow")
    from captcha_edge.export.finetune import quantize

    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 2, 4)).astype(np.float32) * np.array([1, 10, 0.1, 3], np.float32)
    q = np.asarray(quantize(w, "channel"))
    for c in range(4):  # each output channel on its own grid, its largest weight kept
        scale = np.abs(w[..., c]).max() / 127
        assert _on_grid(q[..., c], scale) and np.isclose(np.abs(q[..., c]).max(), scale * 127)
        assert np.abs(q[..., c] - w[..., c]).max() <= scale / 2 + 1e-6
    d = rng.normal(size=(6, 5)).astype(np.float32)
    assert _on_grid(np.asarray(quantize(d, "tensor")), np.abs(d).max() / 127)
    g = rng.normal(size=(5, 8)).astype(np.float32) * np.repeat([1, 5, 0.2, 2], 2)
    qg = np.asarray(quantize(g, "gate"))
    for k in range(4):  # the LSTM kernel's four gates, one scale each
        part = g[:, 2 * k:2 * k + 2]
        assert _on_grid(qg[:, 2 * k:2 * k + 2], np.abs(part).max() / 127)
    assert not _on_grid(qg, np.abs(g).max() / 127)  # not one scale for the whole tensor
    z = np.zeros((3, 2), np.float32)
    assert np.array_equal(np.asarray(quantize(z, "channel")), z)  # an all-zero channel stays 0


@pytest.mark.tf
@pytest.mark.slow
def test_fine_tune_lowers_the_loss_and_leaves_weights_on_their_grid():
    tf_keras = pytest.importorskip("tf_keras")
    from captcha_edge.export import finetune
    from captcha_edge.export.convert import rebuild
    from captcha_edge.train.model import ModelConfig, build_inference_model

    cfg = ModelConfig(num_classes=5, height=16, width=32, size="small")
    model = build_inference_model(cfg, keras=tf_keras, batch_size=1)
    trainer = rebuild(model, cfg.to_dict(), route="tf_keras", batch=8)
    rng = np.random.default_rng(1)
    labels = [list(rng.integers(0, 4, 2)) for _ in range(32)]
    images = np.full((32, 16, 32), 200, np.uint8)
    for img, lab in zip(images, labels):  # class k: a dark bar at height 3k, one per half
        for half, k in enumerate(lab):
            img[3 * k:3 * k + 3, 16 * half + 4:16 * half + 12] = 30
    texts = ["".join("abcd"[k] for k in lab) for lab in labels]
    before = [w.copy() for w in model.get_weights()]
    done = finetune.fine_tune(model, trainer, images, labels, blank=4, steps=80, batch=8,
                              lr=3e-3, check=(images[:10], texts[:10], "abcd"))
    assert done["loss_last"] < 0.8 * done["loss_first"]
    assert 0.0 <= done["float_seq_acc"] <= 1.0 and done["steps"] == 80
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    for a, b in zip(model.get_weights(), trainer.get_weights()):
        assert np.array_equal(a, b)  # the batch-1 model carries the trained weights
    for layer in model.layers:
        for v, how in finetune._groups(layer):
            w = v.numpy()
            assert np.allclose(np.asarray(finetune.quantize(w, how)), w, atol=1e-6), v.name
    assert len(done["rounded_weights"]) == 3 + 2 + 4  # convs, proj + logits, two LSTMs x 2


def test_fine_tune_comes_last_whatever_the_diagnosis_names():
    r = routes.get("fine-tune")
    assert r.transform == "fine-tune" and routes.ROUTE_NAMES[-1] == "fine-tune"
    first = "crnn/relu1/Relu;crnn/bn1/FusedBatchNormV3;crnn/conv1/Conv2D"
    for tensor in (first, "crnn/logits/Tensordot"):
        diag = {"worst": [{"op": "CONV_2D", "tensor": tensor, "agreement_gain_pp": 1.0,
                           "gain_pp": 2.0}]}
        assert routes.order(routes.ladder()[1:], diag)[-1].name == "fine-tune"


def test_fine_tune_without_training_images_fails_that_route_only(tmp_path, monkeypatch):
    """The ladder goes on (the routes tried keep their files) when the run's training images
    cannot be read for fine-tuning: the route's result is the error message."""
    import argparse

    from captcha_edge.export.runfolder import ExportError

    def missing(*args, **kwargs):
        raise ExportError("the fine-tune route needs the labelled training images of run; "
                          "pass --data-dir")

    calls = []
    monkeypatch.setattr(routes, "fine_tune_job", missing)
    convert = routes.cli_convert(argparse.Namespace(), object(), tmp_path, tmp_path / "log",
                                 worker=lambda *a: calls.append(a) or {})
    res = convert(routes.get("fine-tune"), np.zeros((2, 4, 4), np.uint8))
    assert isinstance(res, str) and "--data-dir" in res and calls == []
