"""Questions about what the store holds. Reading only; each takes ``store=``.

What each raises, in one place: ``RefError`` for a malformed ref; ``StoreError`` for a ref
that is not in the store, or a record that cannot be read or is corrupted (its ``path``
names the file). Listings never fail on what is not theirs (stray files, unknown folders)
nor on what another process removes while they run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from nixlet.store import layout, records
from nixlet.store import opening as store_mod
from nixlet.store.opening import StoreArg
from nixlet.values.config import Config
from nixlet.values.model import Context
from nixlet.values.refs import DRef, RRef

T = TypeVar("T")


def rref2path(rref: RRef | str, *, store: StoreArg = None) -> Path:
    """The folder holding a realization's files, as the build wrote them.

    A path computed from the ref, without looking at the store (it is called in loops):
    whether the realization is there shows when the path is used; ``lsref`` and
    ``catref`` check and say so.

    Raises:
        RefError: ``rref`` is not an RRef.
    """
    return layout.rref_out(store_mod.resolve(store), RRef.parse(rref))


def dref2path(dref: DRef | str, *, store: StoreArg = None) -> Path:
    """The folder of a derivation (its record and its realizations); like ``rref2path``,
    computed without looking at the store.

    Raises:
        RefError: ``dref`` is not a DRef.
    """
    return layout.dref_dir(store_mod.resolve(store), DRef.parse(dref))


def drefcfg(dref: DRef | str, *, store: StoreArg = None) -> Config:
    """The config of a derivation in the store.

    Raises:
        StoreError: it is not in the store, or its record cannot be read or is corrupted.
    """
    return records.read_config(store_mod.resolve(store), DRef.parse(dref), check=True)


def drefrrefs(dref: DRef | str, *, store: StoreArg = None) -> list[RRef]:
    """Every realization of a derivation, in any context, sorted; none for a derivation
    that is not in the store.

    Raises:
        StoreError: the derivation's folder cannot be listed.
    """
    return records.scan_rrefs(store_mod.resolve(store), DRef.parse(dref)) or []


def alldrefs(*, store: StoreArg = None) -> list[DRef]:
    """Every derivation in the store, sorted.

    Raises:
        StoreError: the store's folder cannot be listed.
    """
    return records.list_drefs(store_mod.resolve(store))


def allrrefs(*, store: StoreArg = None) -> list[RRef]:
    """Every realization in the store, sorted. A derivation removed by another process
    while this lists contributes what was there when its folder was read, or nothing.

    Raises:
        StoreError: a folder of the store cannot be listed.
    """
    s = store_mod.resolve(store)
    return sorted(r for d in records.list_drefs(s) for r in records.scan_rrefs(s, d) or ())


def rrefctx(rref: RRef | str, *, store: StoreArg = None) -> Context:
    """The context of a realization: the RRefs chosen for each direct dependency.

    Raises:
        StoreError: it is not in the store, or its record cannot be read or is corrupted.
    """
    return records.read_context_refs(store_mod.resolve(store), RRef.parse(rref))


def drefdeps(drefs: list[DRef] | DRef | str, *, store: StoreArg = None) -> set[DRef]:
    """Every derivation the given ones depend on, transitively (themselves excluded).

    Raises:
        StoreError: one of them is not in the store, or a record cannot be read or is
            corrupted.
    """
    s = store_mod.resolve(store)
    start = _refs(drefs, DRef.parse)
    return _transitive(start, lambda d: records.read_config(s, d).deps)


def rrefdeps(rrefs: list[RRef] | RRef | str, *, store: StoreArg = None) -> set[RRef]:
    """Every realization the given ones were built from, transitively (themselves
    excluded).

    Raises:
        StoreError: one of them is not in the store, or a record cannot be read or is
            corrupted.
    """
    s = store_mod.resolve(store)
    start = _refs(rrefs, RRef.parse)

    def parents(r: RRef) -> list[RRef]:
        return [p for ps in records.read_context_refs(s, r).values() for p in ps]

    return _transitive(start, parents)


def _refs(value: object, parse: Callable[[object], T]) -> list[T]:
    """One ref or several, parsed: a lone string is one ref, not its characters, and
    anything else that is not a list, tuple or set is parsed as one (and refused with a
    RefError rather than iterated)."""
    if isinstance(value, (list, tuple, set, frozenset)):
        return [parse(v) for v in value]
    return [parse(value)]


def _transitive(start: list[T], parents: Callable[[T], Iterable[T]]) -> set[T]:
    seen: set[T] = set()
    todo = [p for s in start for p in parents(s)]
    while todo:
        item = todo.pop()
        if item not in seen:
            seen.add(item)
            todo.extend(parents(item))
    return seen
