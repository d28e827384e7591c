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
    by one rename (it disappears at once, whole), then deleted."""
    dref = ref.dref if isinstance(ref, RRef) else ref
    path = rref_dir(store, ref) if isinstance(ref, RRef) else dref_dir(store, ref)
    with locks.derivation_lock(store, dref):
        if not path.exists():
            raise StoreError(f"{ref} is not in the store {store.root}", path=path)
        grave = staging.new_staging(store, "removed") / "ref"
        if isinstance(ref, RRef):
            # A realization folder is 0555, and moving a folder to a new parent needs write
            # access to it (its '..' entry changes).
            os.chmod(path, 0o755)
        try:
            os.rename(path, grave)
        except OSError:
            if isinstance(ref, RRef):
                os.chmod(path, 0o555)
            raise
        durability.flush(store, [path.parent])
        if isinstance(ref, DRef):
            forget_config(store, ref)
    staging.remove_tree(grave.parent)
