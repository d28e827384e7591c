"""Garbage collection: remove every derivation and realization that no root reaches. Part
of the store layer.

Roots are the registered user links (``nixlet.store.roots``), the temporary roots of live
processes (``nixlet.store.temproots``; this one's included) and what the caller asks to
``keep``. From them, ``gc`` follows contexts (a realization's ``meta.json`` names the
realizations chosen for its dependencies) to the *live* realizations; a derivation is live
when one of its realizations is, or when it is kept by its DRef (which keeps all its
realizations). Everything else goes:

1. the whole run holds the gc lock (an flock of ``.locks``) exclusively: no process
   chooses, publishes or links meanwhile (they hold it shared; see ``temproots``);
2. each dead object is renamed into this process's staging, whole (a derivation all of whose
   realizations are dead goes by one rename of its folder, so no derivation is ever left
   without realizations); the store's view changes atomically object by object;
3. one flush makes the renames durable, and only then are the staged copies deleted (a
   power loss must not bring back a name whose files were half deleted);
4. staging left by dead processes, dead processes' temporary roots and stale registrations
   are removed too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs

from nixlet.store import durability, locks, records, roots, staging, temproots
from nixlet.store.layout import LOCKS, dref_dir, rref_dir
from nixlet.values.errors import StoreError
from nixlet.values.model import Store
from nixlet.values.refs import DRef, RRef


@attrs.frozen
class GCReport:
    """What ``gc`` removed, or would remove (``dry_run``).

    Attributes:
        drefs: derivations removed whole (record and every realization).
        rrefs: every realization removed, those of ``drefs`` included.
        bytes: the bytes of the files removed (records, metadata and outputs; as ``du``
            counts them, plus the derivation records).
        staging: staging folders of dead processes (and this process's kept failed builds).
        roots: stale registrations of user roots (their link was deleted or re-pointed).
        dry_run: True if nothing was removed.
    """

    drefs: tuple[DRef, ...]
    rrefs: tuple[RRef, ...]
    bytes: int
    staging: tuple[Path, ...]
    roots: tuple[Path, ...]
    dry_run: bool


def collect(store: Store, keep: Iterable[DRef | RRef] = (), *, dry_run: bool = False) -> GCReport:
    """Remove (unless ``dry_run``) what no root, no live temporary root and nothing in
    ``keep`` reaches; see the module documentation.

    Raises:
        StoreError: the store cannot be read or written, or the record of a live
            realization is corrupted (its dependencies are unknown, so nothing is removed).
    """
    keep_rrefs = {k for k in keep if isinstance(k, RRef)}
    keep_drefs = {k for k in keep if isinstance(k, DRef)}
    with temproots.gc_lock(store, shared=False):
        user, stale = roots.user_roots(store, remove_stale=not dry_run)
        temp = temproots.temp_roots(store)
        garbage = staging.staging_garbage(store)
        listing = {d: records.scan_rrefs(store, d) or [] for d in records.list_drefs(store)}
        start = user | temp | keep_rrefs
        for d in keep_drefs:
            start.update(listing.get(d, ()))
        live = _reachable(store, start)
        whole: list[DRef] = []
        parts: list[RRef] = []
        removed: list[RRef] = []
        for dref, rrefs in listing.items():
            doomed = [r for r in rrefs if r not in live]
            if len(doomed) == len(rrefs) and dref not in keep_drefs:
                whole.append(dref)
            else:
                parts.extend(doomed)
            removed.extend(doomed)
        if dry_run:
            size = sum(records.tree_size(dref_dir(store, d), gone_ok=True) for d in whole)
            size += sum(records.tree_size(rref_dir(store, r), gone_ok=True) for r in parts)
        else:
            size = _remove(store, whole, parts)
            for path in garbage:
                _delete(path)
                if path.parent == store.root / ".tmp":
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{path}.lock")
            _remove_lock_files(store, whole)
    return GCReport(
        drefs=tuple(sorted(whole)),
        rrefs=tuple(sorted(removed)),
        bytes=size,
        staging=tuple(garbage),
        roots=tuple(stale),
        dry_run=dry_run,
    )


def _reachable(store: Store, start: Iterable[RRef]) -> set[RRef]:
    """The realizations reachable from ``start`` through contexts; an RRef that is not in
    the store reaches nothing (a root whose realization was removed by hand)."""
    live: set[RRef] = set()
    todo = list(start)
    while todo:
        rref = todo.pop()
        if rref in live:
            continue
        live.add(rref)
        try:
            context = records.read_context_refs(store, rref)
        except StoreError:
            if not os.path.isdir(rref_dir(store, rref)):
                continue
            raise
        for deps in context.values():
            todo.extend(d for d in deps if d not in live)
    return live


def _remove(store: Store, whole: list[DRef], parts: list[RRef]) -> int:
    """Move each dead object into staging by one rename, flush, then delete them; return
    the bytes deleted."""
    if not whole and not parts:
        return 0
    grave = staging.new_staging(store, "gc")
    moved: list[str] = []
    touched: set[Path] = set()
    try:
        for dref in whole:
            src = dref_dir(store, dref)
            dst = os.path.join(grave, str(len(moved)))
            _rename(store, src, dst, dref)
            moved.append(dst)
            touched.add(store.root)
            records.forget_config(store, dref)
        for rref in parts:
            src = rref_dir(store, rref)
            dst = os.path.join(grave, str(len(moved)))
            # A realization folder is 0555; moving a folder to a new parent needs write
            # access to it (its '..' changes).
            with contextlib.suppress(FileNotFoundError):
                os.chmod(src, 0o755)
            _rename(store, src, dst, rref)
            moved.append(dst)
            touched.add(src.parent)
    finally:
        if touched:
            durability.flush(store, sorted(touched))
    # Deleting is most of gc's time: on this project's disk an unlink costs 25-300 us of
    # kernel time, and removes in different folders overlap (measured: 2,000 realizations in
    # 3.8 s one by one, 1.3 s over 32 threads on 2 CPUs). unlink and rmdir release the GIL.
    if len(moved) < _PARALLEL_FROM:
        total = sum(_delete(path) for path in moved)
    else:
        with ThreadPoolExecutor(_THREADS) as pool:
            total = sum(pool.map(_delete, moved))
    _delete(grave)
    return total


#: From how many objects deletion runs in threads, and over how many.
_PARALLEL_FROM, _THREADS = 16, 32


def _rename(store: Store, src: Path, dst: str, ref: DRef | RRef) -> None:
    try:
        os.rename(src, dst)
    except OSError as e:
        raise StoreError(
            f"cannot remove {ref} from the store {store.root}: {e.strerror or e}; is the "
            "store read-only, or another user's?",
            path=src,
            ref=ref,
        ) from None


def _delete(path: str | os.PathLike[str]) -> int:
    """Delete a tree whatever its modes; return the bytes of its files. Read-only folders
    are made writable only when a removal inside one is refused (never, for root)."""
    path = os.fspath(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return st.st_size
    total = 0
    with os.scandir(path) as scan:
        entries = list(scan)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            total += _delete(entry.path)
            continue
        total += entry.stat(follow_symlinks=False).st_size
        try:
            os.unlink(entry.path)
        except PermissionError:
            os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
            os.unlink(entry.path)
    try:
        os.rmdir(path)
    except PermissionError:
        parent = os.path.dirname(path)
        os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | stat.S_IRWXU)
        os.rmdir(path)
    return total


def _remove_lock_files(store: Store, gone: Iterable[DRef]) -> None:
    """Where each derivation has its own lock file (no OFD locks), remove those of the
    removed derivations that nobody holds: taken without waiting, unlinked, let go.

    (A process that opened the file just before and waits for it would then lock the
    removed inode while a newcomer locks a new one: at worst one derivation built twice,
    which publishing tolerates.)"""
    if locks._OFD:
        return
    for dref in gone:
        path = os.path.join(store.root, LOCKS, f"{dref.key}.lock")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
        except OSError:
            pass
        finally:
            os.close(fd)
