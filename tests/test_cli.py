"""captcha-edge CLI through real subprocesses: output formats, exit codes, every bad input."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from captcha_edge import Recognizer, metadata

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
INT8 = DATA / "tiny_int8.tflite"
FLOAT32 = DATA / "tiny_float32.tflite"
GOOD = DATA / "images" / "good"
BAD = DATA / "images" / "bad"
SHARED = ROOT / ".." / "shared" / "data" / "captcha_images_v2"

BAD_PROBLEMS = {
    "empty.png": "empty file (0 bytes)",
    "truncated.png": "truncated or corrupt image",
    "text.png": "not a readable image",
    "bomb.png": "image too large",
    "animated.gif": "animated image with 2 frames",
}


def cli(*args: str, stdin: bytes = b"", cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run ``captcha-edge`` as a user would (``python -m`` so the test venv's copy is used).

    Warnings keep their defaults (no ``PYTHONWARNINGS=ignore``): a stray one on stderr must fail
    the tests that expect one line per bad input.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run([sys.executable, "-m", "captcha_edge.cli", *args], check=False,
                          input=stdin, capture_output=True, cwd=cwd, timeout=300, env=env)


def out_lines(res: subprocess.CompletedProcess) -> list[str]:
    return res.stdout.decode().splitlines()


def err_lines(res: subprocess.CompletedProcess) -> list[str]:
    return res.stderr.decode().splitlines()


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return Recognizer(INT8)


@pytest.fixture(scope="module")
def shared() -> list[Path]:
    if not SHARED.is_dir():
        pytest.skip(f"shared captcha images not found at {SHARED}")
    return sorted(SHARED.glob("*.png"))


# -- predict -------------------------------------------------------------------------------------

def test_predict_text_lines_match_the_library(rec: Recognizer) -> None:
    files = sorted(GOOD.iterdir())
    res = cli("predict", "-m", str(INT8), *map(str, files))
    assert res.returncode == 0, res.stderr
    assert out_lines(res) == [f"{p}\t{rec.predict(p)}" for p in files]
    assert res.stderr == b""  # no TFLite INFO chatter, no progress bar without a TTY


def test_predict_json_lines(rec: Recognizer, shared: list[Path]) -> None:
    files = shared[:5]
    res = cli("predict", "-m", str(INT8), "--json", "--beam-width", "4", *map(str, files))
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in out_lines(res)]
    assert [r["path"] for r in rows] == [str(p) for p in files]
    for r, p in zip(rows, files):
        pred = rec.recognize(p, beam_width=4)
        assert set(r) == {"path", "text", "confidence", "error"}
        assert r["text"] == pred.text and r["error"] is None
        assert r["confidence"] == pytest.approx(pred.confidence, abs=1e-6)


def test_folder_glob_and_stdin(rec: Recognizer) -> None:
    png = GOOD / "2b4cd.png"
    res = cli("predict", "-m", str(INT8), str(GOOD), str(GOOD / "*.gif"), "-",
              stdin=png.read_bytes())
    assert res.returncode == 0, res.stderr
    lines = out_lines(res)
    folder = sorted(GOOD.iterdir())
    assert [ln.split("\t")[0] for ln in lines] == [str(p) for p in folder] + \
        [str(GOOD / "66gfw.gif"), "-"]
    assert lines[-1] == f"-\t{rec.predict(png)}"


def test_every_bad_input_gets_one_line_and_the_rest_is_answered(rec: Recognizer) -> None:
    bad = sorted(BAD.iterdir())
    good = [GOOD / "2b4cd.png", GOOD / "2b4cd_cmyk.tif", GOOD / "2b4cd_16bit.png"]
    missing = ROOT / "no" / "such.png"
    args = [str(good[0]), *map(str, bad), str(missing), str(good[1]), str(good[2])]
    res = cli("predict", "-m", str(INT8), *args)
    assert res.returncode == 1
    assert out_lines(res) == [f"{p}\t{rec.predict(p)}" for p in good]
    errors = err_lines(res)
    assert len(errors) == len(bad) + 1
    for line, p in zip(errors, [*bad, missing]):
        assert line.startswith(f"captcha-edge: {p}: ")
        assert (BAD_PROBLEMS.get(p.name) or "no such file") in line


def test_bad_inputs_in_json_mode(rec: Recognizer) -> None:
    res = cli("predict", "-m", str(INT8), "--json", str(BAD), "-", stdin=b"")
    assert res.returncode == 1
    rows = {r["path"]: r for r in map(json.loads, out_lines(res))}
    assert set(rows) == {str(p) for p in BAD.iterdir()} | {"-"}
    for name, problem in BAD_PROBLEMS.items():
        row = rows[str(BAD / name)]
        assert row["text"] is None and row["confidence"] is None
        assert row["error"].startswith(str(BAD / name)) and problem in row["error"]
    assert rows["-"]["error"] == "-: empty input (0 bytes)"
    assert res.stderr == b""


def test_garbage_on_stdin_is_named_dash() -> None:
    res = cli("predict", "-m", str(INT8), "-", stdin=b"GIF89a not really")
    assert res.returncode == 1
    (line,) = err_lines(res)
    assert line.startswith("captcha-edge: -: not a readable image")


def test_threads_give_the_same_output(shared: list[Path]) -> None:
    files = list(map(str, shared[:30]))
    one = cli("predict", "-m", str(INT8), *files)
    two = cli("predict", "-m", str(INT8), "--threads", "3", *files)
    assert one.returncode == two.returncode == 0
    assert one.stdout == two.stdout


def test_decoder_options_reach_the_decoder(shared: list[Path]) -> None:
    res = cli("predict", "-m", str(INT8), "--allowed", "2345", "--min-length", "2",
              "--max-length", "3", *map(str, shared[:6]))
    assert res.returncode == 0, res.stderr
    for line in out_lines(res):
        text = line.split("\t")[1]
        assert set(text) <= set("2345") and 2 <= len(text) <= 3


@pytest.mark.parametrize("args, message", [
    (["--allowed", "XYZ"], "allowed contains 'XYZ', which the model's charset '"),
    (["--beam-width", "0"], "expected a positive integer"),
    (["--min-length", "5", "--max-length", "2"], "max_length must be >= min_length (5); got 2"),
    (["--min-length", "100"], "min_length must be <= T="),  # more than T frames can emit
    (["--beam-width", "10000000"], "beam_width must be <= MAX_BEAM_WIDTH (1024)"),
])
def test_bad_decoder_options_exit_2(args: list[str], message: str) -> None:
    res = cli("predict", "-m", str(INT8), *args, str(GOOD / "2b4cd.png"))
    assert res.returncode == 2
    assert message in res.stderr.decode()
    assert res.stdout == b""


# -- model errors --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("models")
    flat, meta = metadata.split(INT8.read_bytes())
    models = {
        "corrupt.tflite": (INT8.read_bytes()[:100], "has no captcha_edge metadata"),
        "foreign.tflite": (flat, "has no captcha_edge metadata"),
        "text.tflite": (b"definitely not a model\n", "not a TFLite model"),
        "broken_graph.tflite": (metadata.embed(flat[:2000], meta), "cannot load this model"),
    }
    for name, (data, _) in models.items():
        (d / name).write_bytes(data)
    return {d / name: msg for name, (_, msg) in models.items()} | \
        {d / "missing.tflite": "cannot read model"}


@pytest.mark.parametrize("command", ["predict", "info", "eval", "bench"])
def test_bad_model_is_one_error_and_exit_2(bad_models: dict, command: str) -> None:
    extra = {"predict": [str(GOOD / "2b4cd.png")], "eval": [str(GOOD)], "bench": ["--n", "2"],
             "info": []}[command]
    models = list(bad_models.items())
    for model, message in models if command == "predict" else models[1:3]:
        res = cli(command, "-m", str(model), *extra)
        assert res.returncode == 2, (model, res.stderr)
        assert res.stdout == b""
        (line,) = err_lines(res)
        assert line.startswith(f"captcha-edge: error: {model}: ") and message in line


def test_usage_errors_exit_2() -> None:
    assert cli().returncode == 2
    assert cli("predict").returncode == 2
    assert cli("frobnicate").returncode == 2
    res = cli("eval", str(GOOD / "2b4cd.png"), "-m", str(INT8))
    assert res.returncode == 2 and b"not a directory" in res.stderr


def test_eval_of_an_archive_says_to_unpack_it(tmp_path: Path) -> None:
    (tmp_path / "captchas.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    res = cli("eval", str(tmp_path / "captchas.zip"), "-m", str(INT8))
    assert res.returncode == 2
    assert err_lines(res) == [f"captcha-edge: error: {tmp_path / 'captchas.zip'}: an archive, not a "
                              "directory: unpack it and give the directory it makes"]


@pytest.mark.parametrize("command", ["predict", "eval", "bench", "info"])
def test_help_has_examples(command: str) -> None:
    res = cli(command, "--help")
    assert res.returncode == 0
    text = res.stdout.decode()
    assert "examples:" in text and f"captcha-edge {command}" in text
    assert "TensorFlow" not in res.stderr.decode()


# -- eval ----------------------------------------------------------------------------------------

def _cer(truth: str, pred: str) -> int:
    prev = list(range(len(pred) + 1))
    for i, a in enumerate(truth, 1):
        cur = [i]
        for j, b in enumerate(pred, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b)))
        prev = cur
    return prev[-1]


def test_eval_metrics_agree_with_predict(tmp_path: Path, shared: list[Path]) -> None:
    """eval's accuracy/CER equal those computed here from predict's output, with a pattern."""
    picked = shared[:40]
    for k, p in enumerate(picked):
        shutil.copy(p, tmp_path / f"{p.stem}_{k:03d}.png")
    (tmp_path / "README.txt").write_text("not an image, ignored")
    pred = cli("predict", "-m", str(INT8), "--json", str(tmp_path))
    texts = {Path(r["path"]).stem.split("_")[0]: r["text"] for r in map(json.loads,
                                                                          out_lines(pred))}
    res = cli("eval", str(tmp_path), "-m", str(INT8), "--json",
              "--label-pattern", r"^(?P<label>[^_]+)_\d+$")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    correct = sum(texts[p.stem] == p.stem for p in picked)
    edits = sum(_cer(p.stem, texts[p.stem]) for p in picked)
    chars = sum(len(p.stem) for p in picked)
    assert report["images"] == 40 and report["unreadable"] == 0
    assert report["correct"] == correct
    assert report["accuracy"] == pytest.approx(correct / 40)
    assert report["cer"] == pytest.approx(edits / chars)
    assert sum(c["count"] for c in report["confusions"]) <= edits
    assert report["latency_ms"]["p50"] > 0 and report["throughput_per_s"] > 0


def test_eval_counts_unreadable_and_unlabelled(tmp_path: Path) -> None:
    for p in [GOOD / "2b4cd.png", GOOD / "8ny7p.png", BAD / "truncated.png"]:
        shutil.copy(p, tmp_path / p.name)
    shutil.copy(GOOD / "mx3de.jpg", tmp_path / "_nolabel.jpg")
    res = cli("eval", str(tmp_path), "-m", str(INT8), "--json")
    assert res.returncode == 1
    report = json.loads(res.stdout)
    assert report["images"] == 3 and report["unreadable"] == 1 and report["unlabelled"] == 1
    assert err_lines(res) == [(f"captcha-edge: {tmp_path / 'truncated.png'}: truncated or "
                              f"corrupt image (image file is truncated)")]


def _renamed_with_labels_csv(tmp_path: Path) -> dict:
    """GOOD's captchas as captcha1.png ... (names that are not labels) and a labels.csv."""
    truths = {}
    for k, p in enumerate(sorted(GOOD.glob("*.png")), start=1):
        shutil.copy(p, tmp_path / f"captcha{k}.png")
        truths[f"captcha{k}.png"] = p.stem.split("_")[0]
    rows = "".join(f"{n},{t}\n" for n, t in truths.items())
    (tmp_path / "labels.csv").write_text("filename,label\n" + rows)
    return truths


def test_eval_reads_the_folders_labels_csv_or_the_one_given(tmp_path: Path,
                                                           rec: Recognizer) -> None:
    """A folder whose file names are not labels (captcha1.png) but which has a labels.csv: eval
    scores against the file's labels, found by itself or given with --labels."""
    truths = _renamed_with_labels_csv(tmp_path)
    texts = {n: rec.predict(tmp_path / n) for n in truths}
    correct = sum(texts[n] == t for n, t in truths.items())
    for extra in ([], ["--labels", str(tmp_path / "labels.csv")]):
        res = cli("eval", str(tmp_path), "-m", str(INT8), "--json", *extra)
        assert res.returncode == 0, res.stderr
        report = json.loads(res.stdout)
        assert report["labels"] == str(tmp_path / "labels.csv")
        assert report["images"] == len(truths) and report["correct"] == correct
    # A pattern asks for the file names: "captcha1" is then the label, and nothing reads it.
    res = cli("eval", str(tmp_path), "-m", str(INT8), "--json", "--label-pattern", "^.+$")
    report = json.loads(res.stdout)
    assert report["labels"] is None and report["correct"] == 0


def test_eval_labels_file_problems_are_one_line(tmp_path: Path) -> None:
    truths = _renamed_with_labels_csv(tmp_path)
    # A listed image that is missing is one unreadable input; the others are scored.
    listed = tmp_path / "more.csv"
    listed.write_text("".join(f"{n},{t}\n" for n, t in truths.items()) + "gone.png,abcde\n")
    res = cli("eval", str(tmp_path), "-m", str(INT8), "--json", "--labels", str(listed))
    assert res.returncode == 1
    report = json.loads(res.stdout)
    assert report["images"] == len(truths) + 1 and report["unreadable"] == 1
    assert err_lines(res) == [f"captcha-edge: {tmp_path / 'gone.png'}: no such file"]
    bad = tmp_path / "bad.csv"
    bad.write_text("filename,label\ncaptcha1.png,ab,extra\n")
    twice = tmp_path / "twice.csv"
    twice.write_text("captcha1.png,ab\ncaptcha1.png,ab\n")
    for args, message in (
            (["--labels", str(twice)], f"--labels {twice}: captcha1.png is listed twice"),
            (["--labels", str(bad)], f"--labels {bad}: line 2 has 3 fields; expected 2 "
                                     "(filename,label)"),
            (["--labels", str(tmp_path / "none.csv")], f"--labels {tmp_path / 'none.csv'}: no "
                                                       "such file"),
            (["--labels", str(listed), "--label-pattern", "x"], "--labels and --label-pattern: "
                                                                "give one")):
        res = cli("eval", str(tmp_path), "-m", str(INT8), *args)
        assert res.returncode == 2
        assert len(err_lines(res)) == 1 and message in err_lines(res)[0], res.stderr


def test_eval_text_report(shared: list[Path], tmp_path: Path) -> None:
    for p in shared[:10]:
        shutil.copy(p, tmp_path / p.name)
    res = cli("eval", str(tmp_path), "-m", str(INT8))
    assert res.returncode == 0
    text = res.stdout.decode()
    for word in ("accuracy", "CER", "latency", "throughput"):
        assert word in text


# -- bench and info ------------------------------------------------------------------------------

def test_bench_two_models_side_by_side() -> None:
    res = cli("bench", "-m", str(INT8), "-m", str(FLOAT32), "--n", "20", "--warmup", "2",
              "--threads", "2", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    a, b = report["results"]
    assert (a["format"], b["format"]) == ("int8", "float32")
    for r in (a, b):
        for stage in ("preprocess", "invoke", "infer", "ctc", "total"):
            p = r["stages_ms"][stage]
            assert 0 < p["p50"] <= p["p95"] <= p["p99"]
        assert r["stages_ms"]["total"]["p50"] >= r["stages_ms"]["invoke"]["p50"] * 0.5
        assert all(v > 0 for v in r["throughput_per_s"].values())
    text = cli("bench", "-m", str(INT8), "--n", "5", "--warmup", "1").stdout.decode()
    assert "p50 / p95 / p99" in text and "CTC decode" in text and "img/s" in text


def test_bench_without_model_uses_the_bundled_one() -> None:
    res = cli("bench", "--n", "5", "--warmup", "1", "--json")
    assert res.returncode == 0, res.stderr
    (r,) = json.loads(res.stdout)["results"]
    assert r["format"] == "int8" and r["model"].endswith("default_int8.tflite")


def test_bench_on_a_folder(shared: list[Path]) -> None:
    res = cli("bench", "-m", str(INT8), "--images", str(SHARED), "--n", "10", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["images"].startswith("10 images from")


def test_info(rec: Recognizer) -> None:
    res = cli("info", "-m", str(INT8), "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["backend"] == "ai-edge-litert"
    assert info["metadata"]["charset"] == rec.charset
    assert info["file_size"] == INT8.stat().st_size
    assert info["ops"] and all(isinstance(v, int) and v > 0 for v in info["ops"].values())
    text = cli("info", "-m", str(INT8)).stdout.decode()
    assert "ai-edge-litert" in text and rec.charset in text and "CONV_2D" in text
    assert "contrast" not in text  # a model that does not stretch says nothing of it
    graph = Path(__file__).resolve().parent / "data" / "graphs" / "conv-head_int8.tflite"
    text = cli("info", "-m", str(graph)).stdout.decode()
    assert "contrast stretch" in text and "LSTM" not in text


def test_default_model_used_when_no_model_given() -> None:
    from captcha_edge import DEFAULT_MODEL

    res = cli("predict", str(GOOD / "2b4cd.png"))
    if DEFAULT_MODEL.is_file():
        assert res.returncode == 0, res.stderr
    else:
        assert res.returncode == 2 and b"bundled default model is missing" in res.stderr


def test_console_script_installed() -> None:
    exe = shutil.which("captcha-edge", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("captcha-edge console script not installed in this environment")
    res = subprocess.run([exe, "--version"], check=False, capture_output=True, timeout=60)
    assert res.returncode == 0 and res.stdout.decode().startswith("captcha-edge ")


def test_empty_folder_is_one_failed_input(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    res = cli("predict", "-m", str(INT8), str(tmp_path), str(GOOD / "2b4cd.png"))
    assert res.returncode == 1
    assert len(out_lines(res)) == 1 and out_lines(res)[0].startswith(str(GOOD / "2b4cd.png"))
    (line,) = err_lines(res)
    assert line.startswith(f"captcha-edge: {tmp_path}: folder has no image files")


# -- in-process pieces ---------------------------------------------------------------------------

def test_printable_names_are_one_line_and_valid_utf8() -> None:
    from captcha_edge.inputs import json_line, printable

    name = os.fsdecode(b"a\xffb\n\tc\x1b.png")
    shown = printable(name)
    assert shown == "a\\udcffb\\n\\tc\\x1b.png"
    shown.encode("utf-8")  # no surrogate left
    line = json_line({"path": name, "text": "\u00e9"})
    assert "\n" not in line and "\u00e9" in line  # non-ASCII text stays readable
    assert json.loads(line.encode("utf-8").decode("utf-8"))["path"] == name


def test_a_subcommand_module_registers_itself(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    """The hook the serve subcommand uses: a module in SUBCOMMAND_MODULES with register()."""
    import types

    from captcha_edge import cli as cli_mod

    mod = types.ModuleType("captcha_edge._hook_probe")

    def register(add, parents) -> None:  # noqa: ANN001
        p = add("probe", "a probe command", [parents["model"], parents["decoding"]],
                epilog="examples:\n  captcha-edge probe")
        p.set_defaults(func=lambda args: print(f"probe {args.model} {args.beam_width}") or 0)

    mod.register = register  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "captcha_edge._hook_probe", mod)
    monkeypatch.setattr(cli_mod, "SUBCOMMAND_MODULES", ("_hook_probe", "_absent_module"))
    assert cli_mod.main(["probe", "-m", "x.tflite", "--beam-width", "3"]) == 0
    assert capsys.readouterr().out == "probe x.tflite 3\n"


def test_eval_recursive_reads_the_sub_folders(tmp_path: Path, rec: Recognizer) -> None:
    """An archive of sub-folders: without --recursive the top folder has no images (one usage
    line); with it every image below is scored, and a link back up is not followed."""
    goods = sorted(GOOD.glob("*.png"))
    for k, p in enumerate(goods):
        sub = tmp_path / ("2024" if k % 2 else "2025/june")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, sub / p.name)
    (tmp_path / "2024" / "loop").symlink_to(tmp_path, target_is_directory=True)
    res = cli("eval", str(tmp_path), "-m", str(INT8), "--json")
    assert res.returncode == 2 and "no image files" in res.stderr.decode()
    res = cli("eval", str(tmp_path), "-m", str(INT8), "--json", "--recursive")
    assert res.returncode == 0, err_lines(res)
    report = json.loads(res.stdout)
    correct = sum(rec.predict(p) == p.stem.split("_")[0] for p in goods)
    assert report["images"] == len(goods) and report["correct"] == correct


@pytest.mark.parametrize("faulthandler_on", [False, True])
def test_a_native_crash_in_a_command_still_shows_its_traceback(faulthandler_on: bool) -> None:
    """Commands send fd 2 to /dev/null (native libraries' chatter); a crash inside one must
    still print faulthandler's traceback on the real stderr, whether or not the user had turned
    faulthandler on (-X faulthandler / PYTHONFAULTHANDLER) before."""
    code = ("import faulthandler\n"
            "from captcha_edge.commands import python_owns_stderr\n"
            "with python_owns_stderr():\n"
            "    faulthandler._sigsegv()\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}
    res = subprocess.run([sys.executable, *(["-X", "faulthandler"] if faulthandler_on else []),
                          "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode != 0
    assert "Fatal Python error: Segmentation fault" in res.stderr, res.stderr
    assert "line 4 in <module>" in res.stderr, res.stderr
