"""Garbage collection and its roots, for scripts and the REPL: ``gc``, ``linkrref``,
``linkrrefs``. They resolve ``store=`` and parse refs; the work is the store layer's
(``nixlet.store.gc``, ``nixlet.store.roots``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from nixlet.store import gc as gc_mod
from nixlet.store import opening as store_mod
from nixlet.store import roots
from nixlet.store.gc import GCReport
from nixlet.store.opening import StoreArg
from nixlet.values.config import plain_parts
from nixlet.values.errors import UsageError
from nixlet.values.refs import DRef, RRef, parse_ref


def gc(
    keep: Iterable[DRef | RRef | str] | DRef | RRef | str = (),
    dry_run: bool = False,
    *,
    store: StoreArg = None,
) -> GCReport:
    """Remove every derivation and realization that no root reaches, as Nix's garbage
    collector does; return what went (or, with ``dry_run``, what would go).

    Kept: what the links made by ``linkrref`` point to; what running realizations (in any
    process) chose or built, and the results of those that returned in a process that
    still runs (this one's included: an RRef you hold from ``realize`` survives); what
    ``keep`` names (an RRef, or a DRef, which keeps its record and every realization); and
    everything those were built from, through their contexts. Also removed: the staging
    left by dead processes and the registrations of deleted links. A store with nothing to
    remove is left unchanged.

    Args:
        keep: RRefs and DRefs to keep besides the roots (one ref alone is accepted).
        dry_run: report only; nothing is removed (the default removes, as ``rmref`` does).
        store: the store (default: the process default store).

    Raises:
        RefError: an item of ``keep`` is not a DRef or RRef.
        StoreError: the store cannot be read or written, or the record of a realization
            to keep is corrupted (then nothing is removed).
    """
    items = [keep] if isinstance(keep, (DRef, RRef, str)) else list(keep)
    parsed = [parse_ref(item) for item in items]
    return gc_mod.collect(store_mod.resolve(store), parsed, dry_run=dry_run)


def linkrref(rref: RRef | str, dest: str | os.PathLike[str], *, store: StoreArg = None) -> Path:
    """Make ``dest`` a symlink to a realization's files (``rref2path(rref)``) and register
    it as a garbage-collector root: ``gc`` keeps the realization, and what it was built
    from, while the link exists and points into the store. Deleting the link (or pointing
    it elsewhere) lets ``gc`` free it. An existing symlink at ``dest`` is replaced.

    Returns the absolute path of the link.

    Raises:
        RefError: ``rref`` is not an RRef.
        StoreError: the realization is not in the store, or the store cannot be written.
        UsageError: ``dest`` exists and is not a symlink, or its folder does not exist.
    """
    return roots.link_root(store_mod.resolve(store), RRef.parse(rref), dest)


def linkrrefs(
    rrefs: Iterable[RRef | str],
    destdir: str | os.PathLike[str],
    *,
    names: Sequence[str] | None = None,
    store: StoreArg = None,
) -> list[Path]:
    """``linkrref`` for several realizations: one link each in ``destdir`` (made if
    missing), named by ``names`` or, by default, by the RRef without its ``rref:`` prefix
    (``<rhash>-<dhash>-<name>``: unique, and telling which realization it is).

    Returns the links' absolute paths, in the order of ``rrefs``.

    Raises:
        RefError: an item of ``rrefs`` is not an RRef.
        StoreError: a realization is not in the store, or the store cannot be written.
        UsageError: ``names`` does not give one plain, distinct file name per RRef, or a
            link's path is taken by something that is not a symlink.
    """
    parsed = [RRef.parse(r) for r in rrefs]
    chosen = [f"{r.rhash}-{r.dhash}-{r.name}" for r in parsed] if names is None else list(names)
    if (
        isinstance(names, str)
        or len(chosen) != len(parsed)
        or len(set(chosen)) != len(chosen)
        or not plain_parts(chosen)
    ):
        raise UsageError(
            f"linkrrefs needs one distinct plain file name per RRef ({len(parsed)}), got {names!r}",
            argument="names",
        )
    s = store_mod.resolve(store)
    folder = Path(destdir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(
            f"cannot make the folder {folder}: {e.strerror or e}", argument="destdir"
        ) from None
    return [roots.link_root(s, r, folder / n) for r, n in zip(parsed, chosen, strict=True)]
