"""The public API: ``__all__`` is complete, sorted and documented, every public function
and attrs field is fully typed, and nothing else leaks out of the package."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

import attrs
import pytest

import nixlet

PUBLIC = list(nixlet.__all__)


def test_all_is_sorted_and_unique() -> None:
    """``__all__`` is sorted and has no duplicates."""
    assert PUBLIC == sorted(PUBLIC)
    assert len(set(PUBLIC)) == len(PUBLIC)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_name_exists(name: str) -> None:
    """Every name of ``__all__`` is an attribute of the package."""
    assert hasattr(nixlet, name)


def _own_doc(obj: Any) -> str | None:
    """The docstring that documents ``obj`` itself: a str (a type alias written as a
    string) only has str's docstring, which does not count."""
    if isinstance(obj, str):
        return None
    return inspect.getdoc(obj)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_name_has_a_docstring(name: str) -> None:
    """Every public name has a docstring of its own."""
    doc = _own_doc(getattr(nixlet, name))
    assert doc and doc.strip(), f"{name} has no docstring"


def test_nothing_else_leaks() -> None:
    """The public names of ``dir(nixlet)`` beyond ``__all__`` are only its submodules."""
    extra = [n for n in dir(nixlet) if not n.startswith("_") and n not in PUBLIC]
    leaks = [
        n
        for n in extra
        if not (
            isinstance(getattr(nixlet, n), types.ModuleType)
            and getattr(nixlet, n).__name__ == f"nixlet.{n}"
        )
    ]
    assert leaks == []


def _functions() -> list[tuple[str, Any]]:
    """Every public function, and every public method of a public class defined in nixlet."""
    found: list[tuple[str, Any]] = []
    for name in PUBLIC:
        obj = getattr(nixlet, name)
        if inspect.isfunction(obj):
            found.append((name, obj))
        elif inspect.isclass(obj) and obj.__module__.startswith("nixlet"):
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr not in ("__init__", "__call__"):
                    continue
                if attr == "__init__" and attrs.has(obj):
                    continue  # generated from the fields, which are checked below
                if isinstance(member, (classmethod, staticmethod)):
                    member = member.__func__
                if inspect.isfunction(member) and member.__module__.startswith("nixlet"):
                    found.append((f"{name}.{attr}", member))
    return found


FUNCTIONS = _functions()


def test_there_are_functions_to_check() -> None:
    """The hint checks below cover the API (a guard against an empty parametrization)."""
    names = {n for n, _ in FUNCTIONS}
    assert {"realize", "instantiate", "mkdrv", "DRef.parse", "match_some.__call__"} <= names


@pytest.mark.parametrize(("name", "fn"), FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
def test_functions_are_fully_typed(name: str, fn: Any) -> None:
    """Every parameter and the return value of every public function and method carry a
    type hint, and the hints resolve."""
    hints = typing.get_type_hints(fn)
    sig = inspect.signature(fn)
    missing = [
        p for p in sig.parameters if p not in hints and not (p in ("self", "cls") and "." in name)
    ]
    assert missing == [], f"{name}: parameters without a hint: {missing}"
    assert "return" in hints, f"{name}: no return hint"


ATTRS_CLASSES = [
    (n, getattr(nixlet, n))
    for n in PUBLIC
    if inspect.isclass(getattr(nixlet, n)) and attrs.has(getattr(nixlet, n))
]


@pytest.mark.parametrize(("name", "cls"), ATTRS_CLASSES, ids=[n for n, _ in ATTRS_CLASSES])
def test_attrs_fields_are_annotated(name: str, cls: type) -> None:
    """Every field of every public attrs class is annotated, and the annotations resolve."""
    hints = typing.get_type_hints(cls)
    for field in attrs.fields(cls):
        assert field.type is not None, f"{name}.{field.name}"
        assert field.name in hints, f"{name}.{field.name}"


#: The fields each error's docstring documents ("Fields: ...").
ERROR_FIELDS = {
    "BuildError": {"dref", "cause", "staging"},
    "PromiseError": {"dref", "missing", "staging"},
    "MatcherError": {"matcher", "dref"},
}


@pytest.mark.parametrize(("name", "fields"), sorted(ERROR_FIELDS.items()))
def test_error_fields_are_declared(name: str, fields: set[str]) -> None:
    """The documented fields of an error are declared with a type on its class, so that
    ``except BuildError as e: e.staging`` type-checks (mypy --strict) in user code."""
    cls = getattr(nixlet, name)
    assert all(f"``{f}``" in cls.__doc__ for f in fields)  # the docstring promises them
    hints = typing.get_type_hints(cls)
    assert fields <= set(hints), f"{name}: undeclared fields {sorted(fields - set(hints))}"


def test_type_aliases_are_usable_at_runtime() -> None:
    """The public type aliases are real types: a user's function annotated with them has
    hints that resolve in the user's namespace (which need not import DRef or RRef)."""
    namespace: dict[str, Any] = {"nixlet": nixlet}
    exec(
        "def user(p: nixlet.RefPath, c: nixlet.Context) -> None:\n    pass\n",
        namespace,
    )
    hints = typing.get_type_hints(namespace["user"])
    assert typing.get_origin(hints["p"]) is list
    assert not isinstance(nixlet.RefPath, str)


def test_protocols_describe_matchers_and_realizers() -> None:
    """Matcher and Realizer are Protocols with typed ``__call__``."""
    for proto in (nixlet.Matcher, nixlet.Realizer):
        assert getattr(proto, "_is_protocol", False)
        hints = typing.get_type_hints(proto.__call__)
        assert "return" in hints and len(hints) >= 2


def test_version() -> None:
    """The package has a version string."""
    assert isinstance(nixlet.__version__, str) and nixlet.__version__


#: Names a public signature may use besides nixlet's own: builtins and the standard
#: library's typing vocabulary (what a user already has without importing from nixlet).
STDLIB_NAMES = {
    "Any", "Callable", "Iterable", "Iterator", "Mapping", "Sequence", "Path", "os",
    "BaseException", "Exception", "None", "bool", "bytes", "dict", "float", "frozenset", "int",
    "list", "object", "set", "str", "tuple", "type",
}  # fmt: skip


def _annotation_names(annotation: object) -> set[str]:
    """The top-level names an annotation (a string, under postponed evaluation) uses."""
    import ast

    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    if not text:
        return set()
    tree = ast.parse(text, mode="eval")
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return names


def _signature_annotations(name: str, fn: Any) -> list[object]:
    sig = inspect.signature(fn)
    found = [p.annotation for p in sig.parameters.values() if p.annotation is not p.empty]
    if sig.return_annotation is not sig.empty:
        found.append(sig.return_annotation)
    return found


@pytest.mark.parametrize(("name", "fn"), FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
def test_public_signatures_use_only_exported_names(name: str, fn: Any) -> None:
    """A public function's signature names only types a user can import from nixlet (or
    the standard library): no private alias such as an internal module's ``StoreArg``."""
    used = set().union(*(_annotation_names(a) for a in _signature_annotations(name, fn)))
    unknown = used - set(PUBLIC) - STDLIB_NAMES - {"Self"}
    assert unknown == set(), f"{name} uses names nixlet does not export: {sorted(unknown)}"


@pytest.mark.parametrize(("name", "cls"), ATTRS_CLASSES, ids=[n for n, _ in ATTRS_CLASSES])
def test_public_attrs_fields_use_only_exported_names(name: str, cls: type) -> None:
    """The init fields of a public attrs class (its constructor's signature) name only
    exported types; a class whose state is private keeps it out of ``__init__``."""
    fields = [f for f in attrs.fields(cls) if f.init]
    used = set().union(*(_annotation_names(f.type) for f in fields)) if fields else set()
    unknown = used - set(PUBLIC) - STDLIB_NAMES
    assert unknown == set(), f"{name} fields use names nixlet does not export: {sorted(unknown)}"
    assert all(not f.name.startswith("_") for f in fields), f"{name}: private init fields"
