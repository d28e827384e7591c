"""Describing one ref: a realization's build times and files (from its metadata, without
walking its folder), and the bytes a ref takes, alone or with everything it was built
from. ``nixlet show``, ``find`` and ``du --closure`` are made of these.

What each raises, in one place: ``RefError`` for a malformed ref; ``StoreError`` for a ref
that is not in the store, or a record that cannot be read or is corrupted.
"""

from __future__ import annotations

import json

from nixlet.store import opening as store_mod
from nixlet.store import records
from nixlet.store.layout import META_FILE, rref_dir
from nixlet.store.opening import StoreArg
from nixlet.values.errors import StoreError
from nixlet.values.manifest import Entry, parse
from nixlet.values.model import Store
from nixlet.values.refs import DRef, RRef, parse_ref


def rreftimes(rref: RRef | str, *, store: StoreArg = None) -> tuple[float, float]:
    """When a realization's build started and finished, as POSIX times (seconds; the
    store keeps microseconds, in UTC).

    Raises:
        StoreError: it is not in the store, or its record cannot be read or is corrupted.
    """
    return records.read_build_times(store_mod.resolve(store), RRef.parse(rref))


def rreffiles(rref: RRef | str, *, store: StoreArg = None) -> list[str]:
    """Every file and symlink of a realization, as ``/``-separated paths relative to its
    ``rref2path`` folder, sorted; folders are not listed. Read from the realization's
    manifest, so it lists what was published, whatever has happened to the folder since.

    Raises:
        StoreError: it is not in the store, or its record cannot be read or is corrupted.
    """
    s = store_mod.resolve(store)
    return [e.path for e in manifest_entries(s, RRef.parse(rref)) if e.kind != "dir"]


def refsize(ref: DRef | RRef | str, *, closure: bool = False, store: StoreArg = None) -> int:
    """The bytes a ref takes in the store, as ``du`` counts them (every file and symlink
    of a realization's folder, metadata included).

    A realization counts alone; a derivation counts all its realizations. With
    ``closure=True`` every realization they were built from counts too, transitively,
    each once: what a copy of the ref into another store needs (its closure).

    Raises:
        RefError: ``ref`` is not a DRef or RRef.
        StoreError: the ref, or (``closure=True``) a realization it was built from, is not
            in the store (removed with ``rmref``): a closure with a hole has no size. Also
            when a record or file cannot be read.
    """
    s = store_mod.resolve(store)
    r = parse_ref(ref)
    if isinstance(r, DRef):
        own = records.scan_rrefs(s, r)
        if own is None:
            raise StoreError(f"{r} is not in the store {s.root}", path=s.root, ref=r)
    else:
        own = [r]
    todo = list(own)
    counted: set[RRef] = set()
    total = 0
    while todo:
        rref = todo.pop()
        if rref in counted:
            continue
        counted.add(rref)
        size = records.realization_size(s, rref)
        if size is None:
            raise StoreError(
                f"{rref} is not in the store {s.root}"
                + ("" if rref in own else f" (the closure of {r} needs it)"),
                path=rref_dir(s, rref),
                ref=rref,
            )
        total += size
        if closure:
            todo.extend(p for ps in records.read_context_refs(s, rref).values() for p in ps)
    return total


def manifest_entries(store: Store, rref: RRef) -> tuple[Entry, ...]:
    """The manifest entries of a realization, sorted by path.

    Raises:
        StoreError: it is not in the store, or its record is corrupted.
    """
    raw = records.read_meta(store, rref)["manifest"]
    try:
        return parse(json.dumps(raw).encode("utf-8")).entries
    except (ValueError, KeyError, TypeError) as e:
        path = rref_dir(store, rref) / META_FILE
        raise StoreError(f"{path} is corrupted: {e}", path=path, ref=rref) from None
