"""Small helpers every part of captcha_edge shares (one copy each): atomic writes, the set of
image file suffixes, the installed package version, and the one-line-error argument parser.

numpy/Pillow-free and TensorFlow-free, so the runtime, training, export and scripts can all
import it.
"""
from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator, NoReturn, Union

#: File suffixes (lower case) that folder expansion, training and calibration treat as images.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})

#: Archive names (lower case endings) that a folder option is sometimes given by mistake.
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".7z", ".rar")


def not_a_folder(path: Union[str, Path], word: str = "folder") -> str:
    """The reason ``path`` (not a folder) is refused where a folder of images is wanted."""
    name = Path(path).name.lower()
    if not Path(path).exists():
        return f"no such {word}"
    if name.endswith(ARCHIVE_SUFFIXES):
        return f"an archive, not a {word}: unpack it and give the {word} it makes"
    return f"not a {word}"


#: The source-tree version; ``package_version()`` prefers the installed distribution's.
SOURCE_VERSION = "0.1.0"


@contextlib.contextmanager
def crash_traceback_to(target: Union[int, IO[str]], back: int = 2, *,
                       always: bool = False) -> Iterator[None]:
    """In the block, a fatal crash's traceback (:mod:`faulthandler`) goes to ``target``.

    For blocks that point file descriptor ``back`` elsewhere (``/dev/null``, a capture file):
    where faulthandler was on, or ``always``, it writes to ``target`` (the real stderr) while
    the block runs. After the block it writes to fd ``back`` again where it was on before (a
    file descriptor, not ``sys.stderr``: a replaced one may have none), and is off otherwise.
    faulthandler cannot say where it wrote before the block, so a user's own target is not kept.
    """
    was_on = faulthandler.is_enabled()
    if was_on or always:
        faulthandler.enable(file=target)
    try:
        yield
    finally:
        if was_on:
            faulthandler.enable(file=back)
        elif always:
            faulthandler.disable()


def die_with_parent() -> None:
    """A ``preexec_fn``: on Linux the child gets SIGKILL when the process that started it dies
    (``PR_SET_PDEATHSIG``), so a killed CLI or server leaves no orphan worker behind."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def package_version() -> str:
    """The installed ``captcha-edge`` version, else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("captcha-edge")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return SOURCE_VERSION


def atomic_write_with(path: Union[str, Path], write: Callable[[Path], object],
                      suffix: str = "") -> None:
    """Call ``write(tmp)`` on a fresh temp name beside ``path``, then rename it over ``path``.

    Readers see the old file or the whole new one, never half of it. ``suffix`` keeps the
    extension some writers insist on (Keras wants ``.keras`` / ``.weights.h5``). The file gets
    the permissions the umask allows (mkstemp alone would make it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # some writers refuse to overwrite; they get a fresh name
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Union[str, Path], data: Union[bytes, str]) -> None:
    """Atomically write ``data`` (str is UTF-8 encoded) to ``path``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    atomic_write_with(path, lambda p: p.write_bytes(raw))


def atomic_write_json(path: Union[str, Path], obj: Any) -> None:
    """Atomically write ``obj`` as indented UTF-8 JSON with a final newline."""
    atomic_write(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def number_arg(kind: Callable[[str], Any], minimum: float, maximum: float | None = None,
               what: str = "") -> Callable[[str], Any]:
    """An argparse ``type=`` that parses ``kind`` (int or float) within ``minimum..maximum``.

    The error names what was expected and what was given, e.g. ``expected a positive integer;
    got '0'``; ``what`` overrides the expectation's wording (e.g. ``"a port in 0..65535"``).
    """
    noun = "an integer" if kind is int else "a number"
    if not what:
        what = ("a positive integer" if kind is int and minimum == 1 and maximum is None
                else f"{noun} >= {minimum:g}" if maximum is None
                else f"{noun} in {minimum:g}..{maximum:g}")

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}") from None
        if not (value >= minimum and (maximum is None or value <= maximum)):  # NaN fails too
            raise argparse.ArgumentTypeError(f"expected {what}; got {value}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


def seconds_option(group: argparse._ActionsContainer, flag: str, default: float, help: str,
                   kind: Callable[[str], Any] = float) -> argparse.Action:
    """Add ``flag S``, a time in seconds parsed by ``kind`` (e.g. ``number_arg(float, 0)``), the
    way every command spells one (``captcha-export --timeout``, ``serve --drain-timeout``)."""
    return group.add_argument(flag, type=kind, default=default, metavar="S", help=help)


class CliParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
