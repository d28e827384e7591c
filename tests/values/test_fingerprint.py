"""The code fingerprint: editing what a build function does renames its derivation;
comments, docstrings and formatting do not; ``version=`` replaces the fingerprint; and the
fingerprint does not depend on ``PYTHONHASHSEED``.

"Editing the source" is simulated by writing variants of a small module into ``tmp_path``
and importing each under a fresh module name.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import nixlet as nx

BASE = """
import nixlet as nx

FACTOR = 3


def helper(x):
    return x + 1


def build(b):
    out = nx.build_outpath(b)
    (out / "n.txt").write_text(str(helper(FACTOR) * 2))


def stage(m, version=None):
    return nx.mkdrv(
        m, {"name": "fp"}, nx.match_only(), nx.build_wrapper(build), version=version
    )
"""


def load(tmp_path: Path, source: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import ``source`` as a fresh module from its own file."""
    name = f"nixlet_fp_{uuid.uuid4().hex}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def dref(store: nx.Store, module: ModuleType, version: str | None = None) -> nx.DRef:
    """The DRef the module's stage declares."""
    return nx.instantiate(module.stage, version, store=store).result


@pytest.fixture
def base(store: nx.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> nx.DRef:
    """The DRef of the unedited module."""
    return dref(store, load(tmp_path, BASE, monkeypatch))


def variant(
    store: nx.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str
) -> nx.DRef:
    """The DRef of the module with ``old`` replaced by ``new`` (which must occur)."""
    assert old in BASE, old
    return dref(store, load(tmp_path, BASE.replace(old, new), monkeypatch))


def test_same_source_in_another_file_gives_the_same_dref(
    store: nx.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base: nx.DRef
) -> None:
    """The baseline: the same code imported again (another file, another module name)
    names the same derivation."""
    assert dref(store, load(tmp_path, BASE, monkeypatch)) == base


EDITS_THAT_COUNT = [
    ("another constant", "* 2))", "* 3))"),
    ("another expression", "helper(FACTOR) * 2", "helper(FACTOR) + 2"),
    ("another file name", '"n.txt"', '"m.txt"'),
    ("a changed helper", "return x + 1", "return x + 2"),
    ("a changed module constant", "FACTOR = 3", "FACTOR = 4"),
    ("a module constant of another type", "FACTOR = 3", "FACTOR = 3.0"),
    ("an extra statement", '    (out / "n.txt")', '    print("hi")\n    (out / "n.txt")'),
]


@pytest.mark.parametrize(
    ("label", "old", "new"), EDITS_THAT_COUNT, ids=[e[0] for e in EDITS_THAT_COUNT]
)
def test_edits_of_behaviour_change_the_dref(
    store: nx.Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    base: nx.DRef,
    label: str,
    old: str,
    new: str,
) -> None:
    """Editing what the build function does, what it calls in its module, or a module
    constant it reads gives a new DRef."""
    assert variant(store, tmp_path, monkeypatch, old, new) != base


EDITS_THAT_DO_NOT_COUNT = [
    ("a comment", "def build(b):\n", "def build(b):\n    # writes the number\n"),
    ("a trailing comment", "* 2))", "* 2))  # doubled"),
    ("a docstring", "def build(b):\n", 'def build(b):\n    """Write n.txt."""\n'),
    ("a helper docstring", "def helper(x):\n", 'def helper(x):\n    """One more."""\n'),
    ("blank lines", "def build(b):\n", "\n\n\ndef build(b):\n"),
    ("line breaks", "str(helper(FACTOR) * 2)", "str(\n        helper(FACTOR)\n        * 2\n    )"),
    ("quotes", '"n.txt"', "'n.txt'"),
    ("spacing", "helper(FACTOR) * 2", "helper( FACTOR )*2"),
    ("redundant parentheses", "helper(FACTOR) * 2", "(helper(FACTOR) * 2)"),
    ("an unrelated function", "def stage(m", "def unrelated():\n    return 42\n\n\ndef stage(m"),
    ("an unrelated constant", "FACTOR = 3", "FACTOR = 3\nOTHER = 99"),
    ("the stage's own code", '{"name": "fp"}, nx.match_only()', '{"name": "fp"}, nx.match_all()'),
]


@pytest.mark.parametrize(
    ("label", "old", "new"), EDITS_THAT_DO_NOT_COUNT, ids=[e[0] for e in EDITS_THAT_DO_NOT_COUNT]
)
def test_cosmetic_edits_keep_the_dref(
    store: nx.Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    base: nx.DRef,
    label: str,
    old: str,
    new: str,
) -> None:
    """Comments, docstrings, formatting, and code the build does not use leave the DRef
    as it was (the matcher is not part of the identity either)."""
    assert variant(store, tmp_path, monkeypatch, old, new) == base


CONSTANTS = [
    ("int", "3", "4"),
    ("str", '"a"', '"b"'),
    ("tuple", "(1, 2)", "(1, 3)"),
    ("list", "[1, 2]", "[1, 3]"),
    ("dict", '{"k": 1}', '{"k": 2}'),
    ("frozenset", "frozenset({1, 2})", "frozenset({1, 3})"),
    ("set", "{1, 2}", "{1, 3}"),
    ("dict with int keys", '{1: "a"}', '{1: "b"}'),
    ("nested", '{"k": [1, (2, 3)]}', '{"k": [1, (2, 4)]}'),
    ("path", 'Path("/data/a")', 'Path("/data/b")'),
]


@pytest.mark.parametrize(("kind", "old", "new"), CONSTANTS, ids=[c[0] for c in CONSTANTS])
def test_changed_module_constants_of_every_kind_change_the_dref(
    store: nx.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, old: str, new: str
) -> None:
    """A module-level constant the build reads counts by value, whatever its JSON-like
    or container type."""
    template = """
    from pathlib import Path

    import nixlet as nx

    SETTING = {value}


    def build(b):
        (nx.build_outpath(b) / "s.txt").write_text(repr(SETTING))


    def stage(m, version=None):
        return nx.mkdrv(m, {{"name": "c"}}, nx.match_only(), nx.build_wrapper(build))
    """
    a = dref(store, load(tmp_path, template.format(value=old), monkeypatch))
    b = dref(store, load(tmp_path, template.format(value=new), monkeypatch))
    assert a != b


INDIRECT = """
import nixlet as nx

LIMIT = 3


def ping(n):
    return 0 if n <= 0 else pong(n - 1)


def pong(n):
    return ping(n)


def build(b):
    def inner():
        return [i * LIMIT for i in range(2)]

    (nx.build_outpath(b) / "o.txt").write_text(str([inner(), ping(4)]))


def stage(m, version=None):
    return nx.mkdrv(m, {"name": "ind"}, nx.match_only(), nx.build_wrapper(build))
"""


@pytest.mark.parametrize(
    ("old", "new"),
    [("LIMIT = 3", "LIMIT = 4"), ("return ping(n)", "return ping(n - 1)")],
    ids=["constant read in a nested function", "edit of a mutually recursive helper"],
)
def test_indirect_uses_count(
    store: nx.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str
) -> None:
    """A constant read only inside a nested function or comprehension, and a helper
    reached through mutual recursion, are part of the fingerprint (and recursion ends)."""
    base = dref(store, load(tmp_path, INDIRECT, monkeypatch))
    assert dref(store, load(tmp_path, INDIRECT, monkeypatch)) == base
    assert dref(store, load(tmp_path, INDIRECT.replace(old, new), monkeypatch)) != base


# ---------------------------------------------------------------- closures and wrappers


def _make_build(k: int) -> Any:
    def build(b: nx.Build) -> None:
        (nx.build_outpath(b) / "k.txt").write_text(str(k))

    return build


def _closure_dref(store: nx.Store, fn: Any) -> nx.DRef:
    m = nx.Manager(store)
    return nx.mkdrv(m, {"name": "closure"}, nx.match_only(), nx.build_wrapper(fn))


def test_changed_closure_variable_changes_the_dref(store: nx.Store) -> None:
    """The same nested function closing over another value names another derivation."""
    assert _closure_dref(store, _make_build(1)) != _closure_dref(store, _make_build(2))
    assert _closure_dref(store, _make_build(1)) == _closure_dref(store, _make_build(1))


def _partial_target(b: nx.Build, k: int) -> None:
    (nx.build_outpath(b) / "k.txt").write_text(str(k))


def _other_partial_target(b: nx.Build, k: int) -> None:
    (nx.build_outpath(b) / "k.txt").write_text(str(k + 1))


def test_partial_build_functions_are_fingerprinted(store: nx.Store) -> None:
    """A build function given as ``functools.partial`` counts by the function it wraps
    and by its bound arguments: another function or another argument renames it."""
    p1 = functools.partial(_partial_target, k=1)
    assert _closure_dref(store, p1) != _closure_dref(store, functools.partial(_partial_target, k=2))
    assert _closure_dref(store, p1) != _closure_dref(
        store, functools.partial(_other_partial_target, k=1)
    )


def test_nouts_and_wrapper_follow_the_function(store: nx.Store) -> None:
    """build_wrapper is transparent: the DRef follows the wrapped function's code."""
    assert _closure_dref(store, _partial_target) != _closure_dref(store, _other_partial_target)


# ---------------------------------------------------------------- version


def test_version_replaces_the_fingerprint(
    store: nx.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``version=``, editing the code keeps the DRef; changing the version changes it;
    and a versioned DRef differs from the fingerprinted one."""
    a = load(tmp_path, BASE, monkeypatch)
    b = load(tmp_path, BASE.replace("return x + 1", "return x + 5"), monkeypatch)
    assert dref(store, a, "1") == dref(store, b, "1")
    assert dref(store, a, "1") != dref(store, a, "2")
    assert dref(store, a, "1") != dref(store, a)
    seven = nx.instantiate(a.stage, "7", store=store)
    assert seven.derivation(seven.result).code == "version:7"


def test_version_must_be_a_string(store: nx.Store) -> None:
    """A non-str version is refused with ConfigError."""
    m = nx.Manager(store)
    with pytest.raises(nx.ConfigError):
        nx.mkdrv(m, {}, nx.match_only(), nx.build_wrapper(_partial_target), version=1)  # type: ignore[arg-type]


def test_fingerprint_is_recorded_as_code(store: nx.Store) -> None:
    """Without a version the code record is ``fingerprint:<sha256 hex>``."""
    c = nx.instantiate(
        lambda m: nx.mkdrv(m, {"name": "c"}, nx.match_only(), nx.build_wrapper(_make_build(3)))
    )
    code = c.derivation(c.result).code
    assert code.startswith("fingerprint:") and len(code) == len("fingerprint:") + 64
    nx.realize(c)
    assert (nx.dref2path(c.result) / "code").read_text() == code


# ---------------------------------------------------------------- PYTHONHASHSEED

SEEDED_MODULE = """
import nixlet as nx

LABELS = frozenset({"cat", "dog", "eel", "fox", "gnu"})
TABLE = {"zeta": 1, "alpha": 2, "mid": (3, "x")}


def classify(word):
    return word in {"cat", "dog", "eel"} or word in LABELS


def build(b):
    words = sorted(TABLE) + sorted(LABELS)
    (nx.build_outpath(b) / "o.txt").write_text(str([classify(w) for w in words]))


def stage(m):
    return nx.mkdrv(m, {"name": "seeded"}, nx.match_only(), nx.build_wrapper(build))
"""

CHILD = """
import importlib.util, sys
import nixlet as nx
nx.store_initialize(sys.argv[1])
spec = importlib.util.spec_from_file_location("seeded", sys.argv[2])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(nx.instantiate(module.stage).result)
"""

INLINE = """
import sys
import nixlet as nx
LABELS = {"cat", "dog", "eel", "fox", "gnu", "hen", "owl"}
def build(b):
    word = "cat"
    hit = word in {"cat", "dog", "eel", "fox", "gnu", "hen", "owl"}
    (nx.build_outpath(b) / "o.txt").write_text(str(hit))
nx.store_initialize(sys.argv[1])
print(nx.instantiate(lambda m: nx.mkdrv(
    m, {"name": "inline"}, nx.match_only(), nx.build_wrapper(build))).result)
"""


def _run(args: list[str], seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    env.pop("NIXLET_STORE", None)
    done = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_fingerprint_ignores_pythonhashseed(tmp_path: Path) -> None:
    """Two child processes with different hash seeds give a module's stage (sets,
    frozensets and dicts in its code and constants) the same DRef."""
    module = tmp_path / "seeded.py"
    module.write_text(SEEDED_MODULE)
    store = str(tmp_path / "store")
    results = {_run(["-c", CHILD, store, str(module)], seed) for seed in ("1", "2", "3")}
    assert len(results) == 1, results
    nx.DRef.parse(results.pop())


def test_sourceless_fingerprint_ignores_pythonhashseed(tmp_path: Path) -> None:
    """A build function typed into ``python -c`` (no source file: the bytecode stands in)
    gets the same DRef under different hash seeds, even with a set literal in its code."""
    store = str(tmp_path / "store")
    results = {_run(["-c", INLINE, store], seed) for seed in ("1", "2", "3", "4")}
    assert len(results) == 1, results
