"""Durability: making staged objects, and then the names that publish them, survive a power
loss. Part of the store layer (see ``nixlet.store``): data reaches the disk before the rename
that publishes it, and a name is durable before ``realize`` returns it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from nixlet.store import staging, syscalls
from nixlet.values.model import Store


def make_durable(store: Store, paths: Iterable[Path], nbytes: int = 0) -> None:
    """Flush ``paths`` (files and folders, ``nbytes`` of file data) to disk before the
    rename that publishes them.

    For many small files, one ``syncfs`` of the store's filesystem (Linux) replaces one
    fsync per file and folder: a single journal commit instead of many (a 1000-leaf fan-in
    took 8-14 s with one fsync per item, see docs/design.md). But syncfs also writes out
    whatever else is dirty on the filesystem (another program's unsynced gigabyte made a
    1 GiB build 2.8 times slower), so large outputs, and systems without syncfs, fsync
    their own paths one by one.
    """
    if syscalls.HAVE_SYNCFS and nbytes < LARGE_BATCH:
        syscalls.syncfs(_root_fd(store))
        return
    for path in paths:
        fsync_path(path)


#: Batches with this much file data are synced path by path (see ``make_durable``).
LARGE_BATCH = 32 << 20
#: Up to this many folders, a flush fsyncs each rather than the whole filesystem.
FEW_FOLDERS = 8
_root_fds: dict[tuple[Path, int], int] = {}


def _root_fd(store: Store) -> int:
    """A descriptor of the store's root, opened once per process, for syncfs (one per
    store a process uses, kept open for the life of the process on purpose)."""
    key = (store.root, os.getpid())
    fd = _root_fds.get(key)
    if fd is None:
        fd = _root_fds[key] = os.open(store.root, os.O_RDONLY | os.O_DIRECTORY)
    return fd


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync one file or folder."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def flush(store: Store, folders: Iterable[Path] = ()) -> None:
    """Make published names durable: after this, an RRef that realize returned survives a
    power loss. Deferred to the end of an operation, so a thousand publications share one
    flush; a few folders are synced one by one, so as not to write out the rest of the
    filesystem's dirty data (see ``make_durable``)."""
    folders = list(folders)
    if len(folders) <= FEW_FOLDERS:
        for folder in folders:
            with staging.suppress_missing():  # a derivation whose build failed has no folder
                fsync_path(folder)
    else:
        make_durable(store, folders)


def forget(store: Store) -> None:
    """Close the cached root descriptor of a store that was wiped or re-created."""
    fd = _root_fds.pop((store.root, os.getpid()), None)
    if fd is not None:
        os.close(fd)
