"""The equalize route (export/equalize.py) and the ladder's order by the diagnosis (routes.order).

The ordering tests need no TensorFlow; the equalization ones build a tiny model with tf-keras
(the graph export rebuilds) and check that the rescaling keeps the float function exactly while
evening out the first conv's channel ranges.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from captcha_edge.export import equalize, routes


def _diag(*rows):
    return {"worst": [{"op": "CONV_2D", "tensor": t, "agreement_gain_pp": a, "gain_pp": g}
                      for t, a, g in rows]}


FIRST = "crnn/relu1/Relu;crnn/bn1/FusedBatchNormV3;crnn/conv1/Conv2D"
THIRD = "crnn/relu3/Relu;crnn/bn3/FusedBatchNormV3;crnn/conv3/Conv2D"


def test_names_first_conv():
    assert routes.names_first_conv(FIRST)
    assert not routes.names_first_conv(THIRD)
    assert not routes.names_first_conv("crnn/conv1b/Conv2D")  # a later conv of block 1
    assert not routes.names_first_conv("tfl.unidirectional_sequence_lstm1")


def test_ladder_follows_the_diagnosis():
    rest = routes.ladder()[1:]
    default = [r.name for r in rest]
    assert default[0] == "wide-calibration"
    first = [r.name for r in routes.order(rest, _diag((FIRST, 9.4, 19.5), (THIRD, 0.1, 0.0)))]
    assert first[0] == "equalize" and sorted(first) == sorted(default)
    other = [r.name for r in routes.order(rest, _diag((THIRD, 2.0, 1.0), (FIRST, 0.5, 0.0)))]
    assert other == default
    # nothing recovers anything, no diagnosis, or a failed one: the table's order
    assert [r.name for r in routes.order(rest, _diag((FIRST, 0.0, 0.0)))] == default
    assert [r.name for r in routes.order(rest, None)] == default
    assert [r.name for r in routes.order(rest, {"error": "x"})] == default


def test_route_table_has_equalize():
    r = routes.get("equalize")
    assert r.transform == "equalize" and r.targets == "first-conv" and r.calibration == "given"
    from captcha_edge.export.convert import TRANSFORMS

    assert all(x.transform in TRANSFORMS for x in routes.ROUTES)


def _shares(r, kernel, s):
    """Activation and next-conv weight shares of each channel after scaling it by ``s``."""
    a = r * s
    return a / a.max(), equalize.weight_shares(kernel / s[None, None, :, None])


def test_weight_shares_are_per_output_channel():
    k = np.zeros((1, 1, 3, 2))
    k[0, 0, :, 0] = [4.0, 2.0, 0.0]   # output 0: input 1 uses half of its range
    k[0, 0, :, 1] = [0.1, 0.0, -0.2]  # output 1: small weights, still a per-channel scale
    assert np.allclose(equalize.weight_shares(k), [1.0, 0.5, 1.0])


def test_scales_balance_activation_and_weight_shares():
    rng = np.random.default_rng(0)
    r = 10.0 ** rng.uniform(-2, 1, 16)  # three decades, as on the hard style
    kernel = rng.normal(size=(3, 3, 16, 32))
    s = equalize.scales(r, kernel)
    a, w = _shares(r, kernel, s)
    assert np.abs(a - w).max() < 0.01  # both int8 grids give the channel the same share
    assert s[np.argmax(r)] == 1.0 and np.all(s > 0)
    before = _shares(r, kernel, np.ones_like(r))[0]
    assert a.min() > 5 * before.min()  # the narrowest channel gets more of the one scale


def test_scales_undo_an_earlier_rescaling():
    """A channel made wide by a rescaling that keeps the float function (its next-conv weights
    shrunk to match) is put back: the result does not depend on the rescaling."""
    rng = np.random.default_rng(1)
    r, kernel = 10.0 ** rng.uniform(-1, 1, 8), rng.normal(size=(3, 3, 8, 16))
    f = 10.0 ** rng.uniform(-2, 2, 8)
    s, s_f = equalize.scales(r, kernel), equalize.scales(r * f, kernel / f[None, None, :, None])
    ratio = s_f * f / s
    assert ratio.max() / ratio.min() < 1.02


def test_scales_leave_dead_layers_alone():
    k = np.ones((3, 3, 3, 4))
    assert np.all(equalize.scales(np.zeros(3), k) == 1.0)
    s = equalize.scales(np.array([1.0, 0.0, 0.5]), k)  # a dead channel: bounded scale
    assert np.all(np.isfinite(s)) and s.max() <= 1 / equalize.MIN_SHARE


def _model(stem):
    tf_keras = pytest.importorskip("tf_keras")
    from captcha_edge.train.model import ModelConfig, build_inference_model

    cfg = ModelConfig(num_classes=5, height=16, width=32, size="small", stem=stem)
    m = build_inference_model(cfg, keras=tf_keras, batch_size=None)
    rng = np.random.default_rng(0)
    # Uneven channels, as on the hard style: BatchNorm gammas spread over three decades.
    bn = m.get_layer("bn1")
    g, b, mu, var = bn.get_weights()
    g = (10.0 ** rng.uniform(-2, 1, g.shape)).astype(np.float32)
    bn.set_weights([g, rng.normal(0, 0.1, b.shape).astype(np.float32), mu, var])
    return m, rng.integers(0, 256, (12, 16, 32)).astype(np.uint8)


@pytest.mark.tf
@pytest.mark.parametrize("stem", ["pool", "s2"])
def test_equalize_keeps_the_float_function(stem):
    from captcha_edge.export.convert import keras_probs, transform

    m, images = _model(stem)
    relu1 = m.get_layer("relu1")
    before = equalize.channel_ranges(m, relu1, images)
    ref = keras_probs(m, images)
    done = transform(m, "equalize", images)
    assert [d["relu"] for d in done] == ["relu1"]
    assert done[0]["next"] == "conv2"
    after = equalize.channel_ranges(m, relu1, images)
    assert np.allclose(keras_probs(m, images), ref, atol=1e-5)
    # the narrow channels now use more of relu1's one int8 scale
    live = before >= equalize.MIN_SHARE * before.max()
    spread = lambda r: r[live].max() / r[live].min()  # noqa: E731
    assert spread(before) > 10 and spread(after) < spread(before) / 3
    assert np.isclose(after.max(), before.max(), rtol=1e-4)  # the widest channel is kept


@pytest.mark.tf
def test_transform_rejects_unknown_and_needs_images():
    from captcha_edge.export.convert import transform

    m, _ = _model("pool")
    assert transform(m, "none", None) is None
    with pytest.raises(ValueError, match="unknown transform 'int4'"):
        transform(m, "int4", None)
    with pytest.raises(ValueError, match="needs calibration images"):
        transform(m, "equalize", None)


FIXTURE_RUN = Path(__file__).resolve().parent / "data" / "export_run"


@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.skipif(not (FIXTURE_RUN / "model.keras").is_file(),
                    reason="tests/data/export_run missing")
def test_equalize_mends_a_first_conv_collapse(tmp_path, monkeypatch):
    """Issue 23 in small: the fixture run with one relu1 channel x100 and conv2's weights for
    it / 100 (the same float model) collapses with the plain route; the ladder's equalize route
    gives an integer model that reads again."""
    keras = pytest.importorskip("keras")
    pytest.importorskip("ai_edge_litert")
    import shutil

    from captcha_edge.export.cli import main

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(FIXTURE_RUN / "model.json", run / "model.json")
    model = keras.models.load_model(FIXTURE_RUN / "model.keras", compile=False)
    s = np.ones(model.get_layer("bn1").get_weights()[0].shape)
    s[int(np.argmax(model.get_layer("bn1").get_weights()[0]))] = 100.0
    equalize.rescale(model.get_layer("bn1"), model.get_layer("conv2"), s)
    model.save(run / "model.keras")
    # plain, then equalize (wide-calibration only costs time here: it changes the calibration)
    keep = tuple(r for r in routes.ROUTES if r.name in ("plain", "equalize"))
    monkeypatch.setattr(routes, "ROUTES", keep)
    monkeypatch.setattr(routes, "ROUTE_NAMES", tuple(r.name for r in keep))
    code = main([str(run), "--int8", "--out", str(tmp_path / "out"), "--calib-size", "60",
                 "--diagnose-images", "24", "--max-drop", "5", "--quiet"])
    report = json.loads((tmp_path / "out" / "export_report.json").read_text())
    plain, *rest = report["int8_route"]["trials"]
    assert plain["route"] == "plain" and plain["drop_pp"] >= 30  # it collapsed
    assert code == 0 and report["int8_route"]["route"] == "equalize"
    assert report["int8_drop_pp"] <= 5
    row = next(r for r in report["results"] if r["format"] == "int8")
    assert row["verification"]["agreement"] >= 0.99
    assert row["float_compute_ops"] == [] and row["input_dtype"] == "uint8"
