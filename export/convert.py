"""Keras model -> TFLite bytes, one function per step (imports TensorFlow; runs in the worker).

The trained ``model.keras`` is never converted as saved. Its weights are copied into the same
graph rebuilt by :func:`captcha_edge.train.model.build_inference_model` with a static batch and a
Keras flavour that TFLite converts well; see ``ROUTES`` and docs/export.md for why.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: How the inference graph is rebuilt before conversion.
#: ``tf_keras``: Keras 2 (tf-keras) keeps the fused UNIDIRECTIONAL_SEQUENCE_LSTM kernel, which
#: full-int8 calibration handles with a static batch (small, few ops). ``unroll``: Keras 3 with
#: ``LSTM(unroll=True)``, hundreds of plain ops; the fallback when tf-keras is missing.
ROUTES = ("tf_keras", "unroll")


def load_keras(path: Path, flavour: str = "keras3") -> Any:
    """Load a trained ``model.keras`` without its optimizer state."""
    if flavour == "tf_keras":
        import tf_keras

        return tf_keras.models.load_model(str(path), compile=False)
    import keras

    return keras.models.load_model(str(path), compile=False)


def rebuild(src: Any, model_config: Dict[str, Any], *, route: str, batch: int) -> Any:
    """The inference graph rebuilt for ``route`` with a static ``batch``; ``src``'s weights copied.

    Raises:
        ValueError: unknown route, or the weights do not fit the graph ``model_config`` describes.
    """
    from ..train.model import ModelConfig, build_inference_model

    cfg = ModelConfig.from_dict(model_config)
    if route == "tf_keras":
        try:
            import tf_keras
        except ImportError:
            raise ImportError('the tf_keras route needs tf-keras: pip install '
                              '"captcha-edge[train]"') from None
        model = build_inference_model(cfg, keras=tf_keras, batch_size=batch)
    elif route == "unroll":
        import keras

        model = build_inference_model(cfg, keras=keras, unroll=True, batch_size=batch)
    else:
        raise ValueError(f"unknown route {route!r}; valid routes: {', '.join(ROUTES)}")
    weights = src.get_weights()
    mine = model.get_weights()
    if len(weights) != len(mine) or any(a.shape != b.shape for a, b in zip(weights, mine)):
        raise ValueError("model.keras does not match the graph that model.json's model_config "
                         "describes (weight shapes differ); was it trained by another version?")
    model.set_weights(weights)
    return model


#: What may be done to a rebuilt model's weights before conversion (the float function kept,
#: except by "fine-tune", which trains on).
TRANSFORMS = ("none", "equalize", "round-first-conv", "round-convs", "fine-tune")


def transform(model: Any, name: str, calibration: Optional[np.ndarray],
              fine_tune: Optional[Dict[str, Any]] = None) -> Any:
    """Apply the weight transform ``name`` to ``model`` in place; return what it did (JSON).

    ``equalize``: :func:`captcha_edge.export.equalize.equalize` on the first conv's chain, its
    channel ranges measured on ``calibration``. ``round-first-conv``:
    :func:`captcha_edge.export.rounding.round_first_conv` (searched int8 weights and bias
    correction for the first conv, on ``calibration``'s patches); ``round-convs``: the same
    for every conv that BatchNorm follows. ``fine-tune``:
    :func:`captcha_edge.export.finetune.fine_tune` on the training images ``fine_tune`` names
    (``{"images": .npy, "labels": [[class, ...], ...], "blank", "model_config", "route",
    "check": {"images": .npy, "texts": [...], "charset"}}``).

    Raises:
        ValueError: unknown transform, or no calibration images (no training images for
            fine-tune) for one that needs them.
    """
    if name == "none":
        return None
    if name == "equalize":
        from . import equalize

        if calibration is None or not len(calibration):
            raise ValueError("the equalize transform needs calibration images")
        done = equalize.equalize(model, calibration)
        if not done:
            raise ValueError("the equalize transform found no conv -> BatchNorm -> ReLU -> conv "
                             "chain to rescale")
        return done
    if name in ("round-first-conv", "round-convs"):
        from . import rounding

        if calibration is None or not len(calibration):
            raise ValueError(f"the {name} transform needs calibration images")
        return rounding.round_convs(model, calibration, first_only=name == "round-first-conv")
    if name == "fine-tune":
        from . import finetune

        if not fine_tune:
            raise ValueError("the fine-tune transform needs the run's training images")
        trainer = rebuild(model, fine_tune["model_config"], route=fine_tune["route"],
                          batch=finetune.BATCH)
        check = fine_tune.get("check")
        return finetune.fine_tune(
            model, trainer, np.load(fine_tune["images"]), fine_tune["labels"],
            int(fine_tune["blank"]), seed=int(fine_tune.get("seed", 0)),
            check=(np.load(check["images"]), check["texts"], check["charset"]) if check else None,
            out=check.get("probs_out") if check else None)
    raise ValueError(f"unknown transform {name!r}; valid: {', '.join(TRANSFORMS)}")


def with_channels(images: np.ndarray) -> np.ndarray:
    """Grey (N, H, W) -> (N, H, W, 1); RGB (N, H, W, 3) passes unchanged."""
    return images if images.ndim == 4 else images[..., None]


def representative(images: np.ndarray, batch: int) -> Callable[[], Iterator[List[np.ndarray]]]:
    """A representative_dataset over uint8 (N, H, W) images, fed as float32 raw 0..255 batches.

    Two more batches, all black and all white, make the calibrated input range exactly 0..255:
    the uint8 input then has scale 1 and zero point 0, so a device feeds the raw grey levels
    (calibration images that never reach 0 or 255 would otherwise give a scale like 254/255).
    """
    def gen() -> Iterator[List[np.ndarray]]:
        for i in range(0, len(images) - batch + 1, batch):
            yield [with_channels(images[i:i + batch]).astype(np.float32)]
        shape = (batch, *with_channels(images[:1]).shape[1:])
        yield [np.zeros(shape, np.float32)]
        yield [np.full(shape, 255.0, np.float32)]
    return gen


def quantized_converter(model: Any, fmt: str, *, calibration: Optional[np.ndarray],
                        batch: int = 1, int8_output: str = "int8") -> Any:
    """A ``TFLiteConverter`` set up for a calibrated integer format (``int8`` or ``int16x8``).

    ``int8``: every op int8 (``TFLITE_BUILTINS_INT8``), uint8 raw-pixel input, int8 or float32
    output. ``int16x8``: TFLite's 16x8 mode (int16 activations, int8 weights, int64 bias); the
    converter only allows int16 or float32 at the model's edges, so the input is int16 (the
    runtime quantizes its uint8 pixels with the input scale) and the output int16 or float32.
    The converter refuses 16x8 for the fused UNIDIRECTIONAL_SEQUENCE_LSTM ("not yet
    supported", TF 2.21), so ``int16x8`` only converts on the ``unroll`` route.

    Raises:
        ValueError: not a calibrated format, or fewer calibration images than one batch.
    """
    import tensorflow as tf

    if fmt not in ("int8", "int16x8"):
        raise ValueError(f"fmt must be int8 or int16x8 for a calibrated converter; got {fmt!r}")
    if calibration is None or len(calibration) < batch:
        raise ValueError(f"{fmt} needs calibration images")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative(calibration, batch)
    if fmt == "int8":
        # Only int8 kernels: conversion fails instead of silently leaving a float op behind.
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.int8 if int8_output == "int8" else tf.float32
    else:
        # Only 16x8 kernels, for the same reason (no TFLITE_BUILTINS fallback to float).
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        conv.inference_input_type = tf.int16
        conv.inference_output_type = tf.int16 if int8_output == "int8" else tf.float32
    return conv


def to_tflite(model: Any, fmt: str, *, calibration: Optional[np.ndarray] = None,
              batch: int = 1, int8_output: str = "int8") -> bytes:
    """Convert a rebuilt model to the TFLite flatbuffer of format ``fmt``.

    The route only decides how :func:`rebuild` builds the graph; both flavours then convert the
    same way (``from_keras_model``: TF 2.21 accepts Keras 3 models there, and for them the
    concrete-function route left READ_VARIABLE ops that the calibrator cannot run).

    Args:
        model: from :func:`rebuild`.
        fmt: a key of :data:`captcha_edge.export.formats.FORMATS`.
        calibration: uint8 (N, H, W) images; required for ``int8`` and ``int16x8``.
        batch: the model's static batch size.
        int8_output: ``"int8"`` (quantized softmax, int16 for ``int16x8``; scale/zero point go
            into the metadata) or ``"float32"`` (a DEQUANTIZE op at the end).

    Returns:
        The flatbuffer bytes.
    """
    import tensorflow as tf

    if fmt in ("int8", "int16x8"):
        return bytes(quantized_converter(model, fmt, calibration=calibration, batch=batch,
                                         int8_output=int8_output).convert())
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if fmt == "float32":
        pass
    elif fmt == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif fmt == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return bytes(conv.convert())


def strip_names(flatbuffer: bytes) -> bytes:
    """``flatbuffer`` without its tensor and subgraph names, description and signature defs.

    The runtime finds its tensors by index, so nothing it reads is lost; the names are 3-4 KB,
    about 4 % of the bundled int8 model (TF's ``flatbuffer_utils.strip_strings``; the operator
    codes and the metadata names stay). ``captcha-export --keep-tensor-names`` skips this.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    flatbuffer_utils.strip_strings(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def keras_probs(model: Any, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The Keras model's (N, T, C) float32 probabilities on uint8 (N, H, W) images."""
    out = model.predict(with_channels(images).astype(np.float32), batch_size=batch_size,
                        verbose=0)
    return np.asarray(out, dtype=np.float32)
