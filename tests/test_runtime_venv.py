"""Clean-venv check (slow, needs PyPI): runs scripts/check_runtime_venv.sh for both decoder modes.

Opt-in with CAPTCHA_EDGE_VENV_CHECK=1 (it builds two venvs, a few minutes); CI runs the script
directly.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CAPTCHA_EDGE_VENV_CHECK"),
                    reason="set CAPTCHA_EDGE_VENV_CHECK=1 to build the clean runtime venvs")
def test_runtime_only_venv() -> None:
    if not (ROOT / ".." / "shared" / "data" / "captcha_images_v2").is_dir():
        pytest.skip("shared captcha images not found")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "check_runtime_venv.sh")], check=False,
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "all checks passed" in res.stderr
