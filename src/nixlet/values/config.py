"""Configs: validating a JSON-able dict and freezing it into a canonical ``Config``; the
``promise`` marker and ``RefPath``. Nothing here touches the filesystem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

import attrs

from nixlet.values.errors import ConfigError
from nixlet.values.hashing import canonical_json
from nixlet.values.refs import DEFAULT_NAME, PROMISE_TAG, DRef, check_name, is_dref, is_rref

#: A JSON value as nixlet stores it (recursive; no Any in the public types).
JSON: TypeAlias = "str | int | float | bool | None | list[JSON] | dict[str, JSON]"


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
