"""The CRNN-CTC model, defined once and reused by training and export.

Architecture (keras-io captcha OCR, leaner and quantization-friendly): three conv blocks
(Conv2D + BatchNorm + ReLU + MaxPool), a dense projection, one bidirectional LSTM and a softmax
over ``charset + blank`` (blank = last class, the Keras convention).

``build_model`` takes the Keras module to build with (Keras 3 ``keras`` by default; export may
rebuild the same graph with ``tf_keras`` or with ``unroll=True`` and copy the weights over, since
the layer list and weight order are identical).
"""
from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Tuple

# The loss lives in ctc.py with the rest of CTC; imported here so old imports keep working.
from .ctc import ctc_loss, pack_targets

__all__ = ["SIZES", "ModelConfig", "build_inference_model", "build_model", "ctc_loss",
           "pack_targets"]

# Measured on the 2-core CPU: the second conv block dominates a training step (32->64 filters at
# H/2 x W/2 costs ~2.4x the whole (16, 32, 48) stack), while a 64-unit BiLSTM over 50 frames is
# cheap, so "base" keeps the convs narrow. Each preset is at least as wide as the one before it
# in every part (a test holds them to that): "large" widens the convs and the dense/LSTM.
SIZES: Dict[str, Dict[str, Any]] = {
    "small": {"filters": (16, 32, 32), "dense": 48, "rnn": 48},
    "base": {"filters": (16, 32, 48), "dense": 128, "rnn": 128},
    "large": {"filters": (32, 64, 64), "dense": 192, "rnn": 192},
}


#: conv1 layouts (see ModelConfig.stem).
STEMS = ("pool", "s2", "s4")
#: Sequence heads (see ModelConfig.head).
HEADS = ("lstm", "conv")
#: The conv head: one residual Conv1D(kernel 3) + BatchNorm + ReLU per dilation; the frames a
#: logit sees grow to 1 + 2 x sum(dilations) = 15 (3 characters at 5 frames a character).
CONV_HEAD_DILATIONS = (1, 2, 4)
#: Stem s4 pools the height by 16: the smallest input height it takes.
S4_MIN_HEIGHT = 32


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the model's graph."""

    num_classes: int  # len(charset) + 1 (blank last)
    height: int = 50
    width: int = 200
    size: str = "base"
    dropout: float = 0.2
    filters: Tuple[int, ...] = field(default=())
    dense: int = 0
    rnn: int = 0
    time_pool: int = 4  # width / time_pool frames; 4 or 8 (8 also pools width in block 3)
    # Added for any-style training; the defaults here are the old graph, so a model_config
    # written before they existed loads as what it was (the CLI picks the new defaults).
    channels: int = 1  # 1 = grey ("L"), 3 = RGB input
    convs: Tuple[int, ...] = field(default=(1, 1, 1))  # Conv2D+BN+ReLU layers per block
    # "pool": conv1 at full resolution, then a 2x2 max-pool (the old graph); "s2": conv1 with
    # stride 2 and no pool1 -- the same output size, ~1.4x the training images per CPU-second
    # (conv1's full-resolution activations, their BatchNorm, ReLU, pool and gradients are most
    # of a step's memory traffic); "s4": conv1 with stride 2 and pool1 kept, so blocks 2 and 3
    # run at a quarter of the pixels (~2.3x; the height is pooled by 16, not 8). docs/train.md
    # has the cost model.
    stem: str = "pool"
    # True: the logits also see the projected conv features (a skip around the BiLSTM: a second
    # Dense "logits_skip" from the projection, added to "logits" in "logits_sum"), so the
    # per-frame glyph detectors get a direct gradient from the first step: CTC leaves its
    # all-blank plateau without waiting for the LSTM to learn to pass features through.
    skip: bool = False
    # The sequence head over the frames: "lstm" (a bidirectional LSTM of ``rnn`` units a
    # direction, the old graph) or "conv" (residual dilated 1-D convolutions of ``dense``
    # channels, :data:`CONV_HEAD_DILATIONS`). The int8 TFLite LSTM kernel is most of an int8
    # model's invoke time on x86 and ARM (3.3 of 3.9 ms at 240x64, issue 22), while the LSTM is
    # ~5 % of a training step; the conv head runs in XNNPACK's int8 kernels.
    head: str = "lstm"

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}; got {self.size!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2; got {self.num_classes}")
        preset = SIZES[self.size]
        if not self.filters:
            object.__setattr__(self, "filters", tuple(preset["filters"]))
        if not self.dense:
            object.__setattr__(self, "dense", int(preset["dense"]))
        if not self.rnn:
            object.__setattr__(self, "rnn", int(preset["rnn"]))
        if self.time_pool not in (4, 8):
            raise ValueError(f"time_pool must be 4 or 8; got {self.time_pool}")
        if len(self.filters) != 3 or min(self.filters) < 1 or self.dense < 1 or self.rnn < 1:
            raise ValueError(f"filters must be 3 positive ints and dense/rnn >= 1; got "
                             f"filters={self.filters}, dense={self.dense}, rnn={self.rnn}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB); got {self.channels}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}; got {self.head!r}")
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}; got {self.stem!r}")
        if self.stem == "s4" and self.height < S4_MIN_HEIGHT:
            raise ValueError(f"stem s4 pools the height by 16: it needs a height of at least "
                             f"{S4_MIN_HEIGHT}; got {self.height}")
        if len(self.convs) != 3 or not all(1 <= int(c) <= 3 for c in self.convs):
            raise ValueError(f"convs must be 3 ints in 1..3 (conv layers per block); got "
                             f"{self.convs}")
        if self.width % self.time_pool or self.width < 16 or self.height < 16:
            raise ValueError(f"input must be at least 16x16 with width % {self.time_pool} == 0; "
                             f"got {self.width}x{self.height}")

    @property
    def time_steps(self) -> int:
        """Frames the model emits per image (width / time_pool)."""
        return self.width // self.time_pool

    @property
    def pools(self) -> Tuple[Tuple[int, int], ...]:
        """(height, width) pooling of the three conv blocks (stem s2 skips the first)."""
        if self.stem == "s4":  # conv1's stride already halved both: block 3 pools height only
            return ((2, 2), (2, 2) if self.time_pool == 8 else (2, 1), (2, 1))
        return ((2, 2), (2, 2), (2, 2) if self.time_pool == 8 else (2, 1))

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["filters"] = list(self.filters)
        d["convs"] = list(self.convs)
        # At the old graph's values the keys are left out, so a model.json written before they
        # existed reads and writes back unchanged.
        for key, old in (("stem", "pool"), ("skip", False), ("head", "lstm")):
            if d[key] == old:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> ModelConfig:
        d = dict(d)
        d["filters"] = tuple(d.get("filters", ()))
        if "convs" in d:
            d["convs"] = tuple(d["convs"])
        return cls(**d)


def build_inference_model(cfg: ModelConfig, keras: Any = None, *, unroll: bool = False,
                          batch_size: Any = None) -> Any:
    """Image (H, W, 1) raw 0..255 -> per-frame softmax (T, C). Layers named "image" and "probs"."""
    if keras is None:
        keras = importlib.import_module("keras")  # Keras 3
    L = keras.layers
    image = keras.Input(shape=(cfg.height, cfg.width, cfg.channels), batch_size=batch_size,
                        name="image")
    x = L.Rescaling(1.0 / 255.0, name="scale")(image)
    # Pool height and width by 2 in the first two blocks, only height in the third (time_pool 4):
    # the width (time) keeps W/4 frames, enough for CTC on captcha-length labels.
    for i, (f, pool, n) in enumerate(zip(cfg.filters, cfg.pools, cfg.convs), start=1):
        for j in range(int(n)):
            # The first conv of a block keeps the old layer names, so one-conv configs are the
            # old graph (same names, same weight order); extra convs are "conv2b", "conv2c".
            sfx = f"{i}" + ("" if j == 0 else "abc"[j])
            stride = 2 if (i, j) == (1, 0) and cfg.stem in ("s2", "s4") else 1
            x = L.Conv2D(f, 3, strides=stride, padding="same", use_bias=False,
                         kernel_initializer="he_normal", name=f"conv{sfx}")(x)
            # momentum 0.9: the moving statistics follow the fast-changing early weights within
            # a few dozen steps, so per-epoch validation (and best-epoch choice) is not skewed.
            # BatchNorm right after a bias-free conv folds into it for int8.
            x = L.BatchNormalization(momentum=0.9, name=f"bn{sfx}")(x)
            x = L.ReLU(name=f"relu{sfx}")(x)
        if not (i == 1 and cfg.stem == "s2"):  # the strided conv1 already halved H and W
            x = L.MaxPooling2D(pool, name=f"pool{i}")(x)
    h, w, c = int(x.shape[1]), cfg.time_steps, cfg.filters[-1]
    if int(x.shape[2]) != w:
        raise ValueError(f"the conv stack gives {x.shape[2]} frames, not {w}")
    # Transpose so that the time dimension corresponds to the image width.
    x = L.Permute((2, 1, 3), name="to_time")(x)
    x = L.Reshape((w, h * c), name="frames")(x)
    x = L.Dense(cfg.dense, activation="relu", name="proj")(x)
    x = L.Dropout(cfg.dropout, name="drop")(x)
    if cfg.head == "lstm":
        seq = L.Bidirectional(L.LSTM(cfg.rnn, return_sequences=True, unroll=unroll),
                              name="bilstm")(x)
        seq_width = 2 * cfg.rnn
    else:
        # Residual: each layer adds context to the frame features, so at initialisation the
        # head passes them through (what the skip below does for the LSTM). BatchNorm follows a
        # bias-free conv and folds into it for int8, as in the conv blocks.
        seq = x
        for k, d in enumerate(CONV_HEAD_DILATIONS, start=1):
            y = L.Conv1D(cfg.dense, 3, dilation_rate=d, padding="same", use_bias=False,
                         kernel_initializer="he_normal", name=f"ctx{k}")(seq)
            y = L.BatchNormalization(momentum=0.9, name=f"ctx_bn{k}")(y)
            y = L.ReLU(name=f"ctx_relu{k}")(y)
            seq = L.Add(name=f"ctx_add{k}")([seq, y])
        seq_width = cfg.dense
    if not cfg.skip:
        out = L.Dense(cfg.num_classes, name="logits")(seq)
    else:
        # Dense(concat(seq, x)) written as a sum of two Dense layers (the same function): the
        # int8 CONCATENATION of the fused LSTM's output with its own input corrupts the heap of
        # the TFLite interpreter at 128 LSTM units (TF 2.21 / ai-edge-litert; a 64- or 96-unit
        # LSTM, or ADD, do not), so the graph has no such concatenation. Both heads start as
        # that one Dense would (Glorot over the summed fan-in): with each head's own Glorot
        # range the panel's small style read 20 % after 1.5 CPU-minutes, not 91 %.
        limit = (6.0 / (seq_width + cfg.dense + cfg.num_classes)) ** 0.5
        init = keras.initializers.RandomUniform(-limit, limit)
        out = L.Dense(cfg.num_classes, kernel_initializer=init, name="logits")(seq)
        direct = L.Dense(cfg.num_classes, use_bias=False, kernel_initializer=init,
                         name="logits_skip")(x)
        out = L.Add(name="logits_sum")([out, direct])
    probs = L.Activation("softmax", dtype="float32", name="probs")(out)
    return keras.Model(image, probs, name="crnn")


def build_model(cfg: ModelConfig, keras: Any = None) -> Tuple[Any, Any]:
    """Return ``(train_model, inference_model)``; they share every layer and weight.

    ``train_model`` maps the image to the float32 logits (compile it with
    :func:`captcha_edge.train.ctc.ctc_loss`), so
    the CTC loss lives only in the training graph; ``inference_model`` ends in the softmax
    ``"probs"`` and is what gets saved and exported.
    """
    if keras is None:
        keras = importlib.import_module("keras")  # Keras 3
    inference = build_inference_model(cfg, keras)
    logits = inference.get_layer("logits_sum" if cfg.skip else "logits").output
    train = keras.Model(inference.input, logits, name="crnn_train")
    return train, inference
