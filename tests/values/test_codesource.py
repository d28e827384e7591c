"""What the fingerprint reads of a function's code (``nixlet.values.codesource``) and whose
code it is (``nixlet.values.origin``): the source finder agrees with ``inspect``; each of
several lambdas on one line is found by position; the chains ``module.attribute`` a function
reads are found in every nested scope, from the syntax tree or the bytecode; code without
source falls back to bytecode; the standard library, installed distributions and nixlet are
libraries, files elsewhere and code typed without a file are the user's.

Functions are written into modules in ``tmp_path`` and imported from there, so their source
is a real file.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import sys
import sysconfig
import textwrap
import types
import uuid
from pathlib import Path

import attrs
import pytest

import nixlet as nx
from nixlet.values import codesource, origin


def load(tmp_path: Path, source: str, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Import ``source`` as a fresh module from its own file in ``tmp_path``."""
    name = f"nixlet_cs_{uuid.uuid4().hex}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def exec_source(source: str, filename: str = "<string>") -> dict[str, object]:
    """Run ``source`` as ``exec`` does, with no file behind it: the namespace."""
    namespace: dict[str, object] = {"__name__": "typed_here"}
    exec(compile(textwrap.dedent(source), filename, "exec"), namespace)
    return namespace


# ---------------------------------------------------------------- finding the source

SHAPES = '''
import functools


def plain(b):
    return b + 1


def identity(fn):
    return fn


@identity
@functools.partial(
    identity,
)
def decorated(b):
    return b * 2


def black_style(
    b,
    c=(1, 2),
) -> int:
    return b


def closing_bracket_at_column_zero(b):
    values = [
        1,
]
    return values


def string_at_column_zero(b):
    text = """first
second line at column zero
"""
    return text


def bracket_at_column_zero(b):
    values = [
1, 2,
]
    return values


def continued(b):
    total = 1 + \\
2
    return total


def with_comments(b):
    # a comment
# a comment at column zero
    return b


class Holder:
    def method(self, b):
        def inner(c):
            return c
        return inner(b)

    async def coroutine(self):
        return 1


def one_liner(b): return b


def last_in_file(b):
    return -b
'''


def test_fast_source_finder_agrees_with_inspect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The indentation-delimited source finder gives the tree ``inspect.getsource`` gives,
    or declines (and the fingerprint falls back to inspect) where indentation cannot
    delimit the block."""
    module = load(tmp_path, SHAPES, monkeypatch)
    inner = module.Holder().method.__func__.__code__.co_consts
    inner_fn = next(c for c in inner if getattr(c, "co_name", "") == "inner")
    functions = {
        "plain": module.plain,
        "decorated": module.decorated,
        "black_style": module.black_style,
        "string_at_column_zero": module.string_at_column_zero,
        "bracket_at_column_zero": module.bracket_at_column_zero,
        "closing_bracket_at_column_zero": module.closing_bracket_at_column_zero,
        "continued": module.continued,
        "with_comments": module.with_comments,
        "method": module.Holder.method,
        "coroutine": module.Holder.coroutine,
        "one_liner": module.one_liner,
        "last_in_file": module.last_in_file,
        "inner": types.FunctionType(inner_fn, vars(module)),
    }
    found = {}
    for name, fn in functions.items():
        reference = codesource.dump(
            codesource.strip_docstrings(ast.parse(textwrap.dedent(inspect.getsource(fn))))
        )
        fast = codesource.function_node(fn)
        found[name] = fast is not None
        if fast is not None:
            assert codesource.dump(codesource.strip_docstrings(fast)) == reference, name
        assert codesource.normalised_source(fn) == (reference, True), name
    # Declined: blocks cut by a line at column zero inside a string, a bracket or a
    # continuation.
    declined = {n for n, ok in found.items() if not ok}
    assert declined == {"string_at_column_zero", "bracket_at_column_zero", "continued"}


LAMBDAS = """
def make(k):
    return (lambda b: b + k, lambda c: (c *
                  2), lambda: lambda z: z)


first, second, outer = make(1)
inner = outer()
pair = [lambda b: b + 1, lambda b: b + 2]
twin = [lambda b: b, lambda b: b]
"""


def lambda_source(fn: object) -> str:
    """The normalised source of a lambda, which must be found (no bytecode fallback)."""
    assert isinstance(fn, types.FunctionType)
    text, from_source = codesource.normalised_source(fn)
    assert from_source, text
    return text


def test_each_lambda_of_a_line_is_found_by_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several lambdas in one statement (a lambda stage whose realizer is a lambda, a list
    of them) each get their own tree: the one whose body holds the lambda's instructions.
    A lambda that starts mid-statement, a lambda in a lambda, and two identical lambdas
    are found too."""
    module = load(tmp_path, LAMBDAS, monkeypatch)
    expected = {
        "first": "lambda b: b + k",
        "second": "lambda c: c * 2",
        "outer": "lambda: lambda z: z",
        "inner": "lambda z: z",
    }
    for name, text in expected.items():
        tree = ast.parse(text, mode="eval").body
        assert lambda_source(getattr(module, name)) == codesource.dump(tree), name
    plus_one, plus_two = module.pair
    assert lambda_source(plus_one) != lambda_source(plus_two)
    assert "Constant(value=int:2)" in lambda_source(plus_two)
    left, right = module.twin
    assert lambda_source(left) == lambda_source(right)


def test_lambdas_of_a_block_run_from_a_page_are_found(tmp_path: Path) -> None:
    """A block compiled against a file that is not Python as a whole (a markdown page, as
    the docs' harness runs them) still yields its lambdas, from the statement's lines (here
    indented: the positions are shifted back)."""
    code = "def pair():\n    return lambda a: a + 1, lambda a: a * 2\n\n\nf, g = pair()\n"
    page = tmp_path / "page.md"
    page.write_text(f"# A page\n\nProse (with a bracket.\n\n```python\n{code}```\n")
    namespace = exec_source("\n" * 5 + code, str(page))
    assert lambda_source(namespace["f"]) != lambda_source(namespace["g"])
    assert "Mult()" in lambda_source(namespace["g"])


# ---------------------------------------------------------------- no source


def test_code_without_source_falls_back_to_bytecode() -> None:
    """``exec`` of a string leaves no source: the bytecode stands in, says so, and the
    chains the code reads come from the bytecode too."""
    namespace = exec_source("import json\n\n\ndef build(b):\n    return json.dumps(b) * 2\n")
    fn = namespace["build"]
    assert isinstance(fn, types.FunctionType)
    text, from_source = codesource.normalised_source(fn)
    assert not from_source
    assert text.startswith("bytecode:")
    assert codesource.read(fn) == (text, False, (("json", "dumps"),))


def test_the_warning_names_the_function_and_the_ways_out() -> None:
    """The warning for code without source names the function by qualified name, says
    that the DRef then depends on the Python version, and how to avoid it."""
    namespace = exec_source("class Model:\n    def fit(self):\n        return 1\n")
    model = namespace["Model"]
    assert isinstance(model, type)
    with pytest.warns(nx.NixletWarning) as caught:
        codesource.warn_sourceless(vars(model)["fit"])
    (record,) = caught.list
    message = str(record.message)
    assert "typed_here.Model.fit" in message
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in message
    assert "version=" in message and "file" in message
    assert (record.filename, record.lineno) == ("<string>", 2)


# ---------------------------------------------------------------- what the code reads

CHAINS = """
import json
import os.path

import nixlet as nx


def reads(b):
    local = b.outpaths
    rows = [os.path.join(p, "x") for p in local]

    def inner():
        return json.dumps(rows), nx.build_outpath(b).name

    return inner, b.config.name
"""


def test_attribute_chains_are_read_in_every_scope(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``module.attribute`` chains are found in the function, its comprehensions and its
    inner functions, whole (``os.path.join``); the bytecode's have none on plain local
    variables; attribute names are among the global names (over-counting is harmless)."""
    module = load(tmp_path, CHAINS, monkeypatch)
    chains = codesource.attribute_chains(module.reads.__code__)
    assert ("os", "path", "join") in chains
    assert ("json", "dumps") in chains
    assert ("nx", "build_outpath") in chains
    assert not any(chain[0] in {"local", "p", "rows"} for chain in chains), chains
    # Read off the syntax tree where the source is found: the same chains, and more (on
    # locals, which the fingerprint does not follow).
    assert set(chains) <= set(codesource.read(module.reads).chains)
    names = codesource.global_names(module.reads.__code__)
    assert {"os", "json", "nx", "join", "dumps", "build_outpath"} <= set(names)
    assert list(names) == sorted(names)


def test_stable_repr_sorts_sets_and_dicts() -> None:
    """The bytecode fallback's constants print in sorted order, whatever the hash seed."""
    words = ["delta", "alpha", "charlie", "bravo"]
    assert codesource.stable_repr(frozenset(words)) == codesource.stable_repr(
        frozenset(reversed(words))
    )
    assert codesource.stable_repr(frozenset(words)) == (
        "frozenset([\"'alpha'\", \"'bravo'\", \"'charlie'\", \"'delta'\"])"
    )
    assert codesource.stable_repr({2: "x", 1: "y"}) == codesource.stable_repr({1: "y", 2: "x"})


# ---------------------------------------------------------------- whose code it is


def test_library_files_are_told_from_the_users(tmp_path: Path) -> None:
    """The standard library and site-packages are libraries; a project file, the prompt,
    ``exec`` and a notebook cell are the user's; frozen modules are the standard library."""
    assert os.__file__ is not None and attrs.__file__ is not None
    assert origin.is_library_file(os.__file__)
    assert origin.is_library_file(json.__file__ or "")
    assert origin.is_library_file(attrs.__file__)
    assert origin.is_library_file("<frozen importlib._bootstrap>")
    # The folders are found without sysconfig (it costs a millisecond), and cover its.
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        assert origin.is_library_file(os.path.join(paths[key], "any.py")), key
    assert not origin.is_library_file(str(tmp_path / "project" / "helpers.py"))
    for typed in ("<stdin>", "<string>", "<ipython-input-3-0123456789ab>"):
        assert not origin.is_library_file(typed), typed


def test_modules_functions_and_classes_are_told_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module imported from a project folder and what it defines are the user's; nixlet
    (installed editable, in a project folder, but nixlet by name), the standard library,
    built-in modules and installed distributions are libraries; a module with no file (the
    ``__main__`` of ``python -c``) is the user's."""
    module = load(tmp_path, "def fn():\n    return 1\n\n\nclass C:\n    pass\n", monkeypatch)
    assert origin.is_user_module(module)
    assert origin.is_user_function(module.fn)
    assert origin.is_user_class(module.C)
    assert not origin.is_user_module(nx)
    assert not origin.is_user_module(sys.modules["nixlet.engine.build"])
    assert not origin.is_user_function(nx.build_outpath)  # type: ignore[arg-type]
    assert not origin.is_user_class(nx.DRef)
    assert not origin.is_user_module(json)
    assert not origin.is_user_module(sys)
    assert not origin.is_user_function(json.dumps)  # type: ignore[arg-type]
    assert not origin.is_user_module(attrs)
    assert not origin.is_user_class(attrs.Attribute)
    assert not origin.is_user_class(int)
    assert origin.is_user_module(types.ModuleType("__main__"))
    typed = exec_source("def build(b):\n    return b\n")["build"]
    assert isinstance(typed, types.FunctionType) and origin.is_user_function(typed)
