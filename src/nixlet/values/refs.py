"""References: ``DRef`` and ``RRef``, the names they carry, and the store folder names made
from them. Frozen attrs values that validate when built and round-trip through text
(``DRef.parse(str(d)) == d``). Nothing here touches the filesystem.
"""

from __future__ import annotations

import functools
import re
from typing import Final, TypeGuard

import attrs

from nixlet.values.errors import ConfigError, RefError
from nixlet.values.hashing import HASH_CHARS

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
            where="config['name']",
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
@attrs.frozen(cache_hash=True)  # a plan keys several dicts by DRef per derivation
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


def parse_ref(ref: object) -> DRef | RRef:
    """A DRef or an RRef, or the text of one, as a value.

    Raises:
        RefError: ``ref`` is neither.
    """
    if isinstance(ref, (DRef, RRef)):
        return ref
    if is_rref(ref):
        return RRef.parse(ref)
    if is_dref(ref):
        return DRef.parse(ref)
    raise RefError(f"not a dref: or rref: reference: {ref!r}")


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
