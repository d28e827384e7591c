"""The value types: references, configs, derivations, closures, builds.

All are frozen attrs classes that validate when built and round-trip through text
(``DRef.parse(str(d)) == d``). Nothing here touches the filesystem.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, TypeAlias, TypeGuard

import attrs

from nixlet.errors import ClosureError, ConfigError, RefError
from nixlet.hashing import HASH_CHARS, canonical_json

#: A JSON value as nixlet stores it (recursive; no Any in the public types).
JSON: TypeAlias = "str | int | float | bool | None | list[JSON] | dict[str, JSON]"

NAME_CHARS = r"[A-Za-z0-9._+-]"
NAME_MAX = 64
HASH_RE = f"[a-z2-7]{{{HASH_CHARS}}}"
_NAME = re.compile(f"{NAME_CHARS}{{1,{NAME_MAX}}}")
_DREF = re.compile(f"dref:({HASH_RE})-({NAME_CHARS}{{1,{NAME_MAX}}})")
_RREF = re.compile(f"rref:({HASH_RE})-({HASH_RE})-({NAME_CHARS}{{1,{NAME_MAX}}})")
_HASH = re.compile(HASH_RE)
DEFAULT_NAME: Final = "unnamed"
PROMISE_TAG: Final = "__promise__"


def folder_name(dhash: str, name: str) -> str:
    """The store folder of the derivation with this hash and name (``DRef.key``); also
    the parent folder of each of its realizations."""
    return f"{dhash}-{name}"


def _valid_name(name: object) -> TypeGuard[str]:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None and ".." not in name


def check_name(name: object) -> str:
    """Return ``name`` if it is a valid derivation name, else raise ``ConfigError``."""
    if not _valid_name(name):
        raise ConfigError(
            f"invalid derivation name {name!r}: use 1 to {NAME_MAX} characters of "
            "[A-Za-z0-9._+-], without '..'",
            name=name,
        )
    return name


def _check_hash(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _HASH.fullmatch(value):
        raise RefError(
            f"invalid {attribute.name} {value!r}: expected {HASH_CHARS} chars of [a-z2-7]"
        )


def _check_ref_name(_: object, __: attrs.Attribute[str], value: str) -> None:
    if not _valid_name(value):
        raise RefError(f"invalid reference name {value!r}")


# Ordering is written out rather than generated (attrs' order=True): the generated
# comparisons were measured at 9 us each, and realize sorts RRefs for every derivation.
@functools.total_ordering
@attrs.frozen
class DRef:
    """A derivation reference, ``dref:<dhash>-<name>``: names a derivation by the hash of
    its canonical config and its build code."""

    dhash: str = attrs.field(validator=_check_hash)
    name: str = attrs.field(validator=_check_ref_name)

    def __str__(self) -> str:
        return f"dref:{self.dhash}-{self.name}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, DRef):
            return NotImplemented
        return (self.dhash, self.name) < (other.dhash, other.name)

    @property
    def key(self) -> str:
        """The folder name of this derivation in the store: ``<dhash>-<name>``."""
        return folder_name(self.dhash, self.name)

    @classmethod
    def parse(cls, text: object) -> DRef:
        """Parse ``dref:<dhash>-<name>``; raise ``RefError`` on anything else."""
        if isinstance(text, DRef):
            return text
        m = _DREF.fullmatch(text) if isinstance(text, str) else None
        if m is None or ".." in m.group(2):
            raise RefError(f"not a derivation reference: {text!r} (expected 'dref:<hash>-<name>')")
        return cls(m.group(1), m.group(2))


@functools.total_ordering
@attrs.frozen
class RRef:
    """A realization reference, ``rref:<rhash>-<dhash>-<name>``: one published output of
    a derivation, named by its context and its content."""

    rhash: str = attrs.field(validator=_check_hash)
    dhash: str = attrs.field(validator=_check_hash)
    name: str = attrs.field(validator=_check_ref_name)

    def __str__(self) -> str:
        return f"rref:{self.rhash}-{self.dhash}-{self.name}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, RRef):
            return NotImplemented
        return (self.rhash, self.dhash, self.name) < (other.rhash, other.dhash, other.name)

    @classmethod
    def _trusted(cls, rhash: str, dhash: str, name: str) -> RRef:
        """Build from parts already known to be valid (a listed folder), skipping the
        validators: a realize lists every candidate of every derivation."""
        rref = object.__new__(cls)
        object.__setattr__(rref, "rhash", rhash)
        object.__setattr__(rref, "dhash", dhash)
        object.__setattr__(rref, "name", name)
        return rref

    @property
    def dref(self) -> DRef:
        """The derivation this realization belongs to."""
        return DRef(self.dhash, self.name)

    @classmethod
    def parse(cls, text: object) -> RRef:
        """Parse ``rref:<rhash>-<dhash>-<name>``; raise ``RefError`` on anything else."""
        if isinstance(text, RRef):
            return text
        m = _RREF.fullmatch(text) if isinstance(text, str) else None
        if m is None or ".." in m.group(3):
            raise RefError(
                f"not a realization reference: {text!r} (expected 'rref:<hash>-<hash>-<name>')"
            )
        return cls(m.group(1), m.group(2), m.group(3))


def rref2dref(rref: RRef | str) -> DRef:
    """The derivation of a realization."""
    return RRef.parse(rref).dref


def is_dref(value: object) -> bool:
    """Whether ``value`` is a DRef or a string that parses as one."""
    if isinstance(value, DRef):
        return True
    return (
        isinstance(value, str) and value.startswith("dref:") and _DREF.fullmatch(value) is not None
    )


def is_rref(value: object) -> bool:
    """Whether ``value`` is an RRef or a string that parses as one."""
    if isinstance(value, RRef):
        return True
    return (
        isinstance(value, str) and value.startswith("rref:") and _RREF.fullmatch(value) is not None
    )


class _Promise:
    """The ``promise`` marker; see ``nixlet.promise``."""

    _instance: _Promise | None = None

    def __new__(cls) -> _Promise:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "promise"

    def __reduce__(self) -> str:
        return "promise"


#: Marker for the head of a config value ``[promise, "sub", "file"]``: the build promises to
#: create that path in its output; a build that does not is refused with ``PromiseError``.
#: It is stored in the canonical config as the string ``"__promise__"``.
promise: Final = _Promise()

#: A path inside a dependency's realization: ``[dref, "sub", "file"]``.
RefPath: TypeAlias = list[str | DRef]


@attrs.frozen
class Config:
    """A validated, immutable derivation config. Build one with ``mkconfig``.

    ``canonical`` is its canonical JSON (the bytes the DRef hashes); ``deps`` the DRefs
    found inside it, in first-seen order; ``promises`` the paths promised by
    ``[promise, ...]`` values.
    """

    canonical: bytes
    name: str
    deps: tuple[DRef, ...]
    promises: tuple[tuple[str, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        """A fresh copy of the config as a plain dict (DRefs as strings)."""
        result: dict[str, Any] = json.loads(self.canonical)
        return result


def mkconfig(d: Config | Mapping[str, Any]) -> Config:
    """Validate a JSON-able dict and freeze it into a ``Config``.

    Keys must be ``str``; values ``str``, ``int``, ``float`` (finite), ``bool``, ``None``,
    lists and dicts of these, ``DRef`` (stored as its string) and ``promise``. The optional
    ``name`` key names the derivation (``[A-Za-z0-9._+-]``, at most 64 chars, no ``..``).

    Raises:
        ConfigError: for anything else (sets, bytes, tuples, objects, NaN, non-str keys,
            RRefs, whose place is a matcher, not a config), naming the offending path.
    """
    if isinstance(d, Config):
        return d
    if not isinstance(d, Mapping):
        raise ConfigError(f"a config must be a dict, not {type(d).__name__}")
    walk = _ConfigWalk()
    try:
        plain = walk.plain(d, "config")
    except RecursionError:
        raise ConfigError("config is nested too deeply to be stored as JSON") from None
    name = check_name(plain.get("name", DEFAULT_NAME))
    try:
        canonical = canonical_json(plain)
    except ValueError as e:  # unreachable after the walk; kept as the last line of defence
        raise ConfigError(f"config is not canonical JSON: {e}") from None
    return Config(canonical, name, tuple(walk.deps), tuple(walk.promises))


@attrs.define
class _ConfigWalk:
    """One validation of a config: what it found so far, and the containers being walked
    (to refuse a circular config)."""

    deps: dict[DRef, None] = attrs.field(factory=dict)
    promises: list[tuple[str, ...]] = attrs.field(factory=list)
    active: set[int] = attrs.field(factory=set)

    def plain(self, value: Any, where: str) -> Any:
        """Validate one value and return its plain JSON form, collecting deps and promises."""
        t = type(value)
        if t is str:
            if value.startswith("dref:") and is_dref(value):
                self.deps[DRef.parse(value)] = None
            elif value.startswith("rref:") and is_rref(value):
                raise ConfigError(
                    f"{where}: a realization reference {value!r} cannot be part of a config; "
                    "refer to its derivation and choose the realization with match_exact",
                    where=where,
                )
            return value
        if t is bool or t is int or value is None:
            return value
        if t is float:
            if value != value or value in (float("inf"), float("-inf")):
                raise ConfigError(f"{where}: {value!r} is not a finite number", where=where)
            return value
        if t is DRef:
            self.deps[value] = None
            return str(value)
        if value is promise:
            return PROMISE_TAG
        if t is list or t is dict or isinstance(value, Mapping):
            if id(value) in self.active:
                raise ConfigError(f"{where}: the config contains itself (a cycle)", where=where)
            self.active.add(id(value))
            try:
                return self.container(value, where)
            finally:
                self.active.discard(id(value))
        hint = " (use a list)" if t is tuple else ""
        raise ConfigError(
            f"{where}: {t.__name__} value {value!r} is not JSON-able{hint}; "
            "use str, int, float, bool, None, list or dict",
            where=where,
        )

    def container(self, value: Any, where: str) -> Any:
        """A list (noting a promise at its head) or a dict with str keys."""
        if type(value) is list:
            items = [self.plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
            if items and items[0] == PROMISE_TAG:
                self.promises.append(_promise_path(items, where))
            return items
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise ConfigError(f"{where}: key {k!r} is not a str", where=where)
            out[k] = self.plain(v, f"{where}[{k!r}]")
        return out


def plain_parts(parts: Sequence[object]) -> bool:
    """Whether every part of a path inside a realization is a plain name: a non-empty str,
    not ``.`` or ``..``, without ``/`` (so a RefPath or promise cannot leave its folder)."""
    return all(type(p) is str and p not in ("", ".", "..") and "/" not in p for p in parts)


def _promise_path(items: list[Any], where: str) -> tuple[str, ...]:
    parts = items[1:]
    if not parts or not plain_parts(parts):
        raise ConfigError(
            f"{where}: a promise is [promise, 'sub', 'file'] with plain path parts, got {items!r}",
            where=where,
        )
    return tuple(parts)


#: The RRefs chosen for each direct dependency of a derivation.
Context: TypeAlias = Mapping[DRef, tuple[RRef, ...]]


@attrs.frozen
class Store:
    """A nixlet store: a folder tree. Get one from ``store_initialize``."""

    root: Path = attrs.field(converter=Path)

    def __str__(self) -> str:
        return str(self.root)


class Matcher(Protocol):
    """Chooses among the realizations of one derivation built in one context.

    Returns the chosen RRefs (a subset of ``rrefs``), or ``None`` to ask for more builds.
    """

    def __call__(self, store: Store, rrefs: list[RRef], /) -> list[RRef] | None: ...


class Realizer(Protocol):
    """Builds one derivation: returns output folders in the store's staging area, each of
    which realize publishes as one realization. ``build_wrapper`` makes one from a plain
    function of a ``Build``."""

    def __call__(self, store: Store, dref: DRef, context: Context, /) -> Sequence[Path]: ...


@attrs.frozen
class Derivation:
    """One node of a closure: a config, its code identity and how to match and build it."""

    dref: DRef
    config: Config
    code: str
    matcher: Matcher
    realizer: Realizer


@attrs.frozen
class Closure:
    """What ``instantiate`` returns: the result DRef and every derivation it needs, in
    dependency order (each after all of its dependencies)."""

    result: DRef
    derivations: tuple[Derivation, ...]
    store: Store

    def derivation(self, dref: DRef) -> Derivation:
        """The derivation of ``dref`` in this closure."""
        for d in self.derivations:
            if d.dref == dref:
                return d
        raise ClosureError(f"{dref} is not part of this closure", dref=dref)


@attrs.frozen
class Build:
    """What a build function receives: the derivation, its config, the chosen
    realizations of its dependencies, and the output folders to fill."""

    store: Store
    dref: DRef
    config: Config
    context: Context
    outpaths: tuple[Path, ...]
    staging: Path


BuildFunction: TypeAlias = Callable[[Build], None]
