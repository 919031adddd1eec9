"""README.md and docs/*.md quote benchmarks/results/*.json: scripts/render_results.py renders
every marked region from the JSON, and these tests fail when a document and its results disagree.

Fix a failure by rerunning `python scripts/render_results.py` (after a new benchmark run), not by
editing the figures inside a ``<!-- results:... -->`` region by hand.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from conftest import load_file_module, run_without_tensorflow

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "render_results.py"


@pytest.fixture(scope="module")
def render() -> ModuleType:
    return load_file_module(SCRIPT)


@pytest.fixture
def results_copy(tmp_path: Path) -> Path:
    """A private copy of benchmarks/results, free to edit."""
    dst = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", dst)
    return dst


def _edit_json(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_docs_agree_with_results(render: ModuleType) -> None:
    problems = render.check(ROOT)
    assert not problems, ("README/docs disagree with benchmarks/results; run "
                          "`python scripts/render_results.py`:\n" + "\n".join(problems))


def test_every_region_is_rendered_somewhere(render: ModuleType) -> None:
    text = "".join(p.read_text(encoding="utf-8") for p in render.documents(ROOT))
    for name in render.REGIONS:
        assert f"<!-- {name} -->" in text and f"<!-- /{name} -->" in text, name


def test_changed_json_value_fails_the_check(render: ModuleType, results_copy: Path) -> None:
    def faster(data: dict) -> None:  # type: ignore[type-arg]
        for r in data["results"]:
            if r["layout"] == "2 processes x 1 worker" and r["clients"] == 16:
                r["median"]["requests_per_s"] = 2500.0
    _edit_json(results_copy / "serve_wrk.json", faster)
    problems = render.check(ROOT, render.Sources(results=results_copy))
    assert "docs/serve.md: results:serve-wrk-table differs from serve_wrk.json" in problems
    assert "README.md: results:serve-wrk differs from serve_wrk.json" in problems
    assert all("serve_wrk" in p for p in problems), problems  # nothing else moved
    # the real results are untouched, and still agree
    assert not render.check(ROOT)


def test_changed_decoder_json_fails_both_tables(render: ModuleType, results_copy: Path) -> None:
    def slower(data: dict) -> None:  # type: ignore[type-arg]
        for b in data["benchmarks"]:
            if b["group"] == "greedy-T50-C20-flat" and b["extra_info"].get("impl") == "cython":
                b["stats"]["median"] *= 2
    _edit_json(results_copy / "decoder-cpu.json", slower)
    problems = render.check(ROOT, render.Sources(results=results_copy))
    for line in ("README.md: bench:decoder differs", "docs/decoder.md: bench:decoder differs",
                 "README.md: results:decoder differs",
                 "docs/decoder.md: results:decoder-summary differs"):
        assert any(p.startswith(line) for p in problems), (line, problems)


def test_missing_result_file_is_reported_not_raised(render: ModuleType,
                                                    results_copy: Path) -> None:
    (results_copy / "train_cpu.json").unlink()
    problems = render.check(ROOT, render.Sources(results=results_copy))
    assert any(p.startswith("README.md: results:train cannot be rendered from train_cpu.json")
               for p in problems), problems


def test_rewrite_fixes_stale_regions_and_keeps_prose(render: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("Intro.\n\nTraining: <!-- results:train -->99 % long ago<!-- /results:train -->"
                      ", by hand.\n\n<!-- results:export-real840-table -->\n| old |\n"
                      "<!-- /results:export-real840-table -->\nOutro.\n", encoding="utf-8")
    (tmp_path / "docs" / "x.md").write_text("No regions here.\n", encoding="utf-8")
    stale = [p for p in render.check(tmp_path) if "in no document" not in p]
    assert stale == ["README.md: results:train differs from train_cpu.json",
                     "README.md: results:export-real840-table differs from "
                     "export-real840-report.json, export-real840-bench.json"]
    assert render.rewrite(tmp_path) == ["README.md"]
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("Intro.\n\nTraining: <!-- results:train -->100 % validation")
    assert "<!-- /results:train -->, by hand.\n" in text
    assert "<!-- results:export-real840-table -->\n|  | float32 | int8 |\n" not in text
    assert "<!-- results:export-real840-table -->\n| | float32 | int8 |\n|---|" in text
    assert text.endswith("<!-- /results:export-real840-table -->\nOutro.\n")
    assert [p for p in render.check(tmp_path) if "in no document" not in p] == []
    assert render.rewrite(tmp_path) == []  # idempotent
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_unknown_region_is_reported(render: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("<!-- results:nope -->1<!-- /results:nope -->\n",
                                        encoding="utf-8")
    problems = render.check(tmp_path)
    assert any(p.startswith("README.md: unknown region <!-- results:nope -->") for p in problems)
    with pytest.raises(SystemExit, match="unknown region"):
        render.rewrite(tmp_path)


def test_numbers_round_half_up(render: ModuleType) -> None:
    assert render.fix(1586.5, 0, True) == "1,587"
    assert render.fix(40.05, 1) == "40.1"
    assert render.pct(1.0) == "100 %" and render.pct(0.9742331) == "97.4 %"
    assert render.span([12.27, 18.86], lambda v: render.fix(v, 1)) == "12.3–18.9"
    assert render.span([0.98, 0.981], lambda v: render.fix(v, 2), " ms") == "0.98 ms"


def test_check_cli_needs_no_tensorflow() -> None:
    out = run_without_tensorflow(
        "import runpy, sys\n"
        f"sys.argv = [{str(SCRIPT)!r}, '--check']\n"
        "try:\n"
        f"    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print('checked')\n")
    assert "checked" in out
