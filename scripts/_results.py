"""Append one entry to a benchmark's JSON list in ``benchmarks/results/`` (written atomically)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict


def append_result(path: Path, entry: Dict[str, Any]) -> None:
    from captcha_edge._common import atomic_write_json

    entries = json.loads(path.read_text()) if path.exists() else []
    atomic_write_json(path, [*entries, entry])
