"""Make the bundled dynamic-range twin ``runtime/models/default_dynamic.tflite`` from the float32 one.

    python scripts/make_dynamic_twin.py --data-dir ../shared/data/captcha_images_v2

Why: on x86-64, XNNPACK runs a dynamic-range model (int8 weights, activations quantized on the fly)
about 1.5x faster than float32 (0.38 vs 0.58 ms per invoke of the bundled model, one thread),
while the full-int8 model is ~4x slower there (its integer LSTM has no fast x86 kernel). So
``captcha-edge serve`` answers with this twin on x86 (the Pi keeps the int8 model).

How: ``scripts/make_default_model.sh`` now exports ``dynamic`` beside int8 and float32 from the
trained Keras model. The bundled pair was made before that, and its run folder is not kept, so
this script rebuilds the Keras graph from the float32 twin's own weights (BatchNorm was folded into
the convs by the converter: it becomes an identity BN that adds the conv bias; Rescaling(1/255)
was folded into conv1), proves the rebuild by converting it back to float32 and comparing outputs
(max |diff| must stay under 1e-4), then converts it with ``captcha-export``'s own ``dynamic``
converter and strips names as ``captcha-export`` does. With ``--data-dir`` the new twin is scored on
the same validation split the training run held out (sha256 of the file name < 0.2) and that goes
into its metadata; frame agreement is measured against the float32 twin.

Needs the [train] extra (TensorFlow, tf-keras). Writes atomically; exits 1 when the rebuild does not
reproduce the float32 model.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "runtime" / "models"


def _rebuild_keras(it: Any, meta: Any) -> Any:
    """The inference graph with the weights of the float32 interpreter ``it``."""
    import tf_keras
    from captcha_edge.train.model import ModelConfig, build_inference_model

    ops = it._get_ops_details()

    def tensor(i: Any) -> np.ndarray:
        return np.asarray(it.get_tensor(int(i)))

    def of(name: str) -> List[Dict[str, Any]]:
        return [o for o in ops if o["op_name"] == name]

    convs, fcs, lstms = of("CONV_2D"), of("FULLY_CONNECTED"), of("UNIDIRECTIONAL_SEQUENCE_LSTM")
    if len(convs) != 3 or len(fcs) != 2 or len(lstms) != 2:
        raise ValueError("not the CRNN graph captcha-export writes (3 convs, 2 dense, 2 LSTMs)")
    h, w, c = meta.input_shape
    cfg = ModelConfig(num_classes=len(meta.charset) + 1, height=h, width=w, size="small",
                      filters=tuple(int(tensor(o["inputs"][1]).shape[0]) for o in convs),
                      dense=int(tensor(fcs[0]["inputs"][1]).shape[0]),
                      rnn=int(tensor(lstms[0]["inputs"][1]).shape[0]),
                      time_pool=w // meta.time_steps, channels=c)
    model = build_inference_model(cfg, keras=tf_keras, batch_size=1)
    for i, o in enumerate(convs, start=1):
        kernel = tensor(o["inputs"][1]).transpose(1, 2, 3, 0)  # OHWI -> HWIO
        bias = tensor(o["inputs"][2])
        if i == 1:
            kernel = kernel * 255.0  # undo the folded Rescaling(1/255)
        model.get_layer(f"conv{i}").set_weights([kernel])
        bn = model.get_layer(f"bn{i}")
        n = len(bias)
        bn.set_weights([np.ones(n), bias, np.zeros(n), np.full(n, 1.0 - bn.epsilon)])
    for layer, o in (("proj", fcs[0]), ("logits", fcs[1])):
        model.get_layer(layer).set_weights([tensor(o["inputs"][1]).T, tensor(o["inputs"][2])])

    def lstm_weights(o: Dict[str, Any]) -> List[np.ndarray]:
        ins = o["inputs"]  # TFLite gate order i, f, c, o = Keras' column order
        return [np.concatenate([tensor(ins[j]).T for j in (1, 2, 3, 4)], axis=1),
                np.concatenate([tensor(ins[j]).T for j in (5, 6, 7, 8)], axis=1),
                np.concatenate([tensor(ins[j]) for j in (12, 13, 14, 15)])]

    reversed_ = {int(o["outputs"][0]) for o in of("REVERSE_V2")}
    forward = [o for o in lstms if int(o["inputs"][0]) not in reversed_]
    backward = [o for o in lstms if int(o["inputs"][0]) in reversed_]
    if len(forward) != 1 or len(backward) != 1:
        raise ValueError("cannot tell the forward LSTM from the backward one")
    bi = model.get_layer("bilstm")
    bi.forward_layer.set_weights(lstm_weights(forward[0]))
    bi.backward_layer.set_weights(lstm_weights(backward[0]))
    return model


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--float32", type=Path, default=MODELS / "default_float32.tflite")
    ap.add_argument("--out", type=Path, default=MODELS / "default_dynamic.tflite")
    ap.add_argument("--data-dir", type=Path, help="labelled captchas of the training run (scores "
                    "the twin on its validation split)")
    ap.add_argument("--val-fraction", type=float, default=0.2)
    a = ap.parse_args(argv)

    from captcha_edge import metadata as M
    from captcha_edge._common import atomic_write, package_version
    from captcha_edge.export import convert, verify
    from captcha_edge.preprocess import to_array
    from captcha_edge.train.data import is_val

    flat32, meta = M.load_file(a.float32)
    it = verify.interpreter(flat32, delegates=False)
    model = _rebuild_keras(it, meta)
    h, w, c = meta.input_shape
    probe = np.random.default_rng(0).integers(0, 256, (16, h, w), dtype=np.uint8)
    again, _ = verify.run_model(convert.to_tflite(model, "float32"), probe)
    source, _ = verify.run_model(flat32, probe)
    diff = float(np.abs(again - source).max())
    print(f"rebuild: float32 reconversion max |diff| {diff:.2e}", file=sys.stderr)
    if diff > 1e-4:
        print(f"make_dynamic_twin: the rebuilt graph does not reproduce {a.float32.name} "
              f"(max |diff| {diff:.2e} > 1e-4); nothing written", file=sys.stderr)
        return 1
    flat = convert.strip_names(convert.to_tflite(model, "dynamic"))
    row = verify.io_details(flat)
    accuracy = None
    if a.data_dir:
        files = sorted(p for p in a.data_dir.iterdir() if p.suffix.lower() == ".png"
                       and is_val(p.name, a.val_fraction))
        labels = [p.stem for p in files]
        images = np.stack([to_array(p, meta.preprocess) for p in files])
        ref, _ = verify.run_model(flat32, images)
        v = verify.evaluate("dynamic", flat, len(flat), images, labels, meta.charset,
                            meta.blank, ref)
        acc32, _ = verify.scores(ref, labels, meta.charset, meta.blank)
        accuracy = v.accuracy(acc32)
        print(f"validation ({v.images} images): dynamic {v.seq_acc:.4f} (float32 twin "
              f"{acc32:.4f}), frame agreement {v.agreement:.4f}, invoke {v.latency_ms:.3f} ms",
              file=sys.stderr)
    # The float32 twin's metadata, with what differs for the dynamic file.
    out = replace(meta, format="dynamic", input_dtype=row["input_dtype"],
                  output_dtype=row["output_dtype"], input_quant=row["input_quant"],
                  output_quant=row["output_quant"], stateful=verify.is_stateful(flat),
                  calibration=None, int8_route=None, accuracy=accuracy,
                  exported=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  package_version=package_version())
    data = M.embed(flat, out)
    atomic_write(a.out, data)
    print(f"make_dynamic_twin: {a.out.name} ({len(data)} bytes) from {a.float32.name}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
