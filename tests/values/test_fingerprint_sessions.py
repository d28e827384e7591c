"""One stage, one DRef, wherever it is typed; and nixlet's own functions count by their
public name.

Each test runs fresh interpreters (``sys.executable``, the venv's, where nixlet is installed
editable) on files written into ``tmp_path``: a project folder with a user module
(``helpers.py``) on ``PYTHONPATH``, and the same stage run as a script, as IPython cells, as
notebook-style cells registered in ``linecache``, at the plain ``python`` prompt on a real
pseudo-terminal, and through ``python -c``. Where the source can be found the DRef is the
script's; where it cannot, a ``NixletWarning`` names the function once and the bytecode
stands in. A copy of the nixlet package with a public function moved to another private
module (and its body rewritten) gives a stage that calls it the same DRef.
"""

from __future__ import annotations

import ast
import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nixlet as nx

HANG_GUARD = 120.0
REPO = Path(__file__).resolve().parents[2]
DREF_LINE = re.compile(r"DREF (dref:[a-z2-7]{32}-[\w.+-]+)")

HELPERS = """\
SCALE = 3


def prepare(x):
    return x * SCALE
"""

#: The stage, as two cells: definitions (a class, a helper of another user module, a
#: module constant, a set literal), then the instantiation.
DEFINITIONS = """\
import nixlet as nx
import helpers

LABELS = {"cat", "dog", "eel", "fox"}


class Model:
    def __init__(self, k):
        self.k = k

    def predict(self, x):
        return helpers.prepare(x) + self.k


def train(b):
    score = Model(1).predict(2) + len(LABELS)
    (nx.build_outpath(b) / "y.txt").write_text(str(score))


def stage(m):
    return nx.mkdrv(m, {"name": "session"}, nx.match_only(), nx.build_wrapper(train))
"""
SHOW = 'print("DREF", nx.instantiate(stage).result)\n'


def project(tmp_path: Path) -> Path:
    """A project folder holding the user module ``helpers``."""
    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    (folder / "helpers.py").write_text(HELPERS)
    return folder


def child_env(tmp_path: Path, *path: Path, seed: str = "0") -> dict[str, str]:
    """The environment of a child interpreter: its own store, ``path`` importable."""
    nx.store_initialize(tmp_path / "store")
    env = {**os.environ, "PYTHONHASHSEED": seed, "NIXLET_STORE": str(tmp_path / "store")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    env["PYTHON_BASIC_REPL"] = "1"  # 3.13's new REPL keeps typed source; test the classic one
    env.pop("PYTHONWARNINGS", None)
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a child interpreter to the end; it must succeed."""
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=HANG_GUARD, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def drefs(output: str) -> list[nx.DRef]:
    """The DRefs a child printed as ``DREF <dref>`` lines."""
    return [nx.DRef.parse(m.group(1)) for m in DREF_LINE.finditer(output)]


def script_dref(tmp_path: Path, seed: str = "0") -> nx.DRef:
    """The stage's DRef from ``python script.py``, with no warning."""
    folder = project(tmp_path)
    (folder / "script.py").write_text(DEFINITIONS + "\n\n" + SHOW)
    done = run([sys.executable, "script.py"], folder, child_env(tmp_path, folder, seed=seed))
    assert "NixletWarning" not in done.stderr, done.stderr
    (dref,) = drefs(done.stdout)
    return dref


# ---------------------------------------------------------------- where the source is found

IPYTHON_CELLS = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
for cell in json.loads(open(sys.argv[1]).read()):
    shell.run_cell(cell, store_history=True).raise_error()
"""

NOTEBOOK_CELLS = """
import json, linecache, os, sys, tempfile, types

# As a Jupyter kernel does: each cell is compiled under a file name of its own that exists
# nowhere on disk (ipykernel's /tmp/ipykernel_<pid>/<hash>.py), its text registered in
# linecache, and run in the __main__ namespace of a module with no file.
main = types.ModuleType("__main__")
sys.modules["__main__"] = main
folder = os.path.join(tempfile.gettempdir(), f"ipykernel_{os.getpid()}")
for number, cell in enumerate(json.loads(open(sys.argv[1]).read())):
    name = os.path.join(folder, f"{number}7dd3a1e.py")
    linecache.cache[name] = (len(cell), None, cell.splitlines(True), name)
    exec(compile(cell, name, "exec"), vars(main))
"""


def test_script_ipython_and_notebook_cells_give_one_dref(tmp_path: Path) -> None:
    """The same stage (a class, a helper of a user module, a set constant) gets the same
    DRef as a script under two hash seeds, as cells of a real IPython shell, through the
    ``ipython`` command, and as notebook-style cells kept in ``linecache``; none warns."""
    folder = project(tmp_path)
    expected = script_dref(tmp_path, seed="1")
    assert script_dref(tmp_path, seed="2") == expected
    cells = tmp_path / "cells.json"
    cells.write_text(json.dumps([DEFINITIONS, SHOW]))
    env = child_env(tmp_path, folder)
    runners = {
        "InteractiveShell": [sys.executable, "-c", IPYTHON_CELLS, str(cells)],
        "ipython -c": [
            str(Path(sys.executable).with_name("ipython")),
            "--no-banner",
            "--quick",
            "-c",
            DEFINITIONS + "\n" + SHOW,
        ],
        "notebook": [sys.executable, "-c", NOTEBOOK_CELLS, str(cells)],
    }
    for label, args in runners.items():
        done = run(args, folder, env)
        assert "NixletWarning" not in done.stdout + done.stderr, (label, done.stderr)
        assert drefs(done.stdout) == [expected], (label, done.stdout, done.stderr)


def test_editing_a_user_module_renames_the_script_stage(tmp_path: Path) -> None:
    """The baseline the other tests lean on can fail: editing the helper module the
    script's class calls gives the script another DRef."""
    before = script_dref(tmp_path)
    (project(tmp_path) / "helpers.py").write_text(HELPERS.replace("x * SCALE", "x * SCALE + 1"))
    folder = tmp_path / "project"
    done = run([sys.executable, "script.py"], folder, child_env(tmp_path, folder))
    assert drefs(done.stdout) != [before]


# ---------------------------------------------------------------- where it is not

TYPED = """\
import nixlet as nx
import helpers
def train(b):
    (nx.build_outpath(b) / "y.txt").write_text(str(helpers.prepare(2)))

def stage(m):
    return nx.mkdrv(m, {"name": "typed"}, nx.match_only(), nx.build_wrapper(train))

print("DREF", nx.instantiate(stage).result)
print("DREF", nx.instantiate(stage).result)
"""


def assert_warned_once_about_train(output: str) -> None:
    """One NixletWarning, naming ``__main__.train``, the Python version and the ways out."""
    assert output.count("NixletWarning") == 1, output
    warning = output[output.index("NixletWarning") :]
    assert "__main__.train" in warning
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in warning
    assert "version=" in warning


def run_on_a_terminal(args: list[str], lines: str, cwd: Path, env: dict[str, str]) -> str:
    """Run ``args`` with a pseudo-terminal as stdin, stdout and stderr, type ``lines``, and
    return everything it wrote (the terminal echoes the typed lines too)."""
    primary, secondary = os.openpty()
    proc = subprocess.Popen(
        args, stdin=secondary, stdout=secondary, stderr=secondary, cwd=cwd, env=env
    )
    os.close(secondary)
    output = b""
    try:
        os.write(primary, lines.encode())
        deadline = time.monotonic() + HANG_GUARD
        # A selector (epoll), not select(): in a long test run this process may hold
        # descriptors above 1024, which select() refuses.
        selector = selectors.DefaultSelector()
        selector.register(primary, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            ready = selector.select(1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        proc.wait(timeout=HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)
    return output.decode(errors="replace").replace("\r\n", "\n")


def test_the_plain_prompt_warns_once_per_function(tmp_path: Path) -> None:
    """Typed at an interactive ``python`` prompt on a terminal, the build function has no
    source: instantiating twice warns once, naming it, and gives one DRef both times."""
    folder = project(tmp_path)
    output = run_on_a_terminal(
        [sys.executable, "-q", "-i"], TYPED + "exit()\n", folder, child_env(tmp_path, folder)
    )
    found = drefs(output)
    assert len(found) == 2 and found[0] == found[1], output
    assert_warned_once_about_train(output)


def test_python_c_warns_once_per_function(tmp_path: Path) -> None:
    """Through ``python -c`` the build function has no source either: one warning, one
    DRef for both instantiations."""
    folder = project(tmp_path)
    done = run([sys.executable, "-c", TYPED], folder, child_env(tmp_path, folder))
    found = drefs(done.stdout)
    assert len(found) == 2 and found[0] == found[1], done.stdout
    assert_warned_once_about_train(done.stderr)


def sourceless_build(name: str) -> object:
    """A build function made by ``exec`` of a string: no source to find."""
    namespace: dict[str, object] = {"__name__": "typed_here", "nx": nx}
    exec(f"def {name}(b):\n    (nx.build_outpath(b) / 'x').write_text('{name}')\n", namespace)
    return namespace[name]


def test_exec_warns_once_per_function_and_version_silences_it(store: nx.Store) -> None:
    """Each sourceless function warns once, however often it is fingerprinted, naming its
    qualified name; another function warns for itself; ``version=`` needs no fingerprint
    and so no warning."""
    first, second = sourceless_build("first"), sourceless_build("second")

    def stage(m: nx.Manager, fn: object, version: str | None = None) -> nx.DRef:
        return nx.mkdrv(m, {"name": "x"}, nx.match_only(), nx.build_wrapper(fn), version=version)  # type: ignore[arg-type]

    with pytest.warns(nx.NixletWarning) as caught:
        a = nx.instantiate(stage, first).result
        assert nx.instantiate(stage, first).result == a
        b = nx.instantiate(stage, second).result
    assert a != b
    messages = [str(w.message) for w in caught.list]
    assert len(messages) == 2, messages
    assert "typed_here.first" in messages[0] and "typed_here.second" in messages[1]
    third = sourceless_build("third")
    nx.instantiate(stage, third, "1")  # filterwarnings = error: a warning would fail here


# ---------------------------------------------------------------- nixlet's own functions

USES_NIXLET = """\
import sys
import nixlet as nx
from nixlet import build_outpaths


def train(b):
    for out in nx.build_outpaths(b) + build_outpaths(b):
        (out / "y.txt").write_text("y")


def stage(m):
    return nx.mkdrv(m, {"name": "moved"}, nx.match_only(), nx.build_wrapper(train))


print("DREF", nx.instantiate(stage).result)
print("DEFINED", build_outpaths.__code__.co_filename, build_outpaths.__module__)
print("PACKAGE", nx.__file__)
"""

MOVED = '''\
"""build_outpaths, moved here from nixlet.engine.build (by a test)."""

from __future__ import annotations


def build_outpaths(b):
    """All output folders of the build, written another way."""
    return [*b.outpaths]
'''


def copy_with_build_outpaths_moved(tmp_path: Path) -> Path:
    """A copy of the nixlet package in which ``build_outpaths`` lives in a new private
    module, ``nixlet.engine.moved``, with another body; ``nixlet.engine.build`` imports it
    from there. Returns the folder to put on ``PYTHONPATH``."""
    root = tmp_path / "moved-copy"
    shutil.copytree(REPO / "src" / "nixlet", root / "nixlet")
    build = root / "nixlet" / "engine" / "build.py"
    source = build.read_text()
    (definition,) = [
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef) and node.name == "build_outpaths"
    ]
    lines = source.splitlines(keepends=True)
    del lines[definition.lineno - 1 : definition.end_lineno]
    lines.append("\nfrom nixlet.engine.moved import build_outpaths  # noqa: E402\n")
    build.write_text("".join(lines))
    (root / "nixlet" / "engine" / "moved.py").write_text(MOVED)
    return root


def test_a_nixlet_function_moved_between_private_modules_keeps_the_dref(tmp_path: Path) -> None:
    """A stage calling ``nx.build_outpaths`` (and the same imported by name) gets the same
    DRef from a copy of nixlet where that function was moved to another private module and
    rewritten: nixlet's functions count by their public name, ``nixlet.build_outpaths``,
    never by their code or the module that defines them."""
    folder = project(tmp_path)
    (folder / "uses_nixlet.py").write_text(USES_NIXLET)
    original = run([sys.executable, "uses_nixlet.py"], folder, child_env(tmp_path, folder))
    copy = copy_with_build_outpaths_moved(tmp_path)
    moved = run([sys.executable, "uses_nixlet.py"], folder, child_env(tmp_path, copy, folder))
    # The copy really is the package that ran, and the function really moved.
    assert f"PACKAGE {copy}" in moved.stdout, moved.stdout
    assert "engine/moved.py nixlet" in moved.stdout and "engine/build.py nixlet" in original.stdout
    assert drefs(moved.stdout) == drefs(original.stdout) != []
