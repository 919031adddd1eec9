"""Clip the logits to the range that decides the argmax, so int8 keeps their resolution.

Why: an int8 tensor has 256 steps over its calibrated range. The logits (the last Dense, or the
sum of the two Dense layers of the skip head) span what the most confident frames reach: -51 to
118 nats on the panel's under-trained scratch-grey model (issue 22), 0.66 nats a step. Two
classes closer than that get the same int8 logit, the int8 softmax gives them the same
probability, and the argmax falls on the lower class index: 83 % of that model's frames that
disagreed with Keras were such ties, with a median float margin of 0.08 (0.50 against 0.37 in
probability, say).

What: the softmax's argmax only depends on the logits between the lowest top logit and the
highest runner-up of a frame. Clipping every logit to [lo, hi] = [min top - m, max runner-up + m]
over the calibration frames (m = 8 nats) keeps every calibration frame's argmax (its top stays
above every other class) and moves only what the int8 softmax cannot show anyway: a class
raised to ``lo`` stays below e^-8 of its frame's top, and a top lowered to ``hi`` stays e^8 above
the runner-up (the int8 output's step is 1/256, about e^-5.5). The clip is fused into the Dense (ReLU6 after a rescale to
0..6), so the int8 tensor itself covers only [lo, hi]; a diagonal Dense back to nats and the
softmax follow. The skip head's two Dense layers become one Dense over the concatenation of
their inputs (the same function). Not for the BiLSTM head with the skip: the int8 concatenation
of the fused LSTM's output with its own input corrupts the TFLite interpreter's heap
(train/model.py), so that graph is left as it is.

Measured on that model (1590 validation images, plain int8 route): frame agreement 98.82 % ->
99.56 %, sequence accuracy 29.9 % -> 31.1 % (Keras: 31.3 %); the panel's figures are in
docs/export.md.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

#: Nats kept beyond the calibration frames' lowest top logit and highest runner-up: what the
#: clip changes stays below e^-8 (3e-4) of a frame's top, under the int8 softmax's 1/256 step.
MARGIN = 8.0
#: ReLU6: the activation TFLite fuses into FULLY_CONNECTED, so the clip costs no op.
_RELU_TOP = 6.0


def _layers_of(model: Any) -> Any:
    if type(model).__module__.startswith("tf_keras"):
        import tf_keras

        return tf_keras
    import keras

    return keras


def _logit_layers(model: Any) -> Tuple[Any, Optional[Any], Optional[str]]:
    """(logits Dense, skip Dense or None, why not) of a model built by build_inference_model."""
    names = {layer.name for layer in model.layers}
    if "logits" not in names or "probs" not in names:
        return None, None, "no 'logits' and 'probs' layers"
    skip = model.get_layer("logits_skip") if "logits_skip" in names else None
    if skip is not None and "bilstm" in names:
        return None, None, ("BiLSTM head with the skip: its int8 concatenation corrupts the "
                            "interpreter's heap")
    return model.get_layer("logits"), skip, None


def logit_range(model: Any, images: np.ndarray, batch: int,
                margin: float = MARGIN) -> Tuple[float, float, float, float]:
    """(lo, hi, raw min, raw max) of the logits on ``images`` (uint8 (N, H, W[, C]))."""
    from .convert import with_channels

    keras = _layers_of(model)
    out = model.get_layer("logits_sum" if "logits_sum" in {layer.name for layer in
                                                           model.layers} else "logits").output
    sub = keras.Model(model.inputs, out)
    n = (len(images) // batch) * batch
    if n == 0:
        raise ValueError(f"the logit clip needs at least {batch} calibration images")
    z = np.asarray(sub.predict(with_channels(images[:n]).astype(np.float32), batch_size=batch,
                               verbose=0), dtype=np.float64)
    srt = np.sort(z, axis=-1)
    top, runner_up = float(srt[..., -1].min()), float(srt[..., -2].max())
    # Every top >= ``top`` and every other class <= ``runner_up``; when the tops all lie above
    # every runner-up the two swap roles, and the clip still keeps each top 2 m above the rest.
    lo, hi = min(top, runner_up) - margin, max(top, runner_up) + margin
    return lo, hi, float(z.min()), float(z.max())


def clip_logits(model: Any, calibration: Optional[np.ndarray], batch: int,
                margin: float = MARGIN) -> Tuple[Any, Dict[str, Any]]:
    """``model`` with its logits clipped for int8 (a new model sharing the other layers), and
    what was done (JSON: ``applied``, ``lo``/``hi``, the raw range, or ``why`` not).

    The model is returned unchanged when the clip does not apply or would not narrow the range.
    """
    dense, skip, why = _logit_layers(model)
    if why is not None:
        return model, {"applied": False, "why": why}
    if calibration is None or len(calibration) < batch:
        return model, {"applied": False, "why": "no calibration images"}
    lo, hi, zmin, zmax = logit_range(model, calibration, batch, margin)
    info: Dict[str, Any] = {"lo": round(lo, 3), "hi": round(hi, 3),
                            "raw": [round(zmin, 3), round(zmax, 3)], "margin": margin}
    if hi - lo >= 0.9 * (zmax - zmin):
        return model, {"applied": False, "why": "the clip would not narrow the logits", **info}
    keras = _layers_of(model)
    L = keras.layers
    w, b = dense.get_weights()
    x = dense.input
    if skip is not None:
        (ws,) = skip.get_weights()
        x = L.Concatenate(name="logits_in")([dense.input, skip.input])
        w = np.concatenate([w, ws], axis=0)
    k = _RELU_TOP / (hi - lo)
    n = w.shape[1]
    clipped = L.Dense(n, activation="relu6", name="logits_clip")(x)
    # Back to nats with a diagonal Dense, not a MUL: TFLite's quantizer gives a MUL by a
    # constant the scale of its output on its input too, so the FC's 0..6 would get the step of
    # 0..(hi - lo) (measured: 36 levels, and more ties than without the clip). The diagonal FC
    # has an output scale of its own; its int8 weights are exact (one value a channel).
    y = L.Dense(n, use_bias=False, name="logits_unscale")(clipped)
    probs = L.Activation("softmax", name="probs")(y)
    out = keras.Model(model.inputs, probs, name=model.name)
    out.get_layer("logits_clip").set_weights([(w * k).astype(np.float32),
                                              ((b - lo) * k).astype(np.float32)])
    out.get_layer("logits_unscale").set_weights([(np.eye(n) / k).astype(np.float32)])
    info.update(applied=True, step=round((hi - lo) / 255.0, 4),
                raw_step=round((zmax - zmin) / 255.0, 4))
    return out, info
