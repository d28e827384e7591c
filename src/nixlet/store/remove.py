"""Removing a realization, or a derivation with all its realizations, from a store: the
object disappears whole by one rename into staging, then is deleted.
"""

from __future__ import annotations

import os

from nixlet.store import durability, locks, records, staging
from nixlet.store.layout import dref_dir, has_derivation, rref_dir
from nixlet.store.records import forget_config
from nixlet.values.errors import StoreError
from nixlet.values.model import Store
from nixlet.values.refs import DRef, RRef


def remove_ref(store: Store, ref: DRef | RRef, *, force: bool = False) -> None:
    """Remove a realization, or a derivation with all its realizations: moved into staging
    by one rename (it disappears at once, whole), then deleted. Unless ``force``, refuses
    when other objects of the store depend on it (``dependents``).

    Raises:
        StoreError: the ref is not in the store, others depend on it (and not ``force``),
            or the store cannot be written (read-only, another user's); the store is then
            unchanged.
    """
    dref = ref.dref if isinstance(ref, RRef) else ref
    path = rref_dir(store, ref) if isinstance(ref, RRef) else dref_dir(store, ref)
    if not force and path.is_dir():
        found = dependents(store, ref)
        if found:
            shown = ", ".join(str(r) for r in found[:5])
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            raise StoreError(
                f"{ref} is still needed by {len(found)} other object(s) of the store: "
                f"{shown}{more}. Remove those first, or pass force=True to remove it anyway "
                "(they would then name an input that is gone); gc() removes only what "
                "nothing needs",
                path=path,
                ref=ref,
            )
    with locks.derivation_lock(store, dref):
        if not path.is_dir():
            raise StoreError(f"{ref} is not in the store {store.root}", path=path, ref=ref)
        grave = staging.new_staging(store, "removed") / "ref"
        try:
            _move(path, grave, isinstance(ref, RRef))
        except OSError as e:
            staging.remove_tree(grave.parent)
            raise StoreError(
                f"cannot remove {ref} from the store {store.root}: {e.strerror or e} "
                f"({e.filename or path}); is the store read-only, or another user's?",
                path=path,
                ref=ref,
            ) from None
        durability.flush(store, [path.parent])
        if isinstance(ref, DRef):
            forget_config(store, ref)
    staging.remove_tree(grave.parent)


def _move(path: os.PathLike[str], grave: os.PathLike[str], realization: bool) -> None:
    """Rename a published object into staging. A realization folder is 0555, and moving a
    folder to a new parent needs write access to it (its '..' entry changes): it is made
    writable first, and read-only again if the rename fails."""
    if realization:
        os.chmod(path, 0o755)
    try:
        os.rename(path, grave)
    except OSError:
        if realization:
            os.chmod(path, 0o555)
        raise


def dependents(store: Store, ref: DRef | RRef) -> list[DRef | RRef]:
    """What else in the store depends on ``ref``, sorted: for a derivation, the derivations
    whose config names it; for a realization, the realizations whose context names it.
    Reads every derivation's config (cached: records never change) and, for a
    realization, the metadata of the realizations of those derivations only.

    Raises:
        StoreError: a record of the store cannot be read or is corrupted.
    """
    dref = ref.dref if isinstance(ref, RRef) else ref
    users = []
    for other in records.list_drefs(store):
        if other == dref:
            continue
        try:
            deps = records.read_config(store, other).deps
        except StoreError:
            if not has_derivation(store, other):
                continue  # removed while listed, or a folder without its record
            raise
        if dref in deps:
            users.append(other)
    if isinstance(ref, DRef):
        return list(users)
    found: list[DRef | RRef] = []
    for user in users:
        for rref in records.scan_rrefs(store, user) or ():
            try:
                context = records.read_context_refs(store, rref)
            except StoreError:
                if os.path.isdir(rref_dir(store, rref)):
                    raise
                continue  # removed while listed
            if ref in context.get(dref, ()):
                found.append(rref)
    return sorted(found)
