"""scripts/bench_decoder_table.py: table built from a benchmark JSON, docs block rewritten."""
from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from conftest import load_file_module

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_decoder_table.py"


@pytest.fixture(scope="module")
def table() -> ModuleType:
    return load_file_module(SCRIPT)


def _bench(group: str, impl: str, median_s: float, per_call: int = 1) -> dict[str, object]:
    return {
        "group": group,
        "extra_info": {"impl": impl, "per_call": per_call, "load1": 1.0},
        "options": {"timer": "process_time"},
        "stats": {"median": median_s, "min": median_s, "mean": median_s, "data": [median_s]},
    }


def test_table_ratios_and_targets(table: ModuleType, tmp_path: Path) -> None:
    report = {
        "datetime": "2026-01-01T00:00:00",
        "machine_info": {"cpu": {"brand_raw": "test cpu"}},
        "benchmarks": [
            _bench("greedy-T50-C20-peaky", "cython", 1.0e-6),
            _bench("greedy-T50-C20-peaky", "python", 50.0e-6),
            _bench("greedy-T50-C20-peaky", "fast-ctc-decode", 2.0e-6),
            _bench("beam10-pruned-T50-C20-peaky", "cython", 80.0e-6),
            _bench("batch-greedy-T50-C20-peaky", "cython-loop", 64 * 4.0e-6, per_call=64),
            _bench("batch-greedy-T50-C20-peaky", "cython-batch-2threads", 64 * 1.0e-6,
                   per_call=64),
        ],
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(report))
    groups, meta = table.load(path, "median")
    assert "data" not in json.loads(path.read_text())["benchmarks"][0]["stats"]  # trimmed
    assert groups["greedy-T50-C20-peaky"]["cython"] == pytest.approx(1.0)
    assert groups["batch-greedy-T50-C20-peaky"]["cython-loop"] == pytest.approx(4.0)
    md = table.make_table(groups, meta, "median", "1.0")
    assert "| greedy-T50-C20-peaky | 1.00 | 50.0 | 50.0× | 2.00 | 2.0× |" in md
    assert "| greedy-T50-C20-peaky | cython <= 1.5 µs | yes |" in md
    assert "| greedy-T50-C20-peaky | python/cython >= 35x | yes |" in md
    assert "| beam10-pruned-T50-C20-peaky | cython <= 70 µs" in md
    assert "cython <= 70 µs (top-1 = exact: asserted) | **no** |" in md
    assert "| beam10-exact-T200-C100-flat | cython <= 40 ms | not measured |" in md
    assert "| greedy-T50-C20-peaky | 4.00 | – | 1.00 | 4.0× |" in md


def test_replace_block(table: ModuleType, tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{table.START}\nold table\n{table.END}\noutro\n")
    table.replace_block(doc, "new table\n")
    assert doc.read_text() == f"intro\n{table.START}\nnew table\n{table.END}\noutro\n"
    bare = tmp_path / "bare.md"
    bare.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="no '<!-- bench:decoder -->'"):
        table.replace_block(bare, "x\n")
