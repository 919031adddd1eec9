"""captcha-train's console: TensorFlow's absl start-up lines filtered as TF_CPP_MIN_LOG_LEVEL asks
(captcha_edge.train.tflog), and the epoch line that counts the time budget."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from captcha_edge.train import tflog
from captcha_edge.train.fit import Options, epoch_line

# What TensorFlow 2.21 printed on import and on the first device query of a CPU-only machine.
STARTUP = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796628465.013074   21534 port.cc:153] oneDNN custom operations are on.\n"
    "I0000 00:00:1796628465.013441   21534 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n"
    "I0000 00:00:1796628497.996296   21610 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.\n"
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.\n"
    "E0000 00:00:1796628467.514521   21534 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
)
OTHER = ("W1207 07:22:01.5   99 some_op.cc:7] a warning\n"
         "E1207 07:22:01.6   99 some_op.cc:8] a real error\n"
         "F1207 07:22:01.7   99 some_op.cc:9] fatal\n"
         "Traceback (most recent call last):\n"
         "To enable the following instructions: a Python line, not a continuation\n")


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    monkeypatch.setitem(tflog._state, "no_driver", False)


def test_level_two_drops_the_startup_lines_and_keeps_errors_and_python_text() -> None:
    assert tflog.filter_lines(STARTUP, 2) == ""
    assert tflog.filter_lines(OTHER, 2) == "".join(OTHER.splitlines(True)[1:])


def test_level_zero_keeps_everything_and_three_only_fatal_and_python_text() -> None:
    assert tflog.filter_lines(STARTUP + OTHER, 0) == STARTUP + OTHER
    lines = OTHER.splitlines(True)
    assert tflog.filter_lines(OTHER, 3) == "".join(lines[2:])


def test_cuinit_failure_is_kept_unless_tensorflow_found_no_driver() -> None:
    cuinit = STARTUP.splitlines(True)[-1]
    assert tflog.filter_lines(cuinit, 2) == cuinit  # a driver is there: the failure matters
    tflog.filter_lines(STARTUP.splitlines(True)[2], 2)  # "Could not find cuda drivers", earlier
    assert tflog.filter_lines(cuinit, 2) == ""


def test_quiet_native_stderr_filters_what_native_code_writes_to_fd_2(capfd, monkeypatch) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    os.write(2, b"before\n")
    with tflog.quiet_native_stderr():
        os.write(2, STARTUP.encode())
        os.write(2, b"E1207 07:22:01.6   99 op.cc:8] kept\n")
        os.write(2, b"python text\n")  # a traceback or warning from Python code
    os.write(2, b"I0000 00:00:1.5   1 after.cc:1] outside the block: not filtered\n")
    err = capfd.readouterr().err
    assert err == ("before\nE1207 07:22:01.6   99 op.cc:8] kept\npython text\n"
                   "I0000 00:00:1.5   1 after.cc:1] outside the block: not filtered\n")


def test_quiet_native_stderr_gives_back_fd_2_when_the_block_raises(capfd, monkeypatch) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    with pytest.raises(ImportError):
        with tflog.quiet_native_stderr():
            os.write(2, b"written before the error\n")
            raise ImportError("no tensorflow")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "written before the error\nafter\n"


def test_epoch_line_counts_the_budget_when_the_epochs_only_cap_it() -> None:
    o = Options(out=Path("r"), epochs=10_000, max_minutes=30, budget_clock="cpu", epochs_cap=True)
    assert epoch_line(2, o, 252.0) == "Epoch 3 (4.2 of 30 CPU-min spent)"
    o = Options(out=Path("r"), epochs=20, max_minutes=7.5)
    assert epoch_line(0, o, 0.0) == "Epoch 1/20 (0.0 of 7.5 min spent)"
    assert epoch_line(39, Options(out=Path("r"), epochs=40), 99.0) == "Epoch 40/40"


def test_tflite_info_lines_are_info_lines() -> None:
    line = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
    assert tflog.filter_lines(line + "python text\n", 2) == "python text\n"
    assert tflog.filter_lines(line, 0) == line
    assert tflog.filter_lines("INFO: a Python logger's line\n", 2) == "INFO: a Python logger's line\n"


@pytest.mark.parametrize("level", ["2", "0"])
def test_export_makes_its_interpreters_without_the_xnnpack_line(level: str) -> None:
    """captcha-export's interpreter (export.verify.interpreter), in a fresh process as TFLite
    prints its line once per process: nothing on stderr at level 2; at level 0 the line is there,
    so the check can see it."""
    pytest.importorskip("ai_edge_litert")
    import subprocess
    import sys

    from captcha_edge import DEFAULT_MODEL

    code = ("import sys; from captcha_edge import metadata; from captcha_edge.export import verify;"
            f"verify.interpreter(metadata.split(open({str(DEFAULT_MODEL)!r}, 'rb').read())[0]);"
            "print('ok')")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": level}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0 and res.stdout == "ok\n", res.stderr
    assert ("INFO: Created TensorFlow Lite XNNPACK delegate" in res.stderr) == (level == "0"), \
        res.stderr


@pytest.mark.parametrize("crash_log", [True, False])
def test_a_crash_inside_the_filter_still_shows_its_traceback(crash_log: bool) -> None:
    """With faulthandler on, a native crash while fd 2 is captured prints its traceback on the
    real stderr (the captured text dies with the process); without it, nothing is printed, which
    shows the capture is really on."""
    import subprocess
    import sys

    code = ("import faulthandler; from captcha_edge.train import tflog\n"
            "with tflog.quiet_native_stderr():\n"
            "    faulthandler._sigsegv()\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONFAULTHANDLER", None)
    res = subprocess.run([sys.executable, *(["-X", "faulthandler"] if crash_log else []), "-c",
                          code], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode != 0
    assert ("Fatal Python error: Segmentation fault" in res.stderr) == crash_log, res.stderr
    assert ("line 3 in <module>" in res.stderr) == crash_log, res.stderr


def test_the_filter_leaves_faulthandler_on_when_sys_stderr_has_no_descriptor(capsys,
                                                                            monkeypatch) -> None:
    """Under capsys (as in a caller's own tests) sys.stderr has no fileno(): giving faulthandler
    back must not raise, and it stays on."""
    import faulthandler

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    was_on = faulthandler.is_enabled()
    faulthandler.enable(file=2)
    try:
        with tflog.quiet_native_stderr():
            os.write(2, b"I0000 00:00:1.5   1 x.cc:1] dropped\n")
        assert faulthandler.is_enabled()
    finally:
        if not was_on:
            faulthandler.disable()


@pytest.mark.parametrize("was_on,always", [(True, False), (False, False), (False, True),
                                           (True, True)])
def test_crash_traceback_to_turns_faulthandler_on_only_where_asked_and_gives_it_back(
        was_on: bool, always: bool) -> None:
    """The one hand-off both stderr redirections use: on in the block where it was on or
    ``always``; after it, as it was before, even when the block raises."""
    import faulthandler

    from captcha_edge._common import crash_traceback_to

    before = faulthandler.is_enabled()
    (faulthandler.enable if was_on else faulthandler.disable)()
    try:
        with pytest.raises(RuntimeError), crash_traceback_to(2, always=always):
            assert faulthandler.is_enabled() == (was_on or always)
            raise RuntimeError("inside")
        assert faulthandler.is_enabled() == was_on
    finally:
        (faulthandler.enable if before else faulthandler.disable)()
