"""The main demo runs on a fresh store, and its second run builds nothing and says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "demos" / "pipeline.py"
FILES = "result files (read-only): "


def _run_demo(store: Path) -> str:
    env = {**os.environ, "NIXLET_STORE": str(store)}
    done = subprocess.run(
        [sys.executable, str(DEMO)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _line(output: str, prefix: str) -> str:
    """The one line of the demo's output that starts with ``prefix``."""
    lines = [line for line in output.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"expected one line starting with {prefix!r} in:\n{output}"
    return lines[0]


def test_demo_builds_then_builds_nothing(tmp_path: Path) -> None:
    """The first run builds the three stages, the second builds nothing and finds the same
    result."""
    first = _run_demo(tmp_path / "store")
    assert "built 3 derivations" in first
    second = _run_demo(tmp_path / "store")
    assert "nothing to build" in second
    assert _line(first, "result: ") == _line(second, "result: ")


def test_demo_says_where_the_result_and_the_store_are(tmp_path: Path) -> None:
    """Both runs name the store and the folder of the result's files: a folder inside the
    store that holds the report the demo printed."""
    store = tmp_path / "a store"  # a space, as in many home folders
    for output in (_run_demo(store), _run_demo(store)):
        assert _line(output, "store: ") == f"store: {store}"
        files = Path(_line(output, FILES).removeprefix(FILES))
        assert files.is_dir() and files.is_relative_to(store)
        report = (files / "report.txt").read_text()
        assert report.startswith("y = ") and report in output
