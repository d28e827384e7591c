"""Each process's staging area in a store, and telling a dead process's leftovers from a
live build's. Part of the store layer: with ``nixlet.store`` and ``nixlet.locks``, the only
code that changes a store's files.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock

from nixlet.layout import TMP
from nixlet.types import Store

_staging: dict[tuple[Path, int], tuple[Path, Any]] = {}
_state_lock = threading.Lock()


def staging_root(store: Store) -> Path:
    """This process's staging folder in the store, created on first use.

    It is held by an flock on its ``.lock`` sibling for the life of the process; the kernel
    drops the lock when the process dies (even by SIGKILL), which is how
    ``staging_garbage`` tells a crashed process's leftovers from a live build.
    """
    key = (store.root, os.getpid())
    with _state_lock:
        found = _staging.get(key)
        if found is not None:
            return found[0]
        name = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}"
        lock = filelock.FileLock(store.root / TMP / f"{name}.lock", thread_local=False)
        lock.acquire()  # before the folder exists: an unlocked folder is always garbage
        root = store.root / TMP / name
        root.mkdir()
        _staging[key] = (root, lock)
        return root


def new_staging(store: Store, label: str) -> Path:
    """A fresh, empty, writable folder in this process's staging area."""
    return Path(new_staging_path(store, label))


def new_staging_path(store: Store, label: str) -> str:
    # The staging root belongs to this process alone, so a counter names folders uniquely
    # (mkdtemp's random names and retries cost a third of a small build's bookkeeping).
    path = os.path.join(staging_root(store), f"{label}.{next(_staging_counter)}")
    os.mkdir(path, 0o700)
    return path


_staging_counter = itertools.count()


def is_staging(store: Store, path: Path) -> bool:
    """Whether ``path`` lies inside this store's staging area."""
    tmp = os.path.abspath(store.root / TMP) + os.sep
    return os.path.abspath(path).startswith(tmp)


def staging_garbage(store: Store) -> list[Path]:
    """Staging folders no live process holds: leftovers of crashed or finished processes."""
    tmp = store.root / TMP
    garbage = []
    for name in sorted(os.listdir(tmp)):
        path = tmp / name
        if name.endswith(".lock"):
            continue
        if _staging.get((store.root, os.getpid()), (None,))[0] == path:
            continue
        probe = filelock.FileLock(tmp / f"{name}.lock", thread_local=False)
        try:
            probe.acquire(timeout=0)
        except filelock.Timeout:
            continue  # a live process holds it
        probe.release()
        garbage.append(path)
    return garbage


def remove_staging_garbage(store: Store) -> int:
    """Remove what ``staging_garbage`` lists; return how many folders went."""
    found = staging_garbage(store)
    for path in found:
        remove_tree(path)
        with suppress_missing():
            os.unlink(f"{path}.lock")
    return len(found)


def make_writable(path: str | os.PathLike[str]) -> None:
    """Give the owner write access to ``path`` and everything under it (a copy taken out
    of the store keeps the store's read-only modes)."""
    for folder, _dirs, files in os.walk(path):
        os.chmod(folder, stat.S_IMODE(os.lstat(folder).st_mode) | stat.S_IWUSR)
        for name in files:
            full = os.path.join(folder, name)
            if not os.path.islink(full):
                os.chmod(full, stat.S_IMODE(os.lstat(full).st_mode) | stat.S_IWUSR)


def remove_tree(path: str | Path) -> None:
    with suppress_missing():
        if os.path.isdir(path) and not os.path.islink(path):
            make_writable(path)
            shutil.rmtree(path)
        else:  # a stray file in .tmp (a format record a crash left half-made)
            os.unlink(path)


@contextmanager
def suppress_missing() -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        pass
