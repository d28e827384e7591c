"""Which parts of a user's class the code fingerprint counts.

A class counts by its bases, its methods and its other class attributes. Left out are what
Python and libraries put into a class on their own, which differs between their versions
and says nothing about the user's code: bookkeeping under dunder and sunder names
(``__doc__``, ``__module__``, enum's member maps, Python 3.13's ``__replace__``), the
accessors made for slots and namedtuple fields, and the methods dataclasses, attrs and
namedtuple compile from the fields, which count through the fields instead.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import operator
import types
from collections.abc import Iterator

import attrs

from nixlet.values import origin

#: Functions Python 3.14 compiles for a class's annotations: annotations do not change what
#: a class does (the fields dataclasses and attrs make of them count on their own).
_ANNOTATION_FUNCTIONS = frozenset({"__annotate__", "__annotate_func__"})


#: One class's attributes that count, and the class's namespace values they were worked out
#: from (a class can be changed after it is made, and is then worked out again).
_Plan = tuple[
    tuple[str, ...], tuple[object, ...], tuple[tuple[str, tuple[object, ...] | None, object], ...]
]
_plans: dict[type, _Plan] = {}


def methods_and_constants(
    cls: type,
) -> tuple[tuple[str, tuple[object, ...] | None, object], ...]:
    """The attributes of ``cls`` that count, in name order: ``(name, functions, value)``,
    with ``functions`` the functions the attribute holds (a method, a static or class
    method, a property's accessors) or None for a plain value.

    Worked out once per class while its namespace holds the same objects: a class used by
    the build function of a 1000-stage chain is fingerprinted 1000 times."""
    namespace = vars(cls)
    names, values = tuple(namespace), tuple(namespace.values())
    plan = _plans.get(cls)
    if plan is None or plan[0] != names or not all(map(operator.is_, plan[1], values)):
        plan = _plans[cls] = (names, values, tuple(_work_out(cls)))
    return plan[2]


def _work_out(cls: type) -> Iterator[tuple[str, tuple[object, ...] | None, object]]:
    generates = generates_methods(cls)
    namespace = vars(cls)
    for name in sorted(namespace):
        member = namespace[name]
        functions = _member_functions(member)
        if functions is None:
            if not _is_special(name) and not _is_field_accessor(cls, name, member):
                yield name, None, member
            continue
        if name in _ANNOTATION_FUNCTIONS:
            continue
        if generates:
            functions = [fn for fn in functions if not _is_generated(fn, cls)]
        if _is_special(name):
            functions = [fn for fn in functions if _is_users_function(fn)]
        if functions:
            yield name, tuple(functions), member


def generates_methods(cls: type) -> bool:
    """Whether dataclasses, attrs or namedtuple wrote methods of ``cls`` from its fields."""
    return (
        dataclasses.is_dataclass(cls)
        or attrs.has(cls)
        or (issubclass(cls, tuple) and "_fields" in vars(cls))
    )


def fields(cls: type) -> Iterator[tuple[str, tuple[object, ...]]]:
    """The fields dataclasses and attrs generate methods from: each name with its default,
    its default factory, and attrs' converter and validator (namedtuple's fields and
    defaults are plain class attributes, ``_fields`` and ``_field_defaults``)."""
    if dataclasses.is_dataclass(cls):
        for field in dataclasses.fields(cls):
            yield field.name, (field.default, field.default_factory)
    elif attrs.has(cls):
        for attribute in attrs.fields(cls):
            default = attribute.default
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                parts: tuple[object, ...] = (default.factory, default.takes_self)
            else:
                parts = (default,)
            hooks = (attribute.converter, attribute.validator)
            yield attribute.name, parts + tuple(hook for hook in hooks if hook is not None)


def _member_functions(member: object) -> list[object] | None:
    if isinstance(member, (staticmethod, classmethod)):
        return [member.__func__]
    if isinstance(member, property):
        return [f for f in (member.fget, member.fset, member.fdel) if f is not None]
    if isinstance(member, functools.cached_property):
        return [member.func]
    if isinstance(member, types.FunctionType):
        return [member]
    return None


def _is_special(name: str) -> bool:
    return len(name) > 2 and name[0] == "_" and name[-1] == "_"


def _is_field_accessor(cls: type, name: str, member: object) -> bool:
    """Whether ``member`` is the accessor Python made for a slot or a namedtuple field: its
    type is named differently between Python versions (``_collections._tuplegetter`` became
    ``collections._tuplegetter`` in 3.12)."""
    if isinstance(member, types.MemberDescriptorType):
        return True
    return issubclass(cls, tuple) and name in vars(cls).get("_fields", ())


def _innermost(fn: object) -> object:
    # Decorators are looked through: dataclasses wraps the __repr__ it generates.
    return inspect.unwrap(fn) if callable(fn) else fn


def _is_users_function(fn: object) -> bool:
    target = _innermost(fn)
    return isinstance(target, types.FunctionType) and origin.is_user_function(target)


def _is_generated(fn: object, cls: type) -> bool:
    """Whether dataclasses, attrs or namedtuple compiled ``fn`` for ``cls`` from a string.

    As bytecode it would differ between Python versions, and as code it would change with
    the library's version. Such a function has no file (``<string>``, ``<attrs generated
    ...>``) and was compiled outside the class body (``__create_fn__.<locals>.__init__``),
    where a method the user typed into ``python -c`` was compiled inside it
    (``Point.norm``)."""
    code = getattr(_innermost(fn), "__code__", None)
    return (
        isinstance(code, types.CodeType)
        and code.co_filename.startswith("<")
        and not code.co_qualname.startswith(f"{cls.__qualname__}.")
    )
