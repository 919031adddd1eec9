"""Quantization-aware fine-tuning of the weights (the ``fine-tune`` route, issue 23).

The post-training routes change how the weights are rounded or how the ranges are calibrated;
none changes what the model learned. On a model that is unsure of many frames (an under-trained
run of a hard style), the small errors of every layer add up to a lost 1-2 pp even when no one
layer is to blame. This route trains the model on for a few hundred steps with every weight
that becomes int8 rounded to its int8 grid in the forward pass, and the gradient passed
straight through to a float copy (the straight-through estimator of QAT, as in Jacob et al.
2018, for the weights only):

- Conv2D (and the conv head's Conv1D) kernels: per output channel, symmetric, ``max |w| / 127``
  (as the converter does; a BatchNorm after the conv scales each output channel by a constant,
  which commutes with this rounding, so rounding the raw kernel is rounding the folded one);
- Dense kernels: per tensor (the converter's FULLY_CONNECTED weights);
- LSTM kernels and recurrent kernels: per gate (the fused op keeps one int8 tensor per gate).

BatchNorm keeps its moving statistics (the model runs in inference mode; dropout is off), and
the activations are not rounded: their ranges are calibrated afterwards as in the plain route.
The float model that is then converted is a different model from the trained one (it has seen
more steps), so the route reports that model's own accuracy beside the int8 file's; the CLI
still scores the int8 file against the trained model.

Imports TensorFlow (runs in the conversion worker).
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

#: int8 weights are symmetric in [-127, 127].
QMAX = 127
#: Optimizer steps of the fine-tuning, and its batch size and learning rate (Adam, constant):
#: measured on the issue-23 case (docs/export.md).
STEPS = 300
BATCH = 32
LEARNING_RATE = 1e-4


def _groups(layer: Any) -> List[Tuple[Any, str]]:
    """(variable, how it is rounded) for the weights of ``layer`` that become int8."""
    kind = layer.__class__.__name__
    if kind in ("Conv2D", "Conv1D"):  # Conv1D: the conv head's (k, in, out) kernels
        return [(layer.kernel, "channel")]
    if kind == "Dense":
        return [(layer.kernel, "tensor")]
    if kind == "Bidirectional":
        out: List[Tuple[Any, str]] = []
        for rnn in (layer.forward_layer, layer.backward_layer):
            cell = getattr(rnn, "cell", rnn)
            out += [(cell.kernel, "gate"), (cell.recurrent_kernel, "gate")]
        return out
    if kind == "LSTM":
        cell = getattr(layer, "cell", layer)
        return [(cell.kernel, "gate"), (cell.recurrent_kernel, "gate")]
    return []


def quantize(w: Any, how: str) -> Any:
    """``w`` rounded to its symmetric int8 grid (a tf tensor): per output channel (the last
    axis), per tensor, or per gate (the last axis in 4 equal parts, one scale each)."""
    import tensorflow as tf

    if how == "gate":
        parts = tf.split(w, 4, axis=-1)
        return tf.concat([quantize(p, "tensor") for p in parts], axis=-1)
    axes = list(range(len(w.shape) - 1)) if how == "channel" else None
    top = tf.reduce_max(tf.abs(w), axis=axes, keepdims=how == "channel")
    scale = tf.where(top > 0, top / QMAX, tf.ones_like(top))
    return tf.clip_by_value(tf.round(w / scale), -QMAX, QMAX) * scale


def fine_tune(model: Any, train_model: Any, images: np.ndarray, labels: Sequence[Sequence[int]],
              blank: int, *, steps: int = STEPS, batch: int = BATCH, lr: float = LEARNING_RATE,
              seed: int = 0, check: Tuple[np.ndarray, Sequence[str], str] | None = None,
              out: str | None = None) -> Dict[str, Any]:
    """Fine-tune ``train_model`` (the same graph as ``model`` with a batch of ``batch``; its
    weights are ``model``'s) with its int8 weights rounded in the forward pass, then copy the
    rounded weights into ``model``. Returns what was done (JSON).

    Args:
        images: uint8 training images (N, H, W[, C]).
        labels: class indices of each image's text.
        check: (validation images, their texts, charset): the fine-tuned float model's
            sequence accuracy on them is reported,
        out: and its probabilities saved here (.npy), for the int8 file's frame agreement
            with the model it was converted from.
    """
    import tensorflow as tf

    from .convert import with_channels

    if len(images) < batch:
        raise ValueError(f"fine-tuning needs at least {batch} training images; got {len(images)}")
    groups = [g for layer in train_model.layers for g in _groups(layer)]
    if not groups:
        raise ValueError("the model has no Conv2D, Dense or LSTM weights to fine-tune")
    probs_layer = train_model.get_layer("probs")
    keras_mod = _keras_of(train_model)
    logits_model = keras_mod.Model(train_model.inputs, probs_layer.input)
    shadows = [tf.Variable(v.read_value(), trainable=False) for v, _ in groups]
    quantized = {id(v) for v, _ in groups}
    others = [v for v in logits_model.trainable_variables if id(v) not in quantized]
    opt = keras_mod.optimizers.Adam(learning_rate=lr)
    x_all = with_channels(images).astype(np.float32)
    longest = max(len(t) for t in labels)
    dense = np.zeros((len(labels), longest), np.int32)
    lengths = np.array([len(t) for t in labels], np.int32)
    for i, t in enumerate(labels):
        dense[i, :len(t)] = t
    rng = np.random.default_rng(seed)
    frames = int(logits_model.output_shape[1])
    all_vars = [v for v, _ in groups] + others

    def eager_step(x: Any, y: Any, n: Any) -> Any:
        for (v, how), s in zip(groups, shadows):
            v.assign(quantize(s, how))
        with tf.GradientTape() as tape:
            logits = logits_model(x, training=False)
            loss = tf.reduce_mean(tf.nn.ctc_loss(
                labels=y, logits=logits, label_length=n,
                logit_length=tf.fill([tf.shape(x)[0]], frames), logits_time_major=False,
                blank_index=blank))
        grads = tape.gradient(loss, all_vars)
        # Straight through: the gradient at the rounded weights updates the float copies.
        opt.apply_gradients(zip(grads, shadows + others))
        return loss

    step = tf.function(eager_step)  # one graph for every step

    t0 = time.monotonic()
    losses: List[float] = []
    order = rng.permutation(len(images))
    at = 0
    for k in range(steps):
        if at + batch > len(order):
            order, at = rng.permutation(len(images)), 0
        idx = order[at:at + batch]
        at += batch
        losses.append(float(step(tf.constant(x_all[idx]), tf.constant(dense[idx]),
                                 tf.constant(lengths[idx]))))
    for (v, how), s in zip(groups, shadows):
        v.assign(quantize(s, how))
    model.set_weights(train_model.get_weights())
    tail = max(1, steps // 10)
    done: Dict[str, Any] = {
        "steps": steps, "batch": batch, "learning_rate": lr, "images": int(len(images)),
        "rounded_weights": [v.name for v, _ in groups],
        "loss_first": float(np.mean(losses[:tail])), "loss_last": float(np.mean(losses[-tail:])),
        "seconds": round(time.monotonic() - t0, 1)}
    if check is not None:
        from .verify import scores

        vx, vtexts, charset = check
        vx = with_channels(vx).astype(np.float32)
        pad = (-len(vx)) % batch  # train_model's batch is static: pad the last one
        vx = np.concatenate([vx, np.repeat(vx[:1], pad, axis=0)]) if pad else vx
        probs = np.concatenate([np.asarray(train_model(vx[s:s + batch], training=False))
                                for s in range(0, len(vx), batch)])[:len(vtexts)]
        done["float_seq_acc"], done["float_cer"] = scores(probs, list(vtexts), charset, blank)
        if out:
            np.save(out, probs)
    return done


def _keras_of(model: Any) -> Any:
    from .equalize import _keras_of as of

    return of(model)
