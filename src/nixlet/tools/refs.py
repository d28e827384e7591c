"""Abbreviated references, as git abbreviates commits: a unique start of a ref is enough.

A ref's *key* is its text without the ``dref:`` or ``rref:`` tag: ``<dhash>-<name>`` for a
derivation, ``<rhash>-<dhash>-<name>`` for a realization. ``resolve_ref`` accepts any start
of a key that only one ref of the store has (``4okk``), with or without the tag (the tag
restricts the search to that kind); ``short_refs`` gives the shortest such start of each ref,
for listings.

Uniqueness is computed over whole keys, never over the realization hash's halves alone: the
realizations of one derivation built in one context share the first half of their hash (it
names the context), so a prefix that only reaches into that half names them all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from nixlet.store import opening as store_mod
from nixlet.store import records
from nixlet.store.opening import StoreArg
from nixlet.values.errors import RefError, StoreError
from nixlet.values.model import Store
from nixlet.values.refs import DRef, RRef, is_dref, is_rref, parse_ref

#: The shortest abbreviation accepted and shown (git shows at least 7 of its hex digits;
#: 4 of nixlet's 32-letter alphabet already tell a million refs apart).
MIN_ABBREV = 4

_KEY_CHARS = re.compile(r"[A-Za-z0-9._+-]+")
#: How many candidates an ambiguity error lists before it says how many more there are.
_SHOWN = 10


def ref_key(ref: DRef | RRef) -> str:
    """A ref's text without its ``dref:`` or ``rref:`` tag."""
    return str(ref)[5:]


def resolve_ref(text: DRef | RRef | str, *, store: StoreArg = None) -> DRef | RRef:
    """The one ref of the store that ``text`` names, in full or abbreviated.

    ``text`` is a DRef or RRef (returned as is), its full text (parsed, not looked up:
    whether it is in the store shows when it is used), or the start of a ref's key, with
    or without its tag: ``dref:4okk``, ``rref:4okk``, ``4okk``. A realization is usually
    given by the start of its realization hash. A start that is a whole key names that ref
    even when a longer key starts with it.

    Raises:
        RefError: ``text`` is too short (under 4 characters of key), holds characters no
            ref has, or is ambiguous: the message lists the refs it could name.
        StoreError: no ref of the store starts with it, or the store cannot be listed.
    """
    if isinstance(text, (DRef, RRef)):
        return text
    if not isinstance(text, str):
        raise RefError(f"not a reference: {text!r}")
    if is_rref(text):
        return RRef.parse(text)
    if is_dref(text):
        return DRef.parse(text)
    kind, key = _split_tag(text)
    if not _KEY_CHARS.fullmatch(key):
        raise RefError(
            f"not a reference or an abbreviation of one: {text!r} (expected 'dref:<hash>-<name>'"
            ", 'rref:<hash>-<hash>-<name>', or the start of one's hash)"
        )
    if len(key) < MIN_ABBREV:
        raise RefError(
            f"{text!r} is too short to name a ref: give at least {MIN_ABBREV} characters of "
            "its hash"
        )
    s = store_mod.resolve(store)
    found = [r for r in _candidates(s, kind) if ref_key(r).startswith(key)]
    exact = [r for r in found if ref_key(r) == key]
    if exact:
        return exact[0]
    if not found:
        what = {"dref": "derivation", "rref": "realization", None: "derivation or realization"}
        raise StoreError(f"no {what[kind]} in the store {s.root} starts with {key!r}", path=s.root)
    if len(found) > 1:
        shown = "\n  ".join(str(r) for r in sorted(found, key=str)[:_SHOWN])
        more = f"\n  ... and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
        raise RefError(
            f"{text!r} is ambiguous: {len(found)} refs start with it; give more characters. "
            f"Candidates:\n  {shown}{more}"
        )
    return found[0]


def short_refs(
    refs: Iterable[DRef | RRef | str], *, store: StoreArg = None
) -> dict[DRef | RRef, str]:
    """The shortest abbreviation of each ref that ``resolve_ref`` resolves back to it
    (without the tag; at least 4 characters), among every ref of the store: listings show
    these. A ref that is not in the store is counted among them too.

    Raises:
        RefError: one of ``refs`` is not a DRef or RRef.
        StoreError: the store cannot be listed.
    """
    wanted = [parse_ref(r) for r in refs]
    s = store_mod.resolve(store)
    keys = sorted({ref_key(r) for r in _candidates(s, None)} | {ref_key(r) for r in wanted})
    lengths: dict[str, int] = {}
    for i, key in enumerate(keys):
        # In sorted order, the keys sharing the longest start with this one are its
        # neighbours; one more character than that is unique.
        shared = max(
            (_common(key, keys[j]) for j in (i - 1, i + 1) if 0 <= j < len(keys)), default=0
        )
        lengths[key] = min(len(key), max(MIN_ABBREV, shared + 1))
    return {r: ref_key(r)[: lengths[ref_key(r)]] for r in wanted}


def short_ref(ref: DRef | RRef | str, *, store: StoreArg = None) -> str:
    """The shortest abbreviation of one ref (see ``short_refs``, which does a listing's
    refs at once: each call lists the whole store).

    Raises:
        RefError: ``ref`` is not a DRef or RRef.
        StoreError: the store cannot be listed.
    """
    r = parse_ref(ref)
    return short_refs([r], store=store)[r]


def all_refs(*, store: StoreArg = None) -> list[DRef | RRef]:
    """Every derivation and realization of the store (what abbreviations are resolved
    against), derivations first."""
    return _candidates(store_mod.resolve(store), None)


def _candidates(store: Store, kind: str | None) -> list[DRef | RRef]:
    drefs = records.list_drefs(store)
    found: list[DRef | RRef] = []
    if kind in (None, "dref"):
        found.extend(drefs)
    if kind in (None, "rref"):
        for d in drefs:
            found.extend(records.scan_rrefs(store, d) or ())
    return found


def _split_tag(text: str) -> tuple[str | None, str]:
    for tag in ("dref", "rref"):
        if text.startswith(tag + ":"):
            return tag, text[len(tag) + 1 :]
    return None, text


def _common(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
