"""Cross-layer equalization before int8 conversion (the ``equalize`` route).

The int8 converter gives every activation tensor one scale (per tensor), while the first
convolution's output channels can have very different ranges: on a hard style, one channel of
``relu1`` reaching 11 and most staying below 1 leaves those on two or three int8 levels, and the
first conv alone then costs ~20 pp of sequence accuracy (issue 23).

The fix changes nothing in float. In ``conv -> BatchNorm -> ReLU -> [MaxPool] -> conv``, ReLU and
max-pooling commute with a positive per-channel scale, so multiplying output channel ``k`` of the
first conv by ``s_k`` (BatchNorm's gamma and beta, which the converter folds into the conv) and
dividing the next conv's input-channel-``k`` weights by ``s_k`` gives the same function (the next
conv's zero padding stays zero).

What ``s_k`` should be: two int8 grids share the channel. Its activations use ``a_k / A`` of the
tensor's one scale (``a_k``: its largest value on the calibration images, ``A`` the largest of
all), and its weights in the next conv use at most ``w_k`` of each output channel's per-channel
weight scale. Scaling the channel moves precision from one to the other (``a_k s_k``,
``w_k / s_k``), so the balanced choice gives both the same share, ``s_k = sqrt(w_k / a_k)``
("Data-Free Quantization", Nagel et al. 2019, section 4.1, with measured activation ranges and
per-channel weights; iterated, because the shares are relative to the largest channel). A
channel that is wide because of an earlier rescaling, with its next-conv weights shrunk to match,
is put back, and the result does not depend on such rescalings.

Imports TensorFlow only through the model it is given (runs in the conversion worker).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

#: Shares (activation or weight) below this are treated as this (dead channels would otherwise
#: get huge scales); the total scale of a channel stays within [MIN_SHARE, 1 / MIN_SHARE].
MIN_SHARE = 1e-3
#: Rounds of balancing (each share is relative to the largest, which the previous round moved).
ROUNDS = 8


def pairs(model: Any) -> List[Tuple[Any, Any, Any]]:
    """``(bn, relu, next_conv)`` for every ``Conv2D -> BatchNormalization -> ReLU -> [MaxPooling2D]
    -> Conv2D`` chain of ``model`` (layers in graph order, as ``build_inference_model`` makes
    them), the chains equalization may rescale."""
    layers = list(model.layers)
    kinds = [layer.__class__.__name__ for layer in layers]
    out = []
    for i in range(len(layers) - 3):
        if kinds[i:i + 3] != ["Conv2D", "BatchNormalization", "ReLU"]:
            continue
        j = i + 3
        if j < len(layers) and kinds[j] == "MaxPooling2D":
            j += 1
        if j < len(layers) and kinds[j] == "Conv2D" and getattr(layers[i + 2], "max_value",
                                                                None) is None:
            out.append((layers[i + 1], layers[i + 2], layers[j]))
    return out


def channel_ranges(model: Any, layer: Any, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Per-channel maximum of ``layer``'s output over uint8 ``images`` (N, H, W[, C])."""
    from .convert import with_channels

    keras_mod = _keras_of(model)
    probe = keras_mod.Model(model.inputs, layer.output)
    x = with_channels(images).astype(np.float32)
    top: Optional[np.ndarray] = None
    for s in range(0, len(x), batch):
        a = np.asarray(probe(x[s:s + batch], training=False))
        m = a.reshape(-1, a.shape[-1]).max(axis=0)
        top = m if top is None else np.maximum(top, m)
    assert top is not None
    return top


def _keras_of(model: Any) -> Any:
    """The Keras module (``keras`` or ``tf_keras``) ``model`` was built with."""
    import importlib

    root = model.__class__.__module__.split(".")[0]
    return importlib.import_module("tf_keras" if root == "tf_keras" else "keras")


def weight_shares(kernel: np.ndarray) -> np.ndarray:
    """``w_k``: the largest share of an output channel's weight range that input channel ``k``
    of a ``(kh, kw, in, out)`` conv kernel uses (per-channel int8 weights: one scale per
    output channel)."""
    k = np.abs(np.asarray(kernel, np.float64)).max(axis=(0, 1))  # (in, out)
    top = k.max(axis=0, keepdims=True)
    share = np.divide(k, top, out=np.zeros_like(k), where=top > 0)
    return np.asarray(share.max(axis=1))


def scales(ranges: np.ndarray, kernel: np.ndarray, rounds: int = ROUNDS) -> np.ndarray:
    """Balanced ``s_k``: the activation share ``a_k s_k / max(a s)`` and the next conv's weight
    share of channel ``k`` (:func:`weight_shares` of ``kernel / s``) made equal; all ones when
    every channel is dead."""
    r = np.asarray(ranges, np.float64)
    w = np.asarray(kernel, np.float64)
    s = np.ones_like(r)
    if not r.size or float(r.max()) <= 0:
        return s
    for _ in range(rounds):
        act = r * s
        a = np.maximum(act / act.max(), MIN_SHARE)
        ws = np.maximum(weight_shares(w / s[None, None, :, None]), MIN_SHARE)
        s = np.clip(s * np.sqrt(ws / a), MIN_SHARE, 1.0 / MIN_SHARE)
    # Only the ratios matter: keep the widest channel's range where it was.
    top = int(np.argmax(r))
    return np.asarray(s / s[top], np.float64)


def rescale(bn: Any, nxt: Any, s: np.ndarray) -> None:
    """Multiply channel ``k`` of ``bn``'s output by ``s[k]`` (gamma and beta) and divide
    ``nxt``'s input-channel-``k`` weights by it: the same float function when a ReLU (and
    max-pooling) sits between them and ``s > 0``. Also how the tests and the collapse benchmark
    make a first conv uneven on purpose."""
    weights = bn.get_weights()  # gamma, beta, moving mean, moving variance
    if len(weights) != 4:
        raise ValueError(f"{bn.name}: expected gamma, beta, mean, variance; got "
                         f"{len(weights)} weights (scale/center off?)")
    s = np.asarray(s, np.float64)
    if s.shape != weights[0].shape or not np.all(s > 0):
        raise ValueError(f"{bn.name}: scales must be {weights[0].shape[0]} positive numbers")
    gamma, beta, mean, var = weights
    bn.set_weights([(gamma * s).astype(gamma.dtype), (beta * s).astype(beta.dtype), mean, var])
    w = nxt.get_weights()
    w[0] = (w[0] / s[None, None, :, None]).astype(w[0].dtype)
    nxt.set_weights(w)


def equalize(model: Any, images: np.ndarray, *,
             blocks: Optional[Sequence[int]] = (0,)) -> List[Dict[str, Any]]:
    """Rescale ``model``'s conv chains in place (same float function); return what was done.

    Args:
        model: from :func:`captcha_edge.export.convert.rebuild`.
        images: uint8 calibration images the ranges are measured on.
        blocks: which chains of :func:`pairs` to equalize, by position (0 = the first conv's);
            None for all. Each chain is measured after the ones before it are rescaled.

    Returns:
        Per chain: the layer names, the channel ranges before and after (min, median, max),
        and the largest and smallest scales applied.
    """
    done = []
    for k, (bn, relu, nxt) in enumerate(pairs(model)):
        if blocks is not None and k not in blocks:
            continue
        r = channel_ranges(model, relu, images)
        s = scales(r, nxt.get_weights()[0])
        rescale(bn, nxt, s)
        after = r * s
        done.append({"bn": bn.name, "relu": relu.name, "next": nxt.name,
                     "range_before": [float(r.min()), float(np.median(r)), float(r.max())],
                     "range_after": [float(after.min()), float(np.median(after)),
                                     float(after.max())],
                     "max_scale": float(s.max()), "min_scale": float(s.min())})
    return done
