"""On-the-fly augmentation for training batches only (TensorFlow ops, run inside tf.data).

It works on the raw 0..255 pixels (grey or RGB, any channel count) that :func:`captcha_edge.preprocess.to_array` produced,
after preprocessing, so validation and the runtime see untouched preprocessed pixels.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict

from .data import TrainDataError


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random changes (each drawn uniformly in ``[-x, x]`` unless noted)."""

    rotate: float = 3.0  # degrees
    shear: float = 0.15  # horizontal shear factor
    scale: float = 0.08  # relative zoom, 1 +- scale
    shift_x: float = 0.03  # fraction of the width
    shift_y: float = 0.08  # fraction of the height
    contrast: float = 0.3  # contrast factor 1 +- contrast, plus a brightness shift of 40*contrast
    noise: float = 8.0  # max std of Gaussian pixel noise (grey levels); std drawn in [0, noise]
    blur: float = 0.25  # probability of a 3x3 Gaussian blur

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def parse_augment(text: str) -> AugmentConfig:
    """Parse ``--augment "rotate=5,noise=0"`` into an :class:`AugmentConfig`."""
    names = {f.name for f in fields(AugmentConfig)}
    values: Dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, val = part.partition("=")
        key = key.strip()
        if not sep or key not in names:
            raise TrainDataError(f"--augment: expected KEY=VALUE with KEY in {sorted(names)}; "
                                 f"got {part!r}")
        try:
            num = float(val)
        except ValueError:
            raise TrainDataError(f"--augment: {key} must be a number; got {val!r}") from None
        if not math.isfinite(num) or num < 0:
            raise TrainDataError(f"--augment: {key} must be >= 0; got {val!r}")
        if key == "blur" and num > 1:
            raise TrainDataError(f"--augment: blur is a probability in [0, 1]; got {val!r}")
        values[key] = num
    return AugmentConfig(**values)


def augment_batch(images: Any, cfg: AugmentConfig) -> Any:
    """Randomly distort a float32 batch ``(N, H, W, C)`` of 0..255 pixels; same shape back."""
    import tensorflow as tf

    shape = tf.shape(images)
    n, h, w = shape[0], shape[1], shape[2]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)

    def u(lim: float) -> Any:
        return tf.random.uniform([n], -lim, lim)

    # Output->input affine map about the image centre (rotation, shear, zoom, shift).
    theta = u(cfg.rotate * math.pi / 180.0)
    zoom = 1.0 + u(cfg.scale)
    cos, sin = tf.cos(theta) / zoom, tf.sin(theta) / zoom
    a0, a1 = cos, -sin + u(cfg.shear)
    b0, b1 = sin, cos
    cx, cy = (wf - 1) / 2, (hf - 1) / 2
    a2 = cx - a0 * cx - a1 * cy + u(cfg.shift_x) * wf
    b2 = cy - b0 * cx - b1 * cy + u(cfg.shift_y) * hf
    zeros = tf.zeros([n])
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.stack([h, w]),
        fill_value=255.0, interpolation="BILINEAR", fill_mode="NEAREST")

    if cfg.blur > 0:
        k = tf.constant([1.0, 2.0, 1.0])
        k2 = tf.tensordot(k, k, axes=0) / 16.0
        ch = int(images.shape[-1])  # static: 1 (grey) or 3 (RGB)
        kernel = tf.tile(tf.reshape(k2, [3, 3, 1, 1]), [1, 1, ch, 1])
        blurred = tf.nn.depthwise_conv2d(x, kernel, strides=[1, 1, 1, 1], padding="SAME")
        pick = tf.random.uniform([n, 1, 1, 1]) < cfg.blur
        x = tf.where(pick, blurred, x)
    if cfg.contrast > 0:
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        c = tf.reshape(1.0 + u(cfg.contrast), [n, 1, 1, 1])
        b = tf.reshape(u(40.0 * cfg.contrast), [n, 1, 1, 1])
        x = (x - mean) * c + mean + b
    if cfg.noise > 0:
        std = tf.random.uniform([n, 1, 1, 1], 0.0, cfg.noise)
        x = x + tf.random.normal(tf.shape(x)) * std
    return tf.clip_by_value(x, 0.0, 255.0)
