"""RunInfo, the model.json contract between captcha-train and captcha-export (no TensorFlow)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from captcha_edge.train.model import ModelConfig
from captcha_edge.train.runinfo import REQUIRED_KEYS, RUN_INFO_VERSION, RunInfo

FIXTURE = Path(__file__).resolve().parent / "data" / "export_run" / "model.json"


def _minimal(**changes: Any) -> dict[str, Any]:
    cfg = ModelConfig(num_classes=4, height=32, width=96, size="small")
    d = {"charset": "abc", "blank": 3,
         "preprocess": {"height": 32, "width": 96, "color": "L", "resize": "stretch",
                        "resample": "bilinear", "background": 255},
         "input_shape": [32, 96, 1], "time_steps": cfg.time_steps, "model_config": cfg.to_dict()}
    d.update(changes)
    return d


def test_fixture_run_is_valid_and_round_trips() -> None:
    raw = json.loads(FIXTURE.read_text(encoding="utf-8"))
    info = RunInfo.read(FIXTURE)
    assert info.to_dict() == raw  # the committed fixture is exactly what RunInfo writes
    assert info.run_info_version == RUN_INFO_VERSION
    assert info.model_config.time_steps == info.time_steps == 24
    assert set(info.val_files).isdisjoint(info.train_files)


def test_write_then_read_is_identity(tmp_path: Path) -> None:
    info = RunInfo.from_dict(_minimal(val_files=["a.png"], seed=3, note={"x": 1}))
    info.write(tmp_path / "model.json")
    again = RunInfo.read(tmp_path / "model.json")
    assert again == info and again.extra == {"note": {"x": 1}}
    assert again.keras == "keras3" and again.train_files == () and again.data == {}


def test_missing_keys_are_all_named() -> None:
    with pytest.raises(ValueError, match="missing keys charset, model_config; re-run captcha-train"):
        RunInfo.from_dict({k: v for k, v in _minimal().items()
                           if k not in ("charset", "model_config")})
    assert set(REQUIRED_KEYS) <= set(_minimal())


@pytest.mark.parametrize("changes, key", [
    ({"blank": 2}, "'blank'"),
    ({"blank": 3.0}, "'blank'"),
    ({"charset": "aab"}, "'charset'"),
    ({"input_shape": [32, 64, 1]}, "'input_shape'"),
    ({"time_steps": 12}, "'time_steps'"),
    ({"model_config": {"num_classes": 9, "height": 32, "width": 96}}, "'model_config'"),
    ({"model_config": {"num_classes": 4, "height": 32, "width": 96, "bogus": 1}},
     "'model_config'"),
    ({"preprocess": {"height": 32, "width": 96, "background": "white"}},
     "'preprocess.background'"),
    ({"keras": "keras2"}, "'keras'"),
    ({"val_files": "a.png"}, "'val_files'"),
    ({"data": {"sources": "dir"}}, "'data.sources'"),
    ({"run_info_version": RUN_INFO_VERSION + 1}, "'run_info_version'"),
])
def test_bad_values_name_the_key(changes: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        RunInfo.from_dict(_minimal(**changes))


def test_read_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match=f"^{bad}: expected a JSON object; got list$"):
        RunInfo.read(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="not readable JSON"):
        RunInfo.read(bad)


def test_importable_without_tensorflow() -> None:
    code = ("import sys\nfrom captcha_edge.train.runinfo import RunInfo\n"
            "from captcha_edge.export.runfolder import open_run\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
