"""Every error nixlet raises on purpose.

One root, one child per thing a user can act on; each child also subclasses the builtin it
resembles, so ``except ValueError`` keeps working for callers that do not know nixlet::

    NixletError
    ├── ConfigError      (ValueError)    a config that is not canonical JSON, a bad name
    ├── RefError         (ValueError)    a malformed dref:/rref: string or RefPath
    ├── ClosureError     (ValueError)    a dependency missing from the closure, a bad target
    ├── StoreError       (OSError)       no store, an unknown format, a corrupted record
    ├── BuildError       (RuntimeError)  a realizer raised; carries the staging folder
    │   └── PromiseError                 a build did not create a promised file
    ├── MatcherError     (RuntimeError)  a matcher broke its contract or cannot be satisfied
    └── UsageError       (ValueError, TypeError)  an argument a function cannot take

Every error pickles with its fields (runners move errors between processes): the fields are
keyword arguments of ``__init__`` and ``__reduce__`` gives them back.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

# A leaf: nothing of nixlet is imported at run time. The field annotations name DRef and
# RRef for type checkers; at run time typing.get_type_hints resolves them in the ``nixlet``
# namespace, which every public error presents as its module (see nixlet/__init__.py).
if TYPE_CHECKING:
    from nixlet.values.refs import DRef, RRef


class NixletError(Exception):
    """The root of every error nixlet raises on purpose."""

    def __init__(self, message: str, **fields: Any) -> None:
        undeclared = set(fields) - _declared_fields(type(self))
        if undeclared:
            # A programming error inside nixlet (or a user's subclass): a field that no
            # annotation declares would not type-check for callers reading it.
            raise TypeError(f"{type(self).__name__} has no field {sorted(undeclared)}")
        super().__init__(message)
        self.message = message
        self._fields = fields
        for key, value in fields.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's default reduce replays ``args`` only and would drop the fields; a field
        # that cannot cross a process boundary (an exception holding a socket) travels as text.
        return (
            _rebuild,
            (type(self), self.message, {k: _portable(v) for k, v in self._fields.items()}),
        )

    def __str__(self) -> str:
        return self.message


def _declared_fields(cls: type) -> frozenset[str]:
    """The fields an error class declares: the annotations of it and its bases."""
    found = _fields_cache.get(cls)
    if found is None:
        names: set[str] = set()
        for klass in cls.__mro__:
            names.update(vars(klass).get("__annotations__", {}))
        found = _fields_cache[cls] = frozenset(names)
    return found


_fields_cache: dict[type, frozenset[str]] = {}


def _portable(value: Any) -> Any:
    # A full round trip: an exception whose __init__ takes other arguments than its args
    # pickles fine and fails only when loaded, in the other process.
    try:
        pickle.loads(pickle.dumps(value))
    except Exception:
        return repr(value)
    return value


def _rebuild(cls: type[NixletError], message: str, fields: dict[str, Any]) -> NixletError:
    error = cls.__new__(cls)
    NixletError.__init__(error, message, **fields)
    return error


class ConfigError(NixletError, ValueError):
    """A config is not a JSON-able dict of the accepted types, or its name is invalid.
    Field: ``where`` (the path of the offending value inside the config), when known."""

    where: str | None = None


class RefError(NixletError, ValueError):
    """A string or value is not a well-formed DRef, RRef or RefPath."""


class ClosureError(NixletError, ValueError):
    """A closure is inconsistent: a dependency without a derivation, a bad target.
    Field: ``dref``, when one is to blame."""

    dref: DRef | str | None = None


class StoreError(NixletError, OSError):
    """The store is missing, of an unknown format, unwritable or full, or holds a corrupted
    record. Fields: ``path`` (the folder or file concerned) and ``ref`` (the DRef or RRef
    concerned), when known."""

    path: Path | str | None = None
    ref: DRef | RRef | None = None


class BuildError(NixletError, RuntimeError):
    """A realizer failed. Fields: ``dref``, ``cause`` (the original exception, or its text
    when it could not cross a process boundary) and ``staging`` (the kept staging folder,
    for inspection; it is garbage once the process ends)."""

    dref: DRef | None = None
    cause: BaseException | str | None = None
    staging: Path | None = None


class PromiseError(BuildError):
    """A build finished without creating a file its config promised. Fields: ``dref``,
    ``missing`` (the promised relative paths) and ``staging``."""

    missing: list[str] | None = None


class MatcherError(NixletError, RuntimeError):
    """A matcher returned RRefs it was not given, or cannot be satisfied by building more.
    Fields: ``matcher`` (its name) and ``dref``."""

    matcher: str | None = None
    dref: DRef | None = None


class UsageError(NixletError, ValueError, TypeError):
    """A nixlet function was called with an argument it cannot take (``match_some(0)``,
    ``build_wrapper(f, nouts=0)``, ``mkdrv`` without its Manager, ``realize`` of a string).
    Field: ``argument`` (the parameter's name), when one is to blame. It is both a
    ``ValueError`` and a ``TypeError``, as the builtins a caller may already catch."""

    argument: str | None = None


class NixletWarning(UserWarning):
    """Something was skipped or suspicious, but the operation went on."""
