"""The main demo runs on a fresh store, and its second run builds nothing and says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "demos" / "pipeline.py"


def _run_demo(store: Path) -> str:
    env = {**os.environ, "NIXLET_STORE": str(store)}
    done = subprocess.run(
        [sys.executable, str(DEMO)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_demo_builds_then_builds_nothing(tmp_path: Path) -> None:
    first = _run_demo(tmp_path / "store")
    assert "built 3 derivations" in first
    second = _run_demo(tmp_path / "store")
    assert "nothing to build" in second
    result = [line for line in first.splitlines() if line.startswith("result: ")]
    assert result and result[0] in second.splitlines()
