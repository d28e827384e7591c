"""``realize``'s progress lines, seen as a user sees them: a script runs in a real
pseudo-terminal (its stderr is a TTY) or with its stderr piped, and the test reads what it
printed. By default a terminal gets one "nixlet: building" line per build; a pipe, or
``NIXLET_QUIET=1``, or ``progress=False`` gets none, and ``progress=True`` prints to a pipe
too."""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
from pathlib import Path

import pytest

#: Realizes two stages (``up``, then ``down`` which depends on it) in the store given as
#: argv[1], with ``progress`` chosen by argv[2]; prints how many realizations it built, so a
#: silent run is known to have built.
SCRIPT = """\
import sys
import nixlet as nx

def write(b):
    (nx.build_outpath(b) / "n.txt").write_text(str(nx.build_cattrs(b).n))

def pair(m):
    up = nx.mkdrv(m, {"name": "up", "n": 1}, nx.match_only(), nx.build_wrapper(write))
    return nx.mkdrv(m, {"name": "down", "n": 2, "up": up}, nx.match_only(),
                    nx.build_wrapper(write))

nx.store_initialize(sys.argv[1])
progress = {"default": None, "on": True, "off": False}[sys.argv[2]]
before = len(nx.allrrefs())
nx.realize(nx.instantiate(pair), progress=progress)
print(f"realized: built {len(nx.allrrefs()) - before}")
"""

#: What ``realize`` prints before each build.
BUILDING = re.compile(r"nixlet: building (?P<name>\w+) \(dref:[a-z0-9]+-(?P=name)\)")

#: A hang guard only: the script takes well under a second.
HANG_GUARD = 60.0


@pytest.fixture
def script(tmp_path: Path) -> Path:
    """The script, in a file so that the code fingerprint finds its functions' source."""
    path = tmp_path / "realize_two.py"
    path.write_text(SCRIPT)
    return path


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without nixlet's variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("NIXLET_QUIET", "NIXLET_STORE")}
    return {**env, **extra}


def _under_pty(args: list[str], env: dict[str, str]) -> str:
    """Run ``args`` with stdin, stdout and stderr on a new pseudo-terminal; return all it
    wrote there (line ends as the terminal sends them, ``\\r\\n``)."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env)
    finally:
        os.close(slave)  # the child holds its own copies; EOF comes when it exits
    chunks: list[bytes] = []
    # A selector (epoll), not select(): a long test run may hold descriptors above 1024.
    selector = selectors.DefaultSelector()
    selector.register(master, selectors.EVENT_READ)
    try:
        while True:
            ready = selector.select(HANG_GUARD)
            if not ready:
                proc.kill()
                pytest.fail(f"{args} hung; it wrote {b''.join(chunks)!r}")
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO on Linux: the last slave descriptor closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    output = b"".join(chunks).decode()
    assert proc.wait(timeout=HANG_GUARD) == 0, output
    return output


def _piped(args: list[str], env: dict[str, str]) -> tuple[str, str]:
    """Run ``args`` with stdout and stderr on pipes; return (stdout, stderr)."""
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def _building(output: str) -> list[str]:
    """The names in the progress lines of ``output``, in order."""
    return [m.group("name") for m in BUILDING.finditer(output)]


def _built(output: str) -> int:
    """How many realizations the script says it built."""
    (count,) = re.findall(r"realized: built (\d+)", output)
    return int(count)


def test_a_terminal_gets_one_line_per_build(script: Path, tmp_path: Path) -> None:
    """Under a pseudo-terminal, the default prints a line per build, upstream first, and
    none when the second run finds everything built."""
    args = [sys.executable, str(script), str(tmp_path / "store"), "default"]
    first = _under_pty(args, _env())
    assert _building(first) == ["up", "down"] and _built(first) == 2
    lines = [line for line in first.splitlines() if "nixlet:" in line]
    assert all(BUILDING.fullmatch(line) for line in lines), lines  # nothing else, whole lines
    second = _under_pty(args, _env())
    assert _building(second) == [] and _built(second) == 0


def test_piped_stderr_stays_quiet(script: Path, tmp_path: Path) -> None:
    """With stderr on a pipe (a log file, CI, ``2>&1 | tee``), the default prints nothing."""
    args = [sys.executable, str(script), str(tmp_path / "store"), "default"]
    stdout, stderr = _piped(args, _env())
    assert _built(stdout) == 2
    assert stderr == ""


def test_nixlet_quiet_silences_a_terminal(script: Path, tmp_path: Path) -> None:
    """``NIXLET_QUIET=1`` turns the default off even on a terminal."""
    args = [sys.executable, str(script), str(tmp_path / "store"), "default"]
    output = _under_pty(args, _env(NIXLET_QUIET="1"))
    assert _built(output) == 2
    assert "nixlet:" not in output


def test_progress_false_silences_a_terminal(script: Path, tmp_path: Path) -> None:
    """``progress=False`` prints nothing on a terminal."""
    args = [sys.executable, str(script), str(tmp_path / "store"), "off"]
    output = _under_pty(args, _env())
    assert _built(output) == 2
    assert "nixlet:" not in output


def test_progress_true_prints_to_a_pipe(script: Path, tmp_path: Path) -> None:
    """``progress=True`` prints a line per build to stderr even when it is a pipe, and even
    under ``NIXLET_QUIET``: the argument wins over the environment."""
    args = [sys.executable, str(script), str(tmp_path / "store"), "on"]
    stdout, stderr = _piped(args, _env(NIXLET_QUIET="1"))
    assert _built(stdout) == 2
    assert _building(stderr) == ["up", "down"]
    assert "nixlet:" not in stdout  # progress goes to stderr, never into the program's output
