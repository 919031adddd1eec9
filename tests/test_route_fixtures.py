"""tests/data/routes/: one int8 file per integer route, for the emulated Pi (issue 23).

scripts/pi-emulation.sh runs each of these on ARM and on x86 and compares the texts; these tests
hold the folder to the route table, so a new route cannot go without its proof on the Pi.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from captcha_edge import Recognizer, metadata
from captcha_edge.export import routes

ROUTES_DIR = Path(__file__).resolve().parent / "data" / "routes"
IMAGES = sorted((Path(__file__).resolve().parent / "data" / "images" / "good").iterdir())


def test_every_route_has_a_file_for_the_pi():
    have = sorted(p.name for p in ROUTES_DIR.glob("*_int8.tflite"))
    assert have == sorted(f"{name}_int8.tflite" for name in routes.ROUTE_NAMES), \
        "run python scripts/make_route_fixtures.py"


@pytest.mark.parametrize("name", routes.ROUTE_NAMES)
def test_route_file_is_integer_and_names_its_route(name):
    path = ROUTES_DIR / f"{name}_int8.tflite"
    meta = metadata.read(path)
    assert meta["int8_route"] == name and meta["input_dtype"] == "uint8"
    assert meta["format"] == "int8"
    rec = Recognizer(path)
    probs = rec.infer(rec.preprocess(IMAGES[0]))
    assert np.allclose(probs.sum(-1), 1, atol=0.05)  # a softmax per frame, dequantized
    texts = rec.predict_batch(IMAGES[:4])
    assert len(texts) == 4 and all(set(t) <= set(meta["charset"]) for t in texts)


def test_the_default_graph_fixture_is_the_conv_head_with_the_stretch():
    """tests/data/graphs/conv-head_int8.tflite (scripts/make_graph_fixture.py): the emulated Pi
    runs it beside the route files, so it must be the graph and recipe new runs get."""
    path = Path(__file__).resolve().parent / "data" / "graphs" / "conv-head_int8.tflite"
    meta = metadata.read(path)
    assert meta["format"] == "int8" and meta["input_dtype"] == "uint8"
    assert meta["preprocess"]["contrast"] == "stretch"
    rec = Recognizer(path)
    ops = {d["op_name"] for d in rec._interpreter()._get_ops_details()}
    assert "CONV_2D" in ops and not any("LSTM" in op for op in ops)
    # the logit clip's graph (export/logitclip.py): the skip head's one FC over a concatenation,
    # clipped, then the diagonal FC back to nats, then the softmax
    from captcha_edge.export import verify

    tail = [o["op"] for o in verify.op_report(metadata.split(path.read_bytes())[0])][-4:]
    assert tail == ["CONCATENATION", "FULLY_CONNECTED", "FULLY_CONNECTED", "SOFTMAX"]
    texts = rec.predict_batch(IMAGES[:4])
    assert len(texts) == 4 and all(set(t) <= set(meta["charset"]) for t in texts)
