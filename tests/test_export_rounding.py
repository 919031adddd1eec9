"""The first-conv-rounding route (export/rounding.py): searched int8 weights and bias correction
for the first convolution, kept by the converter.

The search is checked against the rounding it replaces (never a larger error, each weight at
its floor or ceiling, the scale-setting weight kept) without TensorFlow; the transform on a
tiny tf-keras model with a low-contrast input (the failure it is for): the weights land on the
per-channel int8 grid, the converter's int8 file holds exactly those integers, the float
function moves by the rounding only, and the first conv's error shrinks.
"""
from __future__ import annotations

import numpy as np
import pytest
from captcha_edge.export import rounding, routes


def _problem(seed, d=9):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(400, d)) + 3.0  # patches with a large common level, as a flat background
    mean, second = a.mean(axis=0), a.T @ a / len(a)
    w = rng.normal(size=d) * 0.3
    return w, float(np.abs(w).max()) / rounding.QMAX, mean, second - np.outer(mean, mean)


@pytest.mark.parametrize("seed", range(6))
def test_search_is_never_worse_than_nearest_rounding(seed):
    w, scale, mean, cov = _problem(seed)
    nearest = np.rint(w / scale)
    q = rounding.search(w, scale, cov)
    err = lambda q: (w - scale * q) @ cov @ (w - scale * q)  # noqa: E731
    assert err(q) <= err(nearest) + 1e-15
    assert np.all((q == np.floor(w / scale)) | (q == np.ceil(w / scale)))
    top = int(np.argmax(np.abs(w)))
    assert abs(q[top]) == rounding.QMAX and np.abs(q).max() == rounding.QMAX  # scale kept


def test_search_finds_the_exact_optimum_on_a_tiny_problem():
    """Brute force over every floor/ceiling choice of 5 weights: coordinate descent reaches a
    choice within 5 % of the best (the objective is a small convex quadratic)."""
    import itertools

    w, scale, mean, cov = _problem(11, d=5)
    lo, hi = np.floor(w / scale), np.ceil(w / scale)
    top = int(np.argmax(np.abs(w)))
    best = min(((w - scale * q) @ cov @ (w - scale * q)) for q in (
        np.where(np.array(bits, bool), hi, lo) for bits in itertools.product((0, 1), repeat=5))
        if q[top] == np.rint(w[top] / scale))
    q = rounding.search(w, scale, cov)
    assert (w - scale * q) @ cov @ (w - scale * q) <= best * 1.05 + 1e-15


def test_same_padding_matches_tensorflow():
    assert rounding.same_padding(32, 3, 1) == (1, 1)
    assert rounding.same_padding(32, 3, 2) == (0, 1)
    assert rounding.same_padding(33, 3, 2) == (1, 1)


def test_the_route_is_in_the_ladder_for_the_first_conv():
    r = routes.get("first-conv-rounding")
    assert r.transform == "round-first-conv" and r.targets == "first-conv"
    first = "crnn/relu1/Relu;crnn/bn1/FusedBatchNormV3;crnn/conv1/Conv2D"
    diag = {"worst": [{"op": "CONV_2D", "tensor": first, "agreement_gain_pp": 9.4,
                       "gain_pp": 19.5}]}
    names = [x.name for x in routes.order(routes.ladder()[1:], diag)]
    assert names.index("first-conv-rounding") < names.index("wide-calibration")


def _flat_model(stem):
    """A tiny model whose first conv sums a large common level, on grey images that are a
    nearly flat background with faint strokes."""
    tf_keras = pytest.importorskip("tf_keras")
    from captcha_edge.train.model import ModelConfig, build_inference_model

    cfg = ModelConfig(num_classes=5, height=16, width=32, size="small", stem=stem)
    m = build_inference_model(cfg, keras=tf_keras, batch_size=1)
    rng = np.random.default_rng(0)
    images = 120 + rng.normal(0, 3, (40, 16, 32))
    images[:, 6:10, ::4] += 12
    images = images.clip(0, 255).astype(np.uint8)
    conv = m.get_layer("conv1")
    k = conv.get_weights()[0]
    conv.set_weights([(k + 0.5 * np.abs(k).max()).astype(np.float32)])
    probe = tf_keras.Model(m.inputs, conv.output)
    out = np.concatenate([np.asarray(probe(images[i:i + 1, ..., None].astype(np.float32)))
                          for i in range(len(images))])
    bn = m.get_layer("bn1")
    g, b, _, _ = bn.get_weights()
    bn.set_weights([np.full_like(g, 5.0), b, out.mean(axis=(0, 1, 2)).astype(np.float32),
                    out.var(axis=(0, 1, 2)).astype(np.float32)])
    return m, images


@pytest.mark.tf
@pytest.mark.parametrize("stem", ["pool", "s2"])
def test_round_first_conv_writes_weights_the_converter_keeps(stem):
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter
    from captcha_edge.export.convert import keras_probs, to_tflite, transform

    m, images = _flat_model(stem)
    ref = keras_probs(m, images, batch_size=1)
    [done] = transform(m, "round-first-conv", images)
    assert done["conv"] == "conv1"
    assert len(done["channels"]) == m.get_layer("bn1").get_weights()[0].shape[0]
    # the first conv's error (relative to its signal) is smaller than nearest rounding's
    assert done["error_of_signal_searched"][1] < done["error_of_signal_nearest"][1]
    kernel = m.get_layer("conv1").get_weights()[0]
    flat = kernel.reshape(-1, kernel.shape[-1])
    q = flat / (np.abs(flat).max(axis=0) / rounding.QMAX)
    assert np.abs(q - np.rint(q)).max() < 1e-3  # on the per-channel int8 grid
    assert np.abs(keras_probs(m, images, batch_size=1) - ref).max() < 0.01  # rounding only
    it = Interpreter(model_content=to_tflite(m, "int8", calibration=images))
    it.allocate_tensors()
    conv1 = [d for d in it.get_tensor_details() if d["dtype"] == np.int8
             and len(d["shape"]) == 4 and "conv1" in d["name"] and d["shape"][-1] == 1]
    assert conv1, "no int8 conv1 kernel in the converted model"
    w = it.get_tensor(conv1[0]["index"])  # (out, kh, kw, in)
    assert np.array_equal(w.transpose(1, 2, 3, 0).reshape(-1, w.shape[0]), np.rint(q))


@pytest.mark.tf
def test_round_convs_puts_every_conv_on_the_grid_the_converter_keeps():
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter
    from captcha_edge.export.convert import keras_probs, to_tflite, transform

    m, images = _flat_model("s2")
    ref = keras_probs(m, images, batch_size=1)
    done = transform(m, "round-convs", images)
    convs = [c.name for c, _ in rounding.chains(m)]
    assert [d["conv"] for d in done] == convs and len(convs) >= 3
    assert np.abs(keras_probs(m, images, batch_size=1) - ref).max() < 0.02
    it = Interpreter(model_content=to_tflite(m, "int8", calibration=images))
    it.allocate_tensors()
    kernels = {}
    for d in it.get_tensor_details():
        if d["dtype"] == np.int8 and len(d["shape"]) == 4:
            try:
                kernels[d["name"]] = it.get_tensor(d["index"])
            except ValueError:
                continue
    for name in convs:
        k = m.get_layer(name).get_weights()[0]
        q = np.rint(k.reshape(-1, k.shape[-1]) / (np.abs(k.reshape(-1, k.shape[-1])).max(axis=0)
                                                   / rounding.QMAX))
        held = [w for n, w in kernels.items() if f"/{name}/" in n
                and w.shape == (k.shape[3], k.shape[0], k.shape[1], k.shape[2])]
        assert held, f"no int8 kernel of {name} in the converted model"
        assert np.array_equal(held[0].transpose(1, 2, 3, 0).reshape(-1, k.shape[-1]), q), name
