"""After a failed build, a post-mortem debugger starts in the user's code, not in nixlet's.

``realize`` raises a ``BuildError`` that carries the traceback of what the user's code
raised, so the deepest frame, where ``pdb.post_mortem`` and IPython's ``%debug`` start, is
the frame of the build function (through ``build_wrapper``) or of the realizer (a plain
one), with its local variables. Checked three ways: by walking the traceback, with a real
``pdb.Pdb`` reading commands, and with ``%debug`` in a real IPython shell in a fresh
process.
"""

from __future__ import annotations

import io
import os
import pdb
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType, FunctionType, TracebackType

import pytest

import nixlet as nx

Stage = Callable[[nx.Manager], nx.DRef]


def failing_build(b: nx.Build) -> None:
    """A build function that fails in its own frame, with a local worth inspecting."""
    secret = "-".join(["build", "local"])  # the value is not in the source: only a live frame
    count = len(secret) * 0
    (nx.build_outpath(b) / "ratio.txt").write_text(str(1 / count))


def failing_realizer(step: nx.BuildStep) -> Sequence[Path]:
    """A plain realizer (no build_wrapper) that fails in its own frame."""
    secret = "-".join(["realizer", "local"])
    raise RuntimeError(f"no output for {step.dref.name} ({len(secret)})")


def wrapped(m: nx.Manager) -> nx.DRef:
    """A stage built by ``build_wrapper(failing_build)``."""
    return nx.mkdrv(m, {"name": "wrapped"}, nx.match_only(), nx.build_wrapper(failing_build))


def plain(m: nx.Manager) -> nx.DRef:
    """A stage built by the plain realizer ``failing_realizer``."""
    return nx.mkdrv(m, {"name": "plain"}, nx.match_only(), failing_realizer)


#: (stage, the user's function where a debugger must start, the value of its ``secret``).
CASES = [
    pytest.param(wrapped, failing_build, "build-local", id="build_wrapper"),
    pytest.param(plain, failing_realizer, "realizer-local", id="plain-realizer"),
]


def _deepest(tb: TracebackType | None) -> FrameType:
    """The last frame of a traceback: where ``pdb.post_mortem`` starts."""
    assert tb is not None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame


def _build_error(stage: Stage) -> nx.BuildError:
    """Realize ``stage`` and return the BuildError it raises."""
    with pytest.raises(nx.BuildError) as info:
        nx.realize(nx.instantiate(stage))
    return info.value


@pytest.mark.parametrize(("stage", "user_fn", "secret"), CASES)
def test_the_deepest_frame_is_the_users_function(
    store: nx.Store, stage: Stage, user_fn: FunctionType, secret: str
) -> None:
    """The BuildError's traceback ends in the user's function, with its locals, and the
    frames above it include realize's: the whole path from the call to the failure."""
    error = _build_error(stage)
    frame = _deepest(error.__traceback__)
    assert frame.f_code is user_fn.__code__
    assert frame.f_locals["secret"] == secret
    names = []
    tb = error.__traceback__
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "realize_many" in names and "build_step" in names


@pytest.mark.parametrize(("stage", "user_fn", "secret"), CASES)
def test_pdb_post_mortem_starts_in_the_users_function(
    store: nx.Store, stage: Stage, user_fn: FunctionType, secret: str
) -> None:
    """A real ``pdb.Pdb``, started as ``pdb.post_mortem`` starts it, prints the user's
    local when asked ``p secret``, and ``where`` marks the user's function as current."""
    error = _build_error(stage)
    out = io.StringIO()
    debugger = pdb.Pdb(stdin=io.StringIO("p secret\nwhere\nq\n"), stdout=out)
    debugger.reset()
    debugger.interaction(None, error.__traceback__)  # what pdb.post_mortem(tb) does
    assert repr(secret) in out.getvalue()
    current = [line for line in out.getvalue().splitlines() if line.startswith("> ")]
    name = user_fn.__name__
    assert current and all(line.endswith(f"{name}()") for line in current), out.getvalue()


#: A user's IPython session: define the stage in a cell, realize it (it fails), then run
#: ``%debug`` (which reads its commands from stdin). It prints where ``sys.last_traceback``
#: ends, the traceback ``%debug`` uses.
IPYTHON_SESSION = """\
import sys
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
shell.run_cell("import nixlet as nx; nx.store_initialize(" + repr(sys.argv[1]) + ")")
shell.run_cell('''
def failing_build(b):
    secret = "-".join(["build", "local"])
    count = len(secret) * 0
    (nx.build_outpath(b) / "ratio.txt").write_text(str(1 / count))

def failing_realizer(step):
    secret = "-".join(["realizer", "local"])
    raise RuntimeError("no output for " + step.dref.name)

def wrapped(m):
    return nx.mkdrv(m, {"name": "wrapped"}, nx.match_only(), nx.build_wrapper(failing_build))

def plain(m):
    return nx.mkdrv(m, {"name": "plain"}, nx.match_only(), failing_realizer)
''')
result = shell.run_cell("nx.realize(nx.instantiate(" + sys.argv[2] + "))")
print("error:", type(result.error_in_exec).__name__)
tb = sys.last_traceback
while tb.tb_next is not None:
    tb = tb.tb_next
print("last frame:", tb.tb_frame.f_code.co_name, tb.tb_frame.f_locals.get("secret"))
shell.run_line_magic("debug", "")
"""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.parametrize(("stage", "user_fn", "secret"), CASES)
def test_ipython_debug_starts_in_the_users_function(
    tmp_path: Path, stage: Stage, user_fn: FunctionType, secret: str
) -> None:
    """In a real IPython shell, a cell whose realize fails leaves ``sys.last_traceback``
    ending in the user's function, and ``%debug`` prints the user's local there."""
    env = {k: v for k, v in os.environ.items() if k not in ("NIXLET_STORE", "NIXLET_QUIET")}
    args = [sys.executable, "-c", IPYTHON_SESSION, str(tmp_path / "store"), stage.__name__]
    done = subprocess.run(
        args, input="p secret\nq\n", env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = _ANSI.sub("", done.stdout)
    name = user_fn.__name__
    assert "error: BuildError" in out
    assert f"last frame: {name} {secret}" in out
    assert f"ipdb> {secret!r}" in out or f'ipdb> "{secret}"' in out, out
