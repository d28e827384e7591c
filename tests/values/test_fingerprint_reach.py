"""What the code fingerprint reaches beyond the build function's own module: the classes it
uses (their methods, constants, bases and fields), the functions, classes and constants of
the user's other modules (read by name or as ``module.attribute``, transitively, through
recursion), and not the code of libraries or of nixlet, which count by name only.

Each project is written into its own folder of ``tmp_path`` under fresh module names and
imported from there; "editing" a file means writing a second copy with the edit.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

import attrs
import filelock
import pytest

import nixlet as nx
from nixlet.engine import build as nixlet_build
from nixlet.values import fingerprint

#: Writes a project (file name -> source, ``{p}`` standing for a fresh prefix of module
#: names) with optional (file, old, new) edits and imports its ``{p}_main`` module.
Project = Callable[..., ModuleType]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """Imports projects from their own folders; forgets their modules afterwards."""
    prefixes: list[str] = []

    def make(
        files: Mapping[str, str], *edits: tuple[str, str, str], prefix: str | None = None
    ) -> ModuleType:
        prefix = prefix or f"fp{uuid.uuid4().hex[:12]}"
        prefixes.append(prefix)
        root = write_project(tmp_path / prefix, files, prefix, edits)
        monkeypatch.syspath_prepend(str(root))
        return importlib.import_module(f"{prefix}_main")

    yield make
    for name in [n for n in sys.modules if n.startswith(tuple(prefixes))]:
        del sys.modules[name]


def write_project(
    root: Path, files: Mapping[str, str], prefix: str, edits: tuple[tuple[str, str, str], ...]
) -> Path:
    """Write ``files`` under ``root``, each edit's ``old`` (which must occur) replaced."""
    texts = {name: textwrap.dedent(text) for name, text in files.items()}
    for name, old, new in edits:
        assert old in texts[name], (name, old)
        texts[name] = texts[name].replace(old, new)
    for name, text in texts.items():
        path = root / name.replace("{p}", prefix)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("{p}", prefix))
    return root


def dref(store: nx.Store, main: ModuleType, *args: Any) -> nx.DRef:
    """The DRef of the project's stage; no warning may be raised on the way."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return nx.instantiate(main.stage, *args, store=store).result


# ---------------------------------------------------------------- classes

CLASSES = {
    "{p}_main.py": """
        import collections
        import dataclasses
        import enum

        import attrs

        import nixlet as nx


        class Base:
            SCALE = 2

            def scale(self, x):
                return x * self.SCALE


        class Model(Base):
            LAYERS = (4, 8)

            def __init__(self, width):
                self.width = width

            def predict(self, x):
                return self.scale(x) + self.width

            @staticmethod
            def clip(x):
                return min(x, 100)

            @classmethod
            def default(cls):
                return cls(3)

            @property
            def size(self):
                return len(self.LAYERS)


        @dataclasses.dataclass(frozen=True)
        class Settings:
            steps: int = 5
            tags: list = dataclasses.field(default_factory=list)

            def total(self):
                return self.steps * 2


        @attrs.frozen
        class Limits:
            low: int = 0
            high: int = attrs.field(factory=lambda: 9)


        Point = collections.namedtuple("Point", "x y", defaults=(1, 2))


        class Color(enum.Enum):
            RED = 1
            BLUE = 2

            def shade(self):
                return self.value * 10


        def build(b):
            model = Model.default()
            values = [model.predict(1), Model.clip(500), model.size, Settings().total()]
            values += [Limits().high, Point().x, Color.RED.shade()]
            (nx.build_outpath(b) / "m.txt").write_text(str(values))


        def stage(m):
            return nx.mkdrv(m, {"name": "cls"}, nx.match_only(), nx.build_wrapper(build))
    """,
}

CLASS_EDITS_THAT_COUNT = [
    ("a method", "return self.scale(x) + self.width", "return self.scale(x) - self.width"),
    ("a base class's method", "return x * self.SCALE", "return x * self.SCALE * 2"),
    ("a class constant", "LAYERS = (4, 8)", "LAYERS = (4, 16)"),
    ("a base class's constant", "SCALE = 2", "SCALE = 3"),
    ("__init__", "self.width = width", "self.width = width + 1"),
    ("a static method", "return min(x, 100)", "return min(x, 99)"),
    ("a class method", "return cls(3)", "return cls(4)"),
    ("a property", "return len(self.LAYERS)", "return len(self.LAYERS) + 1"),
    (
        "a new method",
        "    @staticmethod\n",
        "    def extra(self):\n        return 1\n\n    @staticmethod\n",
    ),
    ("a dataclass default", "steps: int = 5", "steps: int = 6"),
    ("a dataclass default factory", "default_factory=list", "default_factory=tuple"),
    ("a dataclass method", "return self.steps * 2", "return self.steps * 3"),
    ("an attrs default", "low: int = 0", "low: int = 1"),
    ("an attrs factory", "factory=lambda: 9", "factory=lambda: 8"),
    ("a namedtuple default", "defaults=(1, 2)", "defaults=(5, 2)"),
    ("an enum value", "RED = 1", "RED = 7"),
    ("an enum method", "return self.value * 10", "return self.value * 20"),
]


@pytest.mark.parametrize(
    ("label", "old", "new"), CLASS_EDITS_THAT_COUNT, ids=[e[0] for e in CLASS_EDITS_THAT_COUNT]
)
def test_edits_of_the_classes_a_build_uses_change_the_dref(
    store: nx.Store, project: Project, label: str, old: str, new: str
) -> None:
    """A class the build function uses by name counts by its methods' code (plain, static,
    class methods, properties, ``__init__``), its class constants and its bases; a
    dataclass, attrs class or namedtuple by its fields too; an enum by its members. The
    classes their libraries generate methods for raise no warning."""
    base = dref(store, project(CLASSES))
    assert dref(store, project(CLASSES)) == base
    assert dref(store, project(CLASSES, ("{p}_main.py", old, new))) != base


CLASS_EDITS_THAT_DO_NOT_COUNT = [
    (
        "a method's comment",
        "    def predict(self, x):\n",
        "    def predict(self, x):\n        # fwd\n",
    ),
    (
        "a method's docstring",
        "    def scale(self, x):\n",
        '    def scale(self, x):\n        """x2"""\n',
    ),
    ("a class docstring", "class Model(Base):\n", 'class Model(Base):\n    """A model."""\n\n'),
    ("formatting", "return min(x, 100)", "return min( x,100 )"),
    (
        "an unused class",
        "def build(b):",
        "class Unused:\n    def f(self):\n        return 1\n\n\ndef build(b):",
    ),
]


@pytest.mark.parametrize(
    ("label", "old", "new"),
    CLASS_EDITS_THAT_DO_NOT_COUNT,
    ids=[e[0] for e in CLASS_EDITS_THAT_DO_NOT_COUNT],
)
def test_cosmetic_edits_of_classes_keep_the_dref(
    store: nx.Store, project: Project, label: str, old: str, new: str
) -> None:
    """Comments, docstrings and formatting in a class, and classes the build does not use,
    leave the DRef as it was."""
    base = dref(store, project(CLASSES))
    assert dref(store, project(CLASSES, ("{p}_main.py", old, new))) == base


def test_a_class_changed_at_run_time_is_read_again(
    store: nx.Store, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A class counts as it is when the stage is instantiated: a class constant set, a
    method replaced or added after the class was made renames the derivation, and putting
    the class back gives the first DRef again."""
    main = project(CLASSES)
    base = dref(store, main)
    with monkeypatch.context() as patch:
        patch.setattr(main.Model, "LAYERS", (4, 8, 16))
        assert dref(store, main) != base
    assert dref(store, main) == base
    with monkeypatch.context() as patch:
        patch.setattr(main.Model, "clip", staticmethod(lambda x: x))
        assert dref(store, main) != base
    with monkeypatch.context() as patch:
        patch.setattr(main.Base, "extra", lambda self: 0, raising=False)
        assert dref(store, main) != base
    assert dref(store, main) == base


OBJECTS = {
    "{p}_main.py": """
        import nixlet as nx


        class Trainer:
            RATE = 0.5

            def step(self, x):
                return x * self.RATE

            def build(self, b):
                (nx.build_outpath(b) / "t.txt").write_text(str(self.step(2)))

            def __call__(self, b):
                (nx.build_outpath(b) / "c.txt").write_text(str(self.step(3)))


        TRAINER = Trainer()


        def build(b):
            (nx.build_outpath(b) / "g.txt").write_text(str(TRAINER.step(4)))


        def stage(m, kind):
            realizer = {"global": build, "bound": TRAINER.build, "callable": TRAINER}[kind]
            return nx.mkdrv(m, {"name": kind}, nx.match_only(), nx.build_wrapper(realizer))
    """,
}


@pytest.mark.parametrize("kind", ["global", "bound", "callable"])
def test_methods_reached_through_an_object_count(
    store: nx.Store, project: Project, kind: str
) -> None:
    """An object of the user's class read as a global, a bound method given as the build
    function, and a callable object given as the build function all count by their class:
    editing a method reached only through ``self`` renames the derivation. The object's
    state does not count (it may change while the program runs)."""
    main = project(OBJECTS)
    base = dref(store, main, kind)
    main.TRAINER.history = [1, 2, 3]
    assert dref(store, main, kind) == base
    edited = ("{p}_main.py", "return x * self.RATE", "return x * self.RATE + 1")
    assert dref(store, project(OBJECTS, edited), kind) != base
    constant = ("{p}_main.py", "RATE = 0.5", "RATE = 0.25")
    assert dref(store, project(OBJECTS, constant), kind) != base


DEFAULTS = {
    "{p}_main.py": """
        import nixlet as nx

        K = 2


        def build(b, k=K, *, label="k"):
            (nx.build_outpath(b) / f"{label}.txt").write_text(str(k))


        def stage(m):
            return nx.mkdrv(m, {"name": "d"}, nx.match_only(), nx.build_wrapper(build))
    """,
}


@pytest.mark.parametrize(("old", "new"), [("K = 2", "K = 3"), ('label="k"', 'label="j"')])
def test_default_arguments_count_by_value(
    store: nx.Store, project: Project, old: str, new: str
) -> None:
    """A default argument evaluated from a module constant counts by its value, which the
    function's own source does not show."""
    base = dref(store, project(DEFAULTS))
    assert dref(store, project(DEFAULTS, ("{p}_main.py", old, new))) != base


# ---------------------------------------------------------------- the user's modules

PROJECT = {
    "{p}_helpers.py": """
        import {p}_tools as tools

        SCALE = 3


        def normalise(x):
            return x - 1


        def prepare(x):
            return tools.clamp(normalise(x) * SCALE)


        def scale_up(x):
            return x * 10


        def unrelated():
            return 0
    """,
    "{p}_tools.py": """
        def clamp(x):
            return max(0, min(x, 50))
    """,
    "{p}_pkg/__init__.py": "",
    "{p}_pkg/sub.py": """
        from {p}_helpers import normalise

        OFFSET = 10


        def fn(x):
            return normalise(x) + OFFSET
    """,
    "{p}_pkg/other.py": """
        def thing(x):
            return x
    """,
    "{p}_main.py": """
        import nixlet as nx
        import {p}_helpers as helpers
        import {p}_pkg as pkg
        import {p}_pkg.sub
        from {p}_helpers import scale_up


        def build(b):
            values = [helpers.prepare(2), scale_up(3), pkg.sub.fn(4), helpers.SCALE]
            (nx.build_outpath(b) / "v.txt").write_text(str(values))


        def stage(m):
            return nx.mkdrv(m, {"name": "proj"}, nx.match_only(), nx.build_wrapper(build))
    """,
}

MODULE_EDITS_THAT_COUNT = [
    ("a helper read as module.attribute", "{p}_helpers.py", "* SCALE)", "* SCALE + 1)"),
    ("a helper imported by name", "{p}_helpers.py", "return x * 10", "return x * 11"),
    ("a helper's helper", "{p}_helpers.py", "return x - 1", "return x - 2"),
    ("a helper in a third module", "{p}_tools.py", "min(x, 50)", "min(x, 60)"),
    ("a module constant", "{p}_helpers.py", "SCALE = 3", "SCALE = 4"),
    ("a function of a package's module", "{p}_pkg/sub.py", "+ OFFSET", "- OFFSET"),
    ("a constant of a package's module", "{p}_pkg/sub.py", "OFFSET = 10", "OFFSET = 11"),
]


@pytest.mark.parametrize(
    ("label", "file", "old", "new"),
    MODULE_EDITS_THAT_COUNT,
    ids=[e[0] for e in MODULE_EDITS_THAT_COUNT],
)
def test_edits_of_the_users_other_modules_change_the_dref(
    store: nx.Store, project: Project, label: str, file: str, old: str, new: str
) -> None:
    """A function, class or constant of another module of the user's project counts by
    its code or value, whether the build imports it by name or reads it as
    ``module.attribute`` (``pkg.sub.fn`` through a package), and so does what those
    functions use in turn, in further modules."""
    base = dref(store, project(PROJECT))
    assert dref(store, project(PROJECT, (file, old, new))) != base


MODULE_EDITS_THAT_DO_NOT_COUNT = [
    ("a comment in a helper", "{p}_helpers.py", "    return x - 1\n", "    return x - 1  # one\n"),
    ("a docstring in a helper", "{p}_pkg/sub.py", "def fn(x):\n", 'def fn(x):\n    """fn."""\n'),
    ("an unused function", "{p}_helpers.py", "return 0", "return 1"),
    (
        "a new function",
        "{p}_helpers.py",
        "def unrelated",
        "def new():\n    pass\n\n\ndef unrelated",
    ),
    ("an unused module", "{p}_pkg/other.py", "return x", "return -x"),
]


@pytest.mark.parametrize(
    ("label", "file", "old", "new"),
    MODULE_EDITS_THAT_DO_NOT_COUNT,
    ids=[e[0] for e in MODULE_EDITS_THAT_DO_NOT_COUNT],
)
def test_edits_the_build_does_not_reach_keep_the_dref(
    store: nx.Store, project: Project, label: str, file: str, old: str, new: str
) -> None:
    """Only what the build reaches counts: comments and docstrings in the user's other
    modules, their functions the build never uses, and modules it never reads do not."""
    base = dref(store, project(PROJECT))
    assert dref(store, project(PROJECT, (file, old, new))) == base


def test_module_names_do_not_count(store: nx.Store, project: Project) -> None:
    """The same project imported under other module names (another folder, another
    prefix: as ``python -m project.main`` and ``python main.py`` would name them) gives the
    same DRef: the user's modules count by the code read off them."""
    assert dref(store, project(PROJECT)) == dref(store, project(PROJECT))


CYCLES = {
    "{p}_a.py": """
        import {p}_b as b


        def ping(n):
            return 0 if n <= 0 else b.pong(n - 1)
    """,
    "{p}_b.py": """
        import {p}_a as a


        def pong(n):
            return a.ping(n) + Node(n).depth()


        class Node:
            def __init__(self, n):
                self.n = n

            def depth(self):
                return 0 if self.n <= 0 else Node(self.n - 1).depth() + 1
    """,
    "{p}_main.py": """
        import nixlet as nx
        import {p}_a as a


        def fact(n):
            return 1 if n <= 1 else n * fact(n - 1)


        def build(b):
            (nx.build_outpath(b) / "r.txt").write_text(str([a.ping(5), fact(4)]))


        def stage(m):
            return nx.mkdrv(m, {"name": "cyc"}, nx.match_only(), nx.build_wrapper(build))
    """,
}


@pytest.mark.parametrize(
    ("file", "old", "new"),
    [
        ("{p}_b.py", "return a.ping(n) +", "return a.ping(n - 1) +"),
        ("{p}_b.py", "Node(self.n - 1).depth() + 1", "Node(self.n - 1).depth() + 2"),
        ("{p}_main.py", "n * fact(n - 1)", "n * fact(n - 2)"),
    ],
    ids=["mutual recursion across modules", "a recursive method", "a recursive function"],
)
def test_recursion_ends_and_its_edits_count(
    store: nx.Store, project: Project, file: str, old: str, new: str
) -> None:
    """Mutual recursion across two modules that import each other, a class whose method
    makes its own class, and a recursive function: the fingerprint ends, is the same
    again, and still sees an edit inside the cycle."""
    base = dref(store, project(CYCLES))
    assert dref(store, project(CYCLES)) == base
    assert dref(store, project(CYCLES, (file, old, new))) != base


def test_fingerprint_is_the_same_in_every_process(store: nx.Store, tmp_path: Path) -> None:
    """Classes, the user's modules, packages and cycles fingerprint the same in child
    processes under different hash seeds as in this one: the walk follows sorted names,
    never ``id()`` or ``hash()``."""
    files = {**PROJECT, **CYCLES, **CLASSES}
    prefix = f"fp{uuid.uuid4().hex[:12]}"
    # One stage reaching all three projects' code.
    files["{p}_main.py"] = """
        import nixlet as nx
        import {p}_a as a
        import {p}_helpers as helpers
        from {p}_classes import Model


        def build(b):
            values = [a.ping(3), helpers.prepare(2), Model.default().predict(1)]
            (nx.build_outpath(b) / "all.txt").write_text(str(values))


        def stage(m):
            return nx.mkdrv(m, {"name": "all"}, nx.match_only(), nx.build_wrapper(build))
    """
    files["{p}_classes.py"] = CLASSES["{p}_main.py"]
    root = write_project(tmp_path / "proj", files, prefix, ())
    child = (
        "import importlib, sys\nimport nixlet as nx\n"
        f"main = importlib.import_module({prefix + '_main'!r})\n"
        "print(nx.instantiate(main.stage, store=nx.store_initialize(sys.argv[1])).result)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIXLET_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    seen = set()
    for seed in ("1", "2", "3"):
        done = subprocess.run(
            [sys.executable, "-c", child, str(tmp_path / "store")],
            env={**env, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "Warning" not in done.stderr, done.stderr
        seen.add(done.stdout.strip())
    sys.path.insert(0, str(root))
    try:
        here = dref(store, importlib.import_module(f"{prefix}_main"))
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n.startswith(prefix)]:
            del sys.modules[name]
    assert seen == {str(here)}


# ---------------------------------------------------------------- libraries and nixlet

LIBRARIES = {
    "{p}_main.py": """
        import json
        from json import dumps

        import attrs
        import filelock

        import nixlet as nx


        def build(b):
            text = json.dumps([1]) + dumps([2]) + str(attrs.has(int))
            (nx.build_outpath(b) / "l.txt").write_text(text + filelock.FileLock.__name__)


        def stage(m):
            return nx.mkdrv(m, {"name": "libs"}, nx.match_only(), nx.build_wrapper(build))
    """,
}


def _replacement(*args: Any, **kwargs: Any) -> str:
    return "another implementation"


def upgraded(fn: Any) -> CodeType:
    """Other code for ``fn``, compiled from ``fn``'s own file: what upgrading its library
    gives."""
    namespace: dict[str, Any] = {}
    source = "def upgraded(*args, **kwargs):\n    return 'upgraded'\n"
    exec(compile(source, fn.__code__.co_filename, "exec"), namespace)
    code: CodeType = namespace["upgraded"].__code__
    return code


def test_library_code_counts_by_name_only(
    store: nx.Store, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Functions and classes of the standard library (``json``) and of installed
    distributions (``attrs``, ``filelock``) count by their qualified names: giving them
    other code, as an upgrade would, keeps the DRef; giving the user's own function other
    code the same way does not."""
    main = project(LIBRARIES)
    base = dref(store, main)
    monkeypatch.setattr(json.dumps, "__code__", upgraded(json.dumps))
    monkeypatch.setattr(attrs.has, "__code__", upgraded(attrs.has))
    monkeypatch.setattr(filelock.FileLock, "added_by_an_upgrade", _replacement, raising=False)
    assert dref(store, main) == base
    monkeypatch.setattr(main.build, "__code__", _replacement.__code__)
    assert dref(store, main) != base


NIXLET_IMPORTS = {
    "{p}_main.py": """
        import nixlet as nx
        from IMPORT import build_outpath


        def build(b):
            (build_outpath(b) / "n.txt").write_text("n")


        def stage(m):
            return nx.mkdrv(m, {"name": "nix"}, nx.match_only(), nx.build_wrapper(build))
    """,
}


def test_nixlet_counts_by_its_public_names(
    store: nx.Store, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A nixlet function counts as ``nixlet.<name>`` whichever module it is imported from
    (public or private) and whatever its code: moving or rewriting nixlet's internals does
    not rename the user's derivations."""
    public = project(NIXLET_IMPORTS, ("{p}_main.py", "IMPORT", "nixlet"))
    private = project(NIXLET_IMPORTS, ("{p}_main.py", "IMPORT", "nixlet.engine.build"))
    assert public.build_outpath is private.build_outpath is nixlet_build.build_outpath
    base = dref(store, public)
    assert dref(store, private) == base
    monkeypatch.setattr(nx.build_outpath, "__code__", upgraded(nx.build_outpath))
    assert dref(store, public) == base


# ---------------------------------------------------------------- across Python versions


class Recorder:
    """Stands in for the hash object: keeps what the fingerprint feeds it."""

    def __init__(self) -> None:
        self.records: list[str] = []

    def update(self, data: bytes) -> None:
        self.records.append(data.decode("utf-8", "replace"))


def test_classes_that_libraries_complete_feed_no_bytecode(project: Project) -> None:
    """The methods dataclasses, attrs and namedtuple generate count through their fields,
    and the accessors Python makes for slots and namedtuple fields not at all: no bytecode
    and no accessor type (both named or compiled differently by each Python version) reach
    the fingerprint of a build using such classes, so it is the same on every Python."""
    main = project(CLASSES)
    recorder = Recorder()
    fingerprint._feed(recorder, main.build, set())
    fed = "\n".join(recorder.records)
    assert "class:Settings" in fed and "class:Limits" in fed and "class:Point" in fed
    assert "field:steps" in fed and "field:high" in fed and "_field_defaults" in fed
    assert "bytecode:" not in fed
    assert "tuplegetter" not in fed and "member_descriptor" not in fed
    assert "__create_fn__" not in fed and "attrs generated" not in fed


EXEC_SOURCE = """
import dataclasses
import nixlet as nx

@dataclasses.dataclass
class Pair:
    x: int = 1

    def norm(self):
        return abs(self.x)

def build(b):
    (nx.build_outpath(b) / "p.txt").write_text(str(Pair().norm()))
"""


def test_a_dataclass_typed_without_source_warns_for_its_own_methods_only(
    store: nx.Store,
) -> None:
    """A dataclass defined by ``exec`` of a string (as in ``python -c``): the user's own
    method and build function have no source and warn, each by name; the methods
    dataclasses generated for it, compiled from strings too, do not."""
    namespace: dict[str, Any] = {"__name__": f"exec_{uuid.uuid4().hex}"}
    exec(compile(EXEC_SOURCE, "<string>", "exec", dont_inherit=True), namespace)
    m = nx.Manager(store)
    with pytest.warns(nx.NixletWarning) as caught:
        nx.mkdrv(m, {"name": "p"}, nx.match_only(), nx.build_wrapper(namespace["build"]))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert any("Pair.norm" in text for text in messages)
    assert any("build" in text and "Pair" not in text for text in messages)
    assert not any("__init__" in text or "__repr__" in text for text in messages)
