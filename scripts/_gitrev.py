"""Run an earlier commit of this repository beside the checkout: a temporary git worktree,
installed into a folder of its own (pure-Python decoder; nothing is fetched), to put on
PYTHONPATH. Used by the benchmarks that compare against the code an issue was filed on."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def installed_rev(rev: str) -> Iterator[Path]:
    """Yield a folder holding ``captcha_edge`` as of ``rev``; removed again on exit."""
    work = Path(tempfile.mkdtemp(prefix="captcha-edge-rev-"))
    tree, target = work / "tree", work / "pkg"
    try:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree),
                        rev], check=True, capture_output=True)
        env = {**os.environ, "CAPTCHA_EDGE_PUREPYTHON": "1"}
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", "--target", str(target), str(tree)],
                       check=True, capture_output=True, env=env)
        yield target
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def env_for(pythonpath: "Path | None") -> Dict[str, str]:
    """The environment of a child that imports ``captcha_edge`` from ``pythonpath`` (None: this
    checkout's install)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env
