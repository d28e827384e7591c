"""The architecture contract: the package's layers (values < store < engine < tools <
interactive) hold, as import-linter checks them in `make test`, and the check bites: a copy
of the package with one import pointing up fails it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports with ``root``'s pyproject.toml on the ``nixlet`` package in
    ``root/src``."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_layers_hold() -> None:
    """Every contract of pyproject.toml is kept by the code as it is."""
    done = _lint(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


def test_an_import_pointing_up_breaks_the_contract(tmp_path: Path) -> None:
    """A value module that imports the engine (a layer above it) fails the check, naming
    the offending import; so does an error module that imports anything of nixlet."""
    shutil.copytree(REPO / "src" / "nixlet", tmp_path / "src" / "nixlet")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    refs = tmp_path / "src" / "nixlet" / "values" / "refs.py"
    refs.write_text(refs.read_text() + "\nimport nixlet.engine.plan  # points up\n")
    errors = tmp_path / "src" / "nixlet" / "values" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport nixlet.values.hashing  # not a leaf\n")
    done = _lint(tmp_path)
    assert done.returncode != 0
    assert "nixlet.values.refs -> nixlet.engine.plan" in done.stdout
    assert "nixlet.values.errors is not allowed to import nixlet.values.hashing" in done.stdout
