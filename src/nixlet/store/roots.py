"""User roots: what ``gc`` must keep for good. Part of the store layer; the roots of
running processes, and the gc lock, are ``nixlet.store.temproots``.

A user root (``linkrref``) is a symlink in a user's folder pointing to a realization's files,
registered inside the store as ``roots/<hash of the link's path>``, a symlink back to the
user's link. A registration counts while the user's link still points into the store; ``gc``
removes the others (the user deleted or re-pointed the link).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from nixlet.store.layout import OUT, rref_out
from nixlet.store.temproots import gc_lock
from nixlet.values.errors import RefError, StoreError, UsageError
from nixlet.values.hashing import HASH_CHARS
from nixlet.values.model import Store
from nixlet.values.refs import RRef

#: The store's folder of user roots.
ROOTS = "roots"


# ---------------------------------------------------------------- user roots


def _registration(store: Store, dest: str) -> str:
    """The path of the registration of the user link ``dest`` (absolute)."""
    digest = hashlib.sha256(os.fsencode(dest)).hexdigest()[:HASH_CHARS]
    return os.path.join(store.root, ROOTS, digest)


def absolute(dest: str | os.PathLike[str]) -> str:
    """``dest`` made absolute, its folder's symlinks resolved (the link itself is not
    followed): one link has one registration however it was named."""
    path = os.path.abspath(os.fspath(dest))
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def link_root(store: Store, rref: RRef, dest: str | os.PathLike[str]) -> Path:
    """Make ``dest`` a symlink to the files of ``rref`` and register it as a root; an
    existing symlink at ``dest`` is replaced. Returns ``dest`` (absolute).

    The registration is made first, then the link, both under the gc lock (shared): a
    ``gc`` in between would otherwise find a registration whose link is not there yet.

    Raises:
        StoreError: ``rref`` is not in the store, or the store cannot be written.
        UsageError: ``dest`` exists and is not a symlink, or its folder does not exist.
    """
    target = os.fspath(rref_out(store, rref))
    path = absolute(dest)
    if os.path.lexists(path) and not os.path.islink(path):
        raise UsageError(
            f"{path} exists and is not a symlink; linkrref replaces only symlinks: choose "
            "another path, or remove it",
            argument="dest",
        )
    if not os.path.isdir(os.path.dirname(path)):
        raise UsageError(f"the folder of {path} does not exist; create it first", argument="dest")
    with gc_lock(store, shared=True):
        if not os.path.isdir(target):
            raise StoreError(f"{rref} is not in the store {store.root}", path=target, ref=rref)
        reg = _registration(store, path)
        try:
            os.makedirs(os.path.dirname(reg), exist_ok=True)
            _symlink_over(path, reg)
        except OSError as e:
            raise StoreError(
                f"cannot register the root {path} in {store.root}: {e.strerror or e}; "
                "linking needs write access to the store",
                path=reg,
                ref=rref,
            ) from None
        try:
            _symlink_over(target, path)
        except OSError as e:
            raise UsageError(
                f"cannot make the link {path}: {e.strerror or e}", argument="dest"
            ) from None
    return Path(path)


def _symlink_over(target: str, path: str) -> None:
    """Make ``path`` a symlink to ``target`` by one rename (replacing a symlink there)."""
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def user_roots(store: Store, *, remove_stale: bool) -> tuple[set[RRef], list[Path]]:
    """The RRefs the registered user links point to, and the stale registrations (whose
    link is gone or points elsewhere; removed if ``remove_stale``). The caller holds the
    gc lock exclusively.

    Raises:
        StoreError: ``roots`` cannot be listed.
    """
    folder = os.path.join(store.root, ROOTS)
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return set(), []
    except OSError as e:
        raise StoreError(f"cannot list {folder}: {e.strerror or e}", path=folder) from None
    found: set[RRef] = set()
    stale: list[Path] = []
    for name in names:
        reg = os.path.join(folder, name)
        if name.endswith(".tmp"):
            continue  # a registration being made
        rref = _pointed(store, reg)
        if rref is not None:
            found.add(rref)
            continue
        stale.append(Path(reg))
        if remove_stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(reg)
    return found, stale


def _pointed(store: Store, reg: str) -> RRef | None:
    """The RRef whose files the user link of registration ``reg`` points to, or None (the
    registration or link is broken, or points elsewhere than into this store)."""
    try:
        dest = os.readlink(reg)
        target = os.readlink(dest)
    except OSError:
        return None
    if _registration(store, dest) != reg:
        return None  # not ours (a registration copied from another store, or hand-made)
    target = os.path.normpath(os.path.join(os.path.dirname(dest), target))
    rel = os.path.relpath(target, store.root).split(os.sep)
    if len(rel) != 3 or rel[2] != OUT or len(rel[0]) <= HASH_CHARS + 1:
        return None
    dkey, rhash = rel[0], rel[1]
    try:
        return RRef.parse(f"rref:{rhash}-{dkey}")
    except RefError:
        return None
