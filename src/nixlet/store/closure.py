"""The closure of refs in a store: the realizations a sync copies. Reading only.

The closure of an RRef is the RRef and, transitively, the RRefs its context names (each
realization records only its direct dependencies' choices, so the walk reads one
``meta.json`` per realization). A DRef stands for all of its realizations. The closure is
what makes a copy usable on its own: every realization in it finds the realizations it was
built from beside it.
"""

from __future__ import annotations

from collections.abc import Iterable

from nixlet.store import records
from nixlet.values.errors import StoreError, UsageError
from nixlet.values.model import Store
from nixlet.values.refs import DRef, RRef

#: What ``sync`` and ``closure`` take as refs: one ref or several (objects or strings),
#: ``None`` for the whole store.
Refs = DRef | RRef | str | Iterable[DRef | RRef | str] | None


def parse_refs(refs: Refs) -> list[DRef | RRef] | None:
    """The refs a caller gave, parsed (``None`` stays ``None``: the whole store). A lone
    string is one ref, not its characters.

    Raises:
        RefError: a string is neither a DRef nor an RRef.
        UsageError: ``refs`` is not a ref, a string or an iterable of them.
    """
    if refs is None:
        return None
    if isinstance(refs, (DRef, RRef, str)):
        refs = [refs]
    try:
        items = list(refs)
    except TypeError:
        raise UsageError(
            f"refs must be a DRef, an RRef, a string of one, or a list of them, got {refs!r}",
            argument="refs",
        ) from None
    return [_parse(item) for item in items]


def _parse(item: object) -> DRef | RRef:
    if isinstance(item, (DRef, RRef)):
        return item
    if isinstance(item, str) and item.startswith("rref:"):
        return RRef.parse(item)
    if isinstance(item, str):
        return DRef.parse(item)
    raise UsageError(f"refs must hold DRefs, RRefs or their strings, got {item!r}", argument="refs")


def closure(store: Store, refs: list[DRef | RRef] | None) -> list[RRef]:
    """Every realization the given refs need, sorted: each RRef with those it was built
    from, transitively; each DRef's realizations with theirs; ``None``: every realization
    of the store.

    Raises:
        StoreError: a ref is not in the store (a DRef without a realization counts as
            absent), or a record on the way cannot be read or is corrupted.
    """
    if refs is None:
        # Names only (no stat per realization): a stray file named like a hash would be
        # offered, and the receiver refuses it.
        return [r for d in records.list_drefs(store) for r in records.list_rrefs(store, d)]
    todo: list[RRef] = []
    for ref in refs:
        if isinstance(ref, DRef):
            found = records.scan_rrefs(store, ref)
            if not found:
                raise StoreError(
                    f"{ref} has no realization in the store {store.root}", path=store.root, ref=ref
                )
            todo.extend(found)
        else:
            todo.append(ref)
    seen: set[RRef] = set()
    while todo:
        rref = todo.pop()
        if rref in seen:
            continue
        seen.add(rref)
        # read_context_refs raises StoreError naming the ref when it is not in the store.
        for parents in records.read_context_refs(store, rref).values():
            todo.extend(p for p in parents if p not in seen)
    return sorted(seen)
