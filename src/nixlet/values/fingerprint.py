"""The build code's fingerprint: what a stage does is part of its derivation's identity.

The fingerprint of a function covers its normalised AST (so comments, docstrings and
formatting do not count), the values of the constants it reads (module globals and closure
cells), and, recursively, the fingerprints of the functions it calls by name. It never uses
Python's randomised ``hash()``; where the source cannot be read (a function typed into a
bare ``python -c``), the compiled bytecode and constants stand in, which are stable for one
Python version. ``mkdrv(..., version=...)`` replaces all of this with an explicit string.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import hashlib
import inspect
import linecache
import textwrap
import types
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

import attrs

from nixlet.values.errors import ConfigError

_CONSTANT_TYPES = (int, float, bool, type(None), complex)
_MAX_REPR = 4096
_source_cache: dict[types.CodeType, str] = {}
_names_cache: dict[types.CodeType, tuple[str, ...]] = {}


def code_identity(fn: object, version: str | None = None) -> str:
    """The code part of a DRef's hash: ``version:<text>`` if given, else
    ``fingerprint:<sha256 hex>`` of ``fn``'s code and what it uses."""
    if version is not None:
        if not isinstance(version, str):
            raise ConfigError(f"version must be a str, not {type(version).__name__}")
        return f"version:{version}"
    h = hashlib.sha256()
    root = _unwrap(fn)
    _feed(h, root, set(), getattr(root, "__module__", None))
    return f"fingerprint:{h.hexdigest()}"


def _feed(h: Any, obj: object, seen: set[int], home: str | None) -> None:
    """Add ``obj`` to the running hash: functions of the user's module (``home``) by their
    code and what they use, library functions by name (so upgrading a library, nixlet
    included, does not rename every derivation), constants by value, anything else by its
    qualified type name."""
    target = _unwrap(obj)
    if isinstance(target, types.FunctionType) and target.__module__ != home:
        h.update(f"libfn:{target.__module__}.{target.__qualname__}".encode())
        return
    if isinstance(target, types.FunctionType):
        if id(target) in seen:
            h.update(b"<recursion>")
            return
        seen.add(id(target))
        h.update(b"fn:" + _normalised_source(target.__code__, target).encode())
        _feed_used_names(h, target, seen, home)
        return
    _feed_value(h, target, seen, home)


def _stable_repr(value: object) -> str:
    """``repr`` with sets and dicts in sorted order: their iteration order follows
    ``hash()``, which Python randomises per process for strings."""
    if isinstance(value, (set, frozenset)):
        return f"{type(value).__name__}({sorted(_stable_repr(v) for v in value)})"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({[_stable_repr(v) for v in value]})"
    if isinstance(value, dict):
        items = sorted((_stable_repr(k), _stable_repr(v)) for k, v in value.items())
        return f"dict({items})"
    return repr(value)


def _unwrap(obj: object) -> object:
    # A realizer made by build_wrapper (or any callable object) points at the user's code.
    for attr in ("__nixlet_code__", "__wrapped__"):
        inner = getattr(obj, attr, None)
        if inner is not None and inner is not obj:
            return _unwrap(inner)
    if isinstance(obj, types.MethodType):
        return obj.__func__
    return obj


def _feed_value(h: Any, value: object, seen: set[int], home: str | None) -> None:
    if isinstance(value, (str, bytes)):
        # Raw bytes, not repr: a 64 MiB constant would otherwise become 256 MB of text.
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        h.update(f"const:{type(value).__name__}:{len(data)}:".encode())
        h.update(data)
    elif isinstance(value, _CONSTANT_TYPES):
        h.update(f"const:{type(value).__name__}:{value!r}".encode())
    elif isinstance(value, (tuple, list, set, frozenset)):
        items = sorted(value, key=_stable_repr) if isinstance(value, (set, frozenset)) else value
        h.update(f"seq:{type(value).__name__}:{len(items)}".encode())
        for item in items:
            _feed_value(h, item, seen, home)
    elif isinstance(value, dict):
        h.update(f"dict:{len(value)}".encode())
        for k in sorted(value, key=_stable_repr):
            h.update(_stable_repr(k).encode())
            _feed_value(h, value[k], seen, home)
    elif isinstance(value, functools.partial):
        h.update(b"partial:")
        _feed(h, value.func, seen, home)
        _feed_value(h, value.args, seen, home)
        _feed_value(h, value.keywords, seen, home)
    elif isinstance(value, types.FunctionType) or hasattr(value, "__nixlet_code__"):
        _feed(h, value, seen, home)
    elif isinstance(value, types.ModuleType):
        h.update(f"module:{value.__name__}".encode())
    else:
        kind = value if isinstance(value, type) else type(value)
        h.update(f"obj:{kind.__module__}.{kind.__qualname__}".encode())
        # An immutable value (a path, an enum member, a frozen attrs or dataclass value such
        # as a DRef) counts by its repr. Other objects count by their kind only: their state
        # may change (a Manager fills up) or print as a memory address. Never id() or hash().
        if _is_value(value):
            text = repr(value)
            if len(text) <= _MAX_REPR:
                h.update(f"repr:{text}".encode())


def _is_value(value: object) -> bool:
    cls = type(value)
    if isinstance(value, (PurePath, enum.Enum)):
        return True
    if dataclasses.is_dataclass(cls):
        return bool(cls.__dataclass_params__.frozen)  # type: ignore[attr-defined]
    return attrs.has(cls) and getattr(cls.__setattr__, "__name__", "") == "_frozen_setattrs"


def _feed_used_names(h: Any, fn: types.FunctionType, seen: set[int], home: str | None) -> None:
    """Globals and closure cells the function reads, in a stable order."""
    names = _names_cache.get(fn.__code__)
    if names is None:
        names = _names_cache[fn.__code__] = tuple(sorted(_global_names(fn.__code__)))
    for name in names:
        if name in fn.__globals__:
            h.update(f"global:{name}".encode())
            _feed_value(h, fn.__globals__[name], seen, home)
    if fn.__closure__:
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__, strict=True):
            h.update(f"free:{name}".encode())
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell: a name assigned later in the outer scope
                h.update(b"<empty>")
                continue
            _feed_value(h, contents, seen, home)


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _normalised_source(code: types.CodeType, fn: Callable[..., Any]) -> str:
    cached = _source_cache.get(code)
    if cached is None:
        cached = _source_text(fn)
        _source_cache[code] = cached
    return cached


def _source_text(fn: Callable[..., Any]) -> str:
    tree = _function_node(fn)
    if tree is not None:
        return _dump(_strip_docstrings(tree))
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return _bytecode_text(fn.__code__)
    if fn.__name__ == "<lambda>":
        # getsource gives a lambda's whole statement: keep the lambda alone, and fall back
        # to its bytecode when the statement holds several (which one is ours is unknown).
        lambdas = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)]
        if len(lambdas) != 1:
            return _bytecode_text(fn.__code__)
        return _dump(lambdas[0])
    return _dump(_strip_docstrings(tree))


def _function_node(fn: Callable[..., Any]) -> ast.AST | None:
    """The parsed definition of ``fn``, or None where it cannot be found this way (a
    lambda, no source, a definition the block rule below cannot delimit).

    ``inspect.getsource`` finds the same text with Python's tokenizer, whose first use in a
    process costs milliseconds: a noticeable part of instantiating a small pipeline from a
    fresh process. Here the block is delimited by indentation instead: after the ``def``
    line, it ends at the first line indented no deeper than the definition that is not
    blank, a comment, or a closing bracket. Inside a function, such a line can only be
    part of a string, a bracket or a continuation, and a block cut there does not parse:
    a wrong block is refused (by the parse or the name check), and the caller falls back
    to ``inspect``.
    """
    code = fn.__code__
    if code.co_name == "<lambda>":
        return None
    linecache.checkcache(code.co_filename)
    lines = linecache.getlines(code.co_filename, getattr(fn, "__globals__", None))
    start = code.co_firstlineno - 1
    if not 0 <= start < len(lines):
        return None
    indent = _indent(lines[start])
    end = start
    while end < len(lines) and not lines[end].lstrip().startswith(("def ", "async def ")):
        end += 1  # decorators
    end += 1
    while end < len(lines):
        line = lines[end]
        text = line.strip()
        if text and not text.startswith(("#", ")", "]", "}")) and _indent(line) <= indent:
            break
        end += 1
    try:
        tree = ast.parse(textwrap.dedent("".join(lines[start:end])))
    except (SyntaxError, ValueError):
        return None
    if (
        len(tree.body) == 1
        and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef))
        and tree.body[0].name == code.co_name
    ):
        return tree
    return None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _dump(node: object) -> str:
    """A textual form of an AST that is the same on every Python >= 3.11.

    ``ast.dump`` is not: 3.12 adds ``type_params=[]`` to every function and 3.13 leaves out
    empty fields, so the same function would get three fingerprints. Fields that are
    ``None`` or empty are left out here, and fields are named.
    """
    if isinstance(node, ast.AST):
        fields = []
        for name, value in ast.iter_fields(node):
            if value is None or value == []:
                continue
            fields.append(f"{name}={_dump(value)}")
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return f"[{','.join(_dump(item) for item in node)}]"
    return f"{type(node).__name__}:{node!r}"


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _bytecode_text(code: types.CodeType) -> str:
    consts = [
        _bytecode_text(c) if isinstance(c, types.CodeType) else _stable_repr(c)
        for c in code.co_consts
        if not (isinstance(c, str) and c == code.co_consts[0] and c.startswith(("\n", " ")))
    ]
    return f"bytecode:{code.co_code.hex()}:{consts}:{code.co_names}"
