"""Conv int8 weights chosen, not rounded (the ``first-conv-rounding`` and ``conv-rounding``
routes: the first conv, or every conv that BatchNorm follows).

The converter folds BatchNorm into the first convolution and rounds each folded weight to the
nearest step of its output channel's int8 scale (per-channel, symmetric, ``max |w| / 127``). On
a grey, low-contrast input that is costly in a way no calibration set changes: a 3x3 kernel
over a nearly flat background sums nine rounding errors times about the same pixel value, so
every output of the channel moves by about the same amount, while the signal the channel
carries (a faint stroke against that background) is small. The diagnosis then names the first
convolution (issue 23).

This transform does what the converter would, with two changes ("bias correction" and a
rounding search, as in Nagel et al. 2019, "Data-Free Quantization", section 5, and AdaRound,
Nagel et al. 2020, for one layer):

- each weight goes to the floor or the ceiling of its grid position, whichever makes the
  output error smaller over the calibration images' 3x3 patches (coordinate descent on the
  error's variance, ``d' S d`` with ``S`` the patches' covariance); the weight that sets the
  channel's scale keeps it;
- the mean error that remains (``m' d``, ``m`` the patches' mean) goes into the bias.

The model is then written with those on-grid weights and BatchNorm folded by hand (the layer
left as an identity that carries the corrected bias), so the converter's own rounding finds
every weight already on its grid and keeps it. The float function changes by the int8
rounding only: what the integer model computes, the float model now computes too.

Imports TensorFlow only through the model it is given (runs in the conversion worker).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

#: int8 weights are symmetric in [-127, 127] (TFLite's per-channel weight quantization).
QMAX = 127
#: Sweeps of the coordinate descent over a channel's weights (it stops earlier when none moves).
SWEEPS = 20


def chains(model: Any) -> List[Tuple[Any, Any]]:
    """``(conv, bn)`` for every Conv2D of ``model`` that a BatchNormalization follows, in graph
    order (the first is the first convolution).

    Raises:
        ValueError: no such pair, or a conv of one has its own bias.
    """
    layers = list(model.layers)
    out = []
    for conv, bn in zip(layers, layers[1:]):
        if conv.__class__.__name__ != "Conv2D" or bn.__class__.__name__ != "BatchNormalization":
            continue
        if getattr(conv, "use_bias", False):
            raise ValueError(f"{conv.name}: a conv before BatchNorm has its own bias")
        out.append((conv, bn))
    if not out:
        raise ValueError("the model has no Conv2D -> BatchNormalization pair")
    return out


def same_padding(n: int, k: int, s: int) -> Tuple[int, int]:
    """TensorFlow's "same" padding (before, after) of one axis of length ``n``."""
    total = max(k - s, 0) if n % s == 0 else max(k - n % s, 0)
    return total // 2, total - total // 2


def patch_moments(x: np.ndarray, k: int, stride: int, batch: int = 8
                  ) -> Tuple[np.ndarray, np.ndarray, int]:
    """Mean and second-moment matrix of the ``k x k`` patches a stride-``stride`` "same" conv
    sees on ``x`` (N, H, W, C), flattened in the kernel's (kh, kw, C) order; and their count."""
    n, h, w, c = x.shape
    ph, pw = same_padding(h, k, stride), same_padding(w, k, stride)
    d = k * k * c
    total = np.zeros(d, np.float64)
    second = np.zeros((d, d), np.float64)
    count = 0
    for s in range(0, n, batch):
        xb = np.pad(x[s:s + batch].astype(np.float64), ((0, 0), ph, pw, (0, 0)))
        win = np.lib.stride_tricks.sliding_window_view(xb, (k, k), axis=(1, 2))
        win = win[:, ::stride, ::stride]  # (b, oh, ow, C, kh, kw)
        p = win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, d)
        total += p.sum(axis=0)
        second += p.T @ p
        count += len(p)
    return total / count, second / count, count


def search(w: np.ndarray, scale: float, cov: np.ndarray, sweeps: int = SWEEPS) -> np.ndarray:
    """Integer weights for one output channel: each at the floor or ceiling of ``w / scale``,
    chosen by coordinate descent to minimise the error's variance ``d' cov d`` (``d = w -
    scale q``); the largest weight (the one that sets ``scale``) stays where it rounds."""
    if scale <= 0:
        return np.zeros_like(w)
    pos = w / scale
    q = np.clip(np.rint(pos), -QMAX, QMAX)
    lo, hi = np.clip(np.floor(pos), -QMAX, QMAX), np.clip(np.ceil(pos), -QMAX, QMAX)
    keep = int(np.argmax(np.abs(w)))
    d = w - scale * q
    g = cov @ d  # gradient / 2 of d' cov d
    for _ in range(sweeps):
        moved = False
        for i in range(len(w)):
            if i == keep or lo[i] == hi[i]:
                continue
            new = hi[i] if q[i] == lo[i] else lo[i]
            step = -scale * (new - q[i])  # change of d[i]
            delta = 2 * step * g[i] + step * step * cov[i, i]
            if delta < -1e-18:
                q[i] = new
                d[i] += step
                g += cov[:, i] * step
                moved = True
        if not moved:
            break
    return q


def fold(conv: Any, bn: Any) -> Tuple[np.ndarray, np.ndarray]:
    """``conv``'s kernel and bias with ``bn`` (inference) folded in."""
    kernel = np.asarray(conv.get_weights()[0], np.float64)
    gamma, beta, mean, var = (np.asarray(v, np.float64) for v in bn.get_weights())
    mult = gamma / np.sqrt(var + float(bn.epsilon))
    return kernel * mult, beta - mean * mult


def round_convs(model: Any, images: np.ndarray, *, first_only: bool = True
                ) -> List[Dict[str, Any]]:
    """Rewrite the first conv (or, with ``first_only=False``, every conv that BatchNorm follows,
    in graph order, each on the inputs the convs before it now give) in place with searched
    int8-grid weights and a bias-corrected BatchNorm (module docstring); return what was done
    per conv (JSON).

    Args:
        model: from :func:`captcha_edge.export.convert.rebuild`.
        images: uint8 calibration images (N, H, W[, C]).
    """
    from .convert import with_channels
    from .equalize import _keras_of

    keras_mod = _keras_of(model)
    x = with_channels(images).astype(np.float32)
    done = []
    pairs = chains(model)
    for conv, bn in pairs[:1] if first_only else pairs:
        if len(bn.get_weights()) != 4:
            raise ValueError(f"{bn.name}: expected gamma, beta, mean, variance")
        probe = keras_mod.Model(model.inputs, conv.input)
        feats = np.concatenate([np.asarray(probe(x[s:s + 32], training=False))
                                for s in range(0, len(x), 32)])
        done.append(_round(conv, bn, feats))
    return done


def round_first_conv(model: Any, images: np.ndarray) -> Dict[str, Any]:
    """:func:`round_convs` of the first conv alone; what was done (JSON)."""
    return round_convs(model, images, first_only=True)[0]


def _round(conv: Any, bn: Any, feats: np.ndarray) -> Dict[str, Any]:
    """One conv's searched weights and corrected bias, from its float inputs ``feats``."""
    k, stride = int(conv.kernel_size[0]), int(conv.strides[0])
    mu, second, count = patch_moments(feats, k, stride)
    cov = second - np.outer(mu, mu)
    kernel, bias = fold(conv, bn)
    shape = kernel.shape  # (kh, kw, in, out)
    flat = kernel.reshape(-1, shape[-1])
    new_kernel = np.empty_like(flat)
    new_bias = bias.copy()
    rows: List[Dict[str, float]] = []
    for c in range(flat.shape[1]):
        w = flat[:, c]
        scale = float(np.abs(w).max()) / QMAX
        nearest = np.clip(np.rint(w / scale), -QMAX, QMAX) if scale > 0 else np.zeros_like(w)
        q = search(w, scale, cov)
        d0, d1 = w - scale * nearest, w - scale * q
        signal = float(np.sqrt(max(w @ cov @ w, 0.0)))
        new_kernel[:, c] = scale * q
        new_bias[c] += float(mu @ d1)  # the mean error, moved into the bias
        rows.append({"signal_std": signal,
                     "nearest_rms": float(np.sqrt(max(d0 @ second @ d0, 0.0))),
                     "nearest_mean": float(mu @ d0),
                     "searched_rms": float(np.sqrt(max(d1 @ cov @ d1, 0.0)))})
    conv.set_weights([new_kernel.reshape(shape).astype(np.float32)])
    eps = np.float32(bn.epsilon)
    n = shape[-1]
    # BatchNorm left as an identity that adds the bias: gamma 1, mean 0, var + eps == 1.
    bn.set_weights([np.ones(n, np.float32), new_bias.astype(np.float32),
                    np.zeros(n, np.float32), np.full(n, np.float32(1.0) - eps, np.float32)])
    rel0 = [r["nearest_rms"] / r["signal_std"] for r in rows if r["signal_std"] > 0]
    rel1 = [r["searched_rms"] / r["signal_std"] for r in rows if r["signal_std"] > 0]
    return {"conv": conv.name, "bn": bn.name, "patches": count,
            "error_of_signal_nearest": _summary(rel0), "error_of_signal_searched": _summary(rel1),
            "channels": rows}


def _summary(v: List[float]) -> Optional[List[float]]:
    """(min, median, max) or None."""
    if not v:
        return None
    return [float(np.min(v)), float(np.median(v)), float(np.max(v))]
