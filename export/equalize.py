"""Activation range equalization before int8 conversion (the ``equalize`` routes).

The int8 converter gives every activation tensor one scale (per tensor), while the first
convolution's output channels can have very different ranges: on a hard style, one channel of
``relu1`` reaching 11 and most staying below 1 leaves those on two or three int8 levels, and the
first conv alone then costs ~20 pp of sequence accuracy (issue 23).

The fix changes nothing in float. In ``conv -> BatchNorm -> ReLU -> [MaxPool] -> conv``, ReLU and
max-pooling commute with a positive per-channel scale, so multiplying output channel ``k`` of the
first conv by ``s_k`` (BatchNorm's gamma and beta, which the converter folds into the conv) and
dividing the next conv's input-channel-``k`` weights by ``s_k`` gives the same function (the next
conv's zero padding stays zero). Choosing ``s_k = (R / r_k) ** alpha`` (``r_k``: channel ``k``'s
range on the calibration images, ``R`` the largest) evens the ranges out, so the one per-tensor
scale fits every channel ("Data-Free Quantization", Nagel et al. 2019, section 4.1, with the
activation ranges measured rather than predicted from BatchNorm). ``alpha`` below 1 leaves part
of the imbalance in the activations, so that the next conv's per-channel int8 weights, which the
scaling shrinks for the narrow channels, keep their precision too.

Imports TensorFlow only through the model it is given (runs in the conversion worker).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

#: Default strength of the equalization (1 = every channel to the widest one's range).
ALPHA = 0.5
#: Channels whose range is below this share of the widest are treated as this share
#: (dead channels would otherwise get huge scales and push the next conv's weights to zero).
MIN_SHARE = 1e-3


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


def scales(ranges: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """``s_k = (R / r_k) ** alpha``, ``r_k`` floored at ``MIN_SHARE * R``; all ones when every
    channel is dead."""
    r = np.asarray(ranges, np.float64)
    top = float(r.max()) if r.size else 0.0
    if top <= 0:
        return np.ones_like(r)
    r = np.maximum(r, MIN_SHARE * top)
    return np.asarray((top / r) ** alpha, np.float64)


def equalize(model: Any, images: np.ndarray, *, alpha: float = ALPHA,
             blocks: Optional[Sequence[int]] = (0,)) -> List[Dict[str, Any]]:
    """Rescale ``model``'s conv chains in place (same float function); return what was done.

    Args:
        model: from :func:`captcha_edge.export.convert.rebuild`.
        images: uint8 calibration images the ranges are measured on.
        alpha: strength (:func:`scales`).
        blocks: which chains of :func:`pairs` to equalize, by position (0 = the first conv's);
            None for all. Each chain is measured after the ones before it are rescaled.

    Returns:
        Per chain: the layer names, the channel ranges before and after (min, median, max),
        and the largest scale applied.
    """
    done = []
    for k, (bn, relu, nxt) in enumerate(pairs(model)):
        if blocks is not None and k not in blocks:
            continue
        r = channel_ranges(model, relu, images)
        s = scales(r, alpha)
        weights = bn.get_weights()  # gamma, beta, moving mean, moving variance
        if len(weights) != 4:
            raise ValueError(f"{bn.name}: expected gamma, beta, mean, variance; got "
                             f"{len(weights)} weights (scale/center off?)")
        gamma, beta, mean, var = weights
        bn.set_weights([(gamma * s).astype(gamma.dtype), (beta * s).astype(beta.dtype),
                        mean, var])
        w = nxt.get_weights()
        w[0] = (w[0] / s[None, None, :, None]).astype(w[0].dtype)
        nxt.set_weights(w)
        after = r * s
        done.append({"bn": bn.name, "relu": relu.name, "next": nxt.name, "alpha": alpha,
                     "range_before": [float(r.min()), float(np.median(r)), float(r.max())],
                     "range_after": [float(after.min()), float(np.median(after)),
                                     float(after.max())],
                     "max_scale": float(s.max())})
    return done
