"""Removing a realization, or a derivation with all its realizations, from a store: the
object disappears whole by one rename into staging, then is deleted.
"""

from __future__ import annotations

import os

from nixlet.store import durability, locks, staging
from nixlet.store.layout import dref_dir, rref_dir
from nixlet.store.records import forget_config
from nixlet.values.errors import StoreError
from nixlet.values.model import Store
from nixlet.values.refs import DRef, RRef


def remove_ref(store: Store, ref: DRef | RRef) -> None:
    """Remove a realization, or a derivation with all its realizations: moved into staging
    by one rename (it disappears at once, whole), then deleted.

    Raises:
        StoreError: the ref is not in the store, or the store cannot be written (read-only,
            another user's); the store is then unchanged.
    """
    dref = ref.dref if isinstance(ref, RRef) else ref
    path = rref_dir(store, ref) if isinstance(ref, RRef) else dref_dir(store, ref)
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
