"""The build code's fingerprint: what a stage does is part of its derivation's identity.

The fingerprint of a build function is a SHA-256 over the user's own code it reaches:

- each function's normalised syntax tree (so comments, docstrings and formatting do not
  count; see ``codesource``), its default arguments, and what it reads: module globals and
  closure cells, and the attribute chains it reads off the user's modules
  (``helpers.prepare``, ``pkg.sub.fn``), transitively;
- each class: its bases, its methods and its class-level constants, and the fields
  dataclasses and attrs generate methods from (see ``classparts``);
- constants by value; immutable objects by ``repr``; other objects by their type.

What is not the user's (the standard library, installed distributions, nixlet itself; see
``origin``) counts by qualified name only, so upgrading a library does not rename every
derivation. Recursion ends: a function or class met again adds a marker. The order of the
walk is that of sorted names, never ``id()`` or ``hash()``, so the fingerprint is the same
in every process. ``mkdrv(..., version=...)`` replaces all of this with an explicit string.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import types
from pathlib import PurePath
from typing import Any, NamedTuple

import attrs

from nixlet.values import classparts, codesource, origin
from nixlet.values.codesource import stable_repr
from nixlet.values.errors import ConfigError

_CONSTANT_TYPES = (int, float, bool, type(None), complex)
_MAX_REPR = 4096


def code_identity(fn: object, version: str | None = None) -> str:
    """The code part of a DRef's hash: ``version:<text>`` if given, else
    ``fingerprint:<sha256 hex>`` of ``fn``'s code and what it uses.

    Warns:
        NixletWarning: the source of a function of the user's cannot be found (typed at a
            plain ``python`` prompt, ``python -c``, ``exec`` of a string), once per function.
    """
    if version is not None:
        if not isinstance(version, str):
            raise ConfigError(f"version must be a str, not {type(version).__name__}")
        return f"version:{version}"
    h = hashlib.sha256()
    _feed(h, fn, set())
    return f"fingerprint:{h.hexdigest()}"


def _feed(h: Any, obj: object, seen: set[int]) -> None:
    """Add a callable to the running hash: a function by its code, a bound method by its
    function and its class, anything else as a value."""
    target = _unwrap(obj)
    if not isinstance(target, types.FunctionType):
        _feed_value(h, target, seen)
        return
    owner = None
    if isinstance(obj, types.MethodType) and obj.__func__ is target:
        owner = obj.__self__ if isinstance(obj.__self__, type) else type(obj.__self__)
    _feed_function(h, target, seen, owner)


def _unwrap(obj: object) -> object:
    # A realizer made by build_wrapper (or any callable object) points at the user's code.
    for attr in ("__nixlet_code__", "__wrapped__"):
        inner = getattr(obj, attr, None)
        if inner is not None and inner is not obj:
            return _unwrap(inner)
    if isinstance(obj, types.MethodType):
        return obj.__func__
    return obj


def _feed_function(
    h: Any, fn: types.FunctionType, seen: set[int], owner: type | None = None
) -> None:
    """A library's function by name; the user's by its code, its defaults, what it reads,
    and the class it is a method of (whose other methods ``self`` reaches)."""
    if id(fn) in seen:  # only the user's functions are walked, and so marked
        h.update(b"<recursion>")
        return
    if not origin.is_user_function(fn):
        h.update(f"libfn:{fn.__module__}.{fn.__qualname__}".encode())
        return
    seen.add(id(fn))
    read = read_code(fn)
    h.update(read.record)
    if fn.__defaults__:
        h.update(b"defaults:")
        _feed_value(h, fn.__defaults__, seen)
    if fn.__kwdefaults__:
        h.update(b"kwdefaults:")
        _feed_value(h, fn.__kwdefaults__, seen)
    _feed_reads(h, fn, read, seen)
    owner = owner or _owner_class(fn)
    if owner is not None:
        h.update(b"owner:")
        _feed_class(h, owner, seen)


def _owner_class(fn: types.FunctionType) -> type | None:
    """The class a function was defined in, found by its qualified name (``Model.fit``)."""
    qualname = fn.__qualname__
    if "." not in qualname or "<locals>" in qualname:
        return None
    parts = qualname.split(".")[:-1]
    found: object = fn.__globals__.get(parts[0])
    for part in parts[1:]:
        found = vars(found).get(part) if isinstance(found, type) else None
    return found if isinstance(found, type) else None


#: An attribute path read off a name: ``("sub", "fn")`` for ``pkg.sub.fn``.
Path = tuple[str, ...]


class ReadCode(NamedTuple):
    """What the fingerprint needs of one code object, computed once per code object."""

    #: The normalised syntax tree, or ``bytecode:...`` where the source cannot be found.
    text: str
    #: What goes into the hash for the code itself: ``fn:<text>``, encoded once.
    record: bytes
    #: The names the code and its nested code may read as globals, sorted, each with its
    #: ``global:<name>`` record.
    names: tuple[tuple[str, bytes], ...]
    #: For each name, the attribute paths the code reads off it, sorted.
    chains: dict[str, tuple[Path, ...]]


_read_cache: dict[types.CodeType, ReadCode] = {}


def read_code(fn: types.FunctionType) -> ReadCode:
    """The normalised code of ``fn`` and what it reads, cached per code object (the hot
    path: a 1000-stage chain fingerprints one function 1000 times); warns once per code
    object where the source cannot be found."""
    code = fn.__code__
    found = _read_cache.get(code)
    if found is None:
        reading = codesource.read(fn)
        if not reading.from_source:
            codesource.warn_sourceless(fn)
        chains: dict[str, set[Path]] = {}
        for chain in reading.chains:
            chains.setdefault(chain[0], set()).add(chain[1:])
        found = _read_cache[code] = ReadCode(
            reading.text,
            b"fn:" + reading.text.encode(),
            tuple((name, f"global:{name}".encode()) for name in codesource.global_names(code)),
            {name: tuple(sorted(paths)) for name, paths in chains.items()},
        )
    return found


def _feed_reads(h: Any, fn: types.FunctionType, read: ReadCode, seen: set[int]) -> None:
    """The globals and closure cells the function reads, in a stable order, and what it
    reads off the user's modules among them."""
    namespace = fn.__globals__
    for name, record in read.names:
        if name in namespace:
            h.update(record)
            _feed_read_value(h, namespace[name], read.chains.get(name), seen)
    if fn.__closure__:
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__, strict=True):
            h.update(f"free:{name}".encode())
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell: a name assigned later in the outer scope
                h.update(b"<empty>")
                continue
            _feed_read_value(h, contents, read.chains.get(name), seen)


def _feed_read_value(
    h: Any, value: object, chains: tuple[Path, ...] | None, seen: set[int]
) -> None:
    if isinstance(value, types.ModuleType):
        _feed_module(h, value, chains or (), seen)
    else:
        _feed_value(h, value, seen)


def _feed_module(
    h: Any, module: types.ModuleType, chains: tuple[Path, ...], seen: set[int]
) -> None:
    """A library's module by name. One of the user's by what the code reads off it, not by
    its name: the same folder imported as ``helpers`` (``python main.py``) or as
    ``project.helpers`` (``python -m project.main``) holds the same code.

    ``helpers.prepare`` feeds ``prepare``; ``pkg.sub.fn`` walks through ``pkg.sub`` (the
    user's module too) to ``fn``. A walk stops at anything that is not the user's module:
    a library module counts by its name, a class or a value as itself."""
    if not origin.is_user_module(module):
        h.update(f"module:{module.__name__}".encode())
        return
    h.update(b"module:<own>")
    reached: dict[str, object] = {}
    for chain in chains:
        found: object = module
        walked: list[str] = []
        for attr in chain:
            if not isinstance(found, types.ModuleType) or not origin.is_user_module(found):
                break
            # Looked up in the module's namespace: a module __getattr__ may import or build
            # things, and what it would return is not code of the module anyway.
            namespace = vars(found)
            if attr not in namespace:
                break
            found = namespace[attr]
            walked.append(attr)
        if walked:
            reached[".".join(walked)] = found
    for path in sorted(reached):
        h.update(f"attr:{path}".encode())
        _feed_value(h, reached[path], seen)


def _feed_value(h: Any, value: object, seen: set[int]) -> None:
    if isinstance(value, (str, bytes)):
        # Raw bytes, not repr: a 64 MiB constant would otherwise become 256 MB of text.
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        h.update(f"const:{type(value).__name__}:{len(data)}:".encode())
        h.update(data)
    elif isinstance(value, _CONSTANT_TYPES):
        h.update(f"const:{type(value).__name__}:{value!r}".encode())
    elif isinstance(value, (list, dict)) and id(value) in seen:
        h.update(b"<recursion>")  # a list or dict that holds itself
    elif isinstance(value, (tuple, list, set, frozenset)):
        if isinstance(value, list):
            seen.add(id(value))
        items = sorted(value, key=stable_repr) if isinstance(value, (set, frozenset)) else value
        h.update(f"seq:{type(value).__name__}:{len(items)}".encode())
        for item in items:
            _feed_value(h, item, seen)
    elif isinstance(value, dict):
        seen.add(id(value))
        h.update(f"dict:{len(value)}".encode())
        for k in sorted(value, key=stable_repr):
            h.update(stable_repr(k).encode())
            _feed_value(h, value[k], seen)
    elif isinstance(value, types.ModuleType):
        _feed_module(h, value, (), seen)
    elif isinstance(value, functools.partial):
        h.update(b"partial:")
        _feed(h, value.func, seen)
        _feed_value(h, value.args, seen)
        _feed_value(h, value.keywords, seen)
    elif isinstance(value, (types.FunctionType, types.MethodType)) or hasattr(
        value, "__nixlet_code__"
    ):
        _feed(h, value, seen)
    elif isinstance(value, types.BuiltinFunctionType):
        h.update(f"libfn:{getattr(value, '__module__', None)}.{value.__qualname__}".encode())
    elif isinstance(value, type):
        _feed_class(h, value, seen)
    else:
        kind = type(value)
        users = origin.is_user_class(kind)
        # The user's classes, like their modules, count by content, not by module name.
        name = kind.__qualname__ if users else f"{kind.__module__}.{kind.__qualname__}"
        h.update(f"obj:{name}".encode())
        # An immutable value (a path, an enum member, a frozen attrs or dataclass value such
        # as a DRef) counts by its repr. Other objects count by their kind only: their state
        # may change (a Manager fills up) or print as a memory address. Never id() or hash().
        if _is_value(value):
            text = repr(value)
            if len(text) <= _MAX_REPR:
                h.update(f"repr:{text}".encode())
        if users:
            _feed_class(h, kind, seen)  # what its methods do


def _is_value(value: object) -> bool:
    cls = type(value)
    if isinstance(value, (PurePath, enum.Enum)):
        return True
    if dataclasses.is_dataclass(cls):
        return bool(cls.__dataclass_params__.frozen)  # type: ignore[attr-defined]
    return attrs.has(cls) and getattr(cls.__setattr__, "__name__", "") == "_frozen_setattrs"


# ---------------------------------------------------------------- classes


def _feed_class(h: Any, cls: type, seen: set[int]) -> None:
    """A library's class by name; the user's by its bases, its methods (by code), its other
    class attributes (by value) and the fields libraries generate methods from (see
    ``classparts`` for what is left out)."""
    if id(cls) in seen:  # only the user's classes are walked, and so marked
        h.update(b"<recursion>")
        return
    if not origin.is_user_class(cls):
        h.update(f"obj:{cls.__module__}.{cls.__qualname__}".encode())
        return
    seen.add(id(cls))
    h.update(f"class:{cls.__qualname__}".encode())
    for base in cls.__bases__:
        h.update(b"base:")
        _feed_class(h, base, seen)
    for name, functions, value in classparts.methods_and_constants(cls):
        if functions is None:
            h.update(f"attr:{name}".encode())
            _feed_value(h, value, seen)
        else:
            h.update(f"method:{name}".encode())
            for fn in functions:
                _feed(h, fn, seen)
    for name, parts in classparts.fields(cls):
        h.update(f"field:{name}".encode())
        _feed_value(h, parts, seen)
