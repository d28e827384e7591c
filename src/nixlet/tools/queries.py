"""Questions about what the store holds. Reading only; each takes ``store=``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from nixlet.store import layout, records
from nixlet.store import opening as store_mod
from nixlet.store.opening import StoreArg
from nixlet.values.config import Config
from nixlet.values.context import decode_context
from nixlet.values.model import Context
from nixlet.values.refs import DRef, RRef

T = TypeVar("T")


def rref2path(rref: RRef | str, *, store: StoreArg = None) -> Path:
    """The folder holding a realization's files, as the build wrote them."""
    return layout.rref_out(store_mod.resolve(store), RRef.parse(rref))


def dref2path(dref: DRef | str, *, store: StoreArg = None) -> Path:
    """The folder of a derivation (its record and its realizations)."""
    return layout.dref_dir(store_mod.resolve(store), DRef.parse(dref))


def drefcfg(dref: DRef | str, *, store: StoreArg = None) -> Config:
    """The config of a derivation in the store.

    Raises:
        StoreError: it is not in the store, or its record is corrupted.
    """
    return records.read_config(store_mod.resolve(store), DRef.parse(dref), check=True)


def drefrrefs(dref: DRef | str, *, store: StoreArg = None) -> list[RRef]:
    """Every realization of a derivation, in any context, sorted."""
    return records.list_rrefs(store_mod.resolve(store), DRef.parse(dref))


def alldrefs(*, store: StoreArg = None) -> list[DRef]:
    """Every derivation in the store, sorted."""
    return records.list_drefs(store_mod.resolve(store))


def allrrefs(*, store: StoreArg = None) -> list[RRef]:
    """Every realization in the store, sorted."""
    s = store_mod.resolve(store)
    return sorted(r for d in records.list_drefs(s) for r in records.list_rrefs(s, d))


def rrefctx(rref: RRef | str, *, store: StoreArg = None) -> Context:
    """The context of a realization: the RRefs chosen for each direct dependency."""
    s, r = store_mod.resolve(store), RRef.parse(rref)
    return decode_context(records.read_context(s, r), f"context of {r}")


def drefdeps(drefs: list[DRef] | DRef | str, *, store: StoreArg = None) -> set[DRef]:
    """Every derivation the given ones depend on, transitively (themselves excluded)."""
    s = store_mod.resolve(store)
    start = (
        [DRef.parse(drefs)] if isinstance(drefs, (DRef, str)) else [DRef.parse(d) for d in drefs]
    )
    return _transitive(start, lambda d: records.read_config(s, d).deps)


def rrefdeps(rrefs: list[RRef] | RRef | str, *, store: StoreArg = None) -> set[RRef]:
    """Every realization the given ones were built from, transitively (themselves
    excluded)."""
    s = store_mod.resolve(store)
    start = (
        [RRef.parse(rrefs)] if isinstance(rrefs, (RRef, str)) else [RRef.parse(r) for r in rrefs]
    )

    def parents(r: RRef) -> list[RRef]:
        return [p for ps in rrefctx(r, store=s).values() for p in ps]

    return _transitive(start, parents)


def _transitive(start: list[T], parents: Callable[[T], Iterable[T]]) -> set[T]:
    seen: set[T] = set()
    todo = [p for s in start for p in parents(s)]
    while todo:
        item = todo.pop()
        if item not in seen:
            seen.add(item)
            todo.extend(parents(item))
    return seen
