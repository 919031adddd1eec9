"""The equalize route (export/equalize.py) and the ladder's order by the diagnosis (routes.order).

The ordering tests need no TensorFlow; the equalization ones build a tiny model with tf-keras
(the graph export rebuilds) and check that the rescaling keeps the float function exactly while
evening out the first conv's channel ranges.
"""
from __future__ import annotations

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
    assert all(x.transform in ("none", "equalize") for x in routes.ROUTES)


def test_scales_even_the_ranges():
    r = np.array([10.0, 1.0, 0.1, 0.0])
    s = equalize.scales(r, alpha=1.0)
    floor = equalize.MIN_SHARE * 10.0
    assert np.allclose(s, [1.0, 10.0, 100.0, 10.0 / floor])
    assert np.allclose(equalize.scales(r, alpha=0.5)[:3], [1.0, 10 ** 0.5, 10.0])
    assert np.all(equalize.scales(np.zeros(3)) == 1.0)  # all dead: nothing to do


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
    # alpha 0.5 takes the square root of the spread, over the channels above the floor
    live = before >= equalize.MIN_SHARE * before.max()
    spread = lambda r: r[live].max() / r[live].min()  # noqa: E731
    assert spread(before) > 10 and spread(after) <= 1.01 * spread(before) ** 0.5
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
