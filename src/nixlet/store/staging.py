"""Each process's staging area in a store, and telling garbage from a live build's folders.
Part of the store layer: with the rest of ``nixlet.store``, the only code that changes a
store's files.

A process stages under ``<store>/.tmp/<host>-<pid>-<rand>/``, held by an flock on the sibling
``.lock`` file while the process lives. Garbage is what no live build needs: the folders of
dead processes (their lock is free), and this process's own failed builds, whose folders are
renamed ``failed.*`` when the build fails and kept for inspection until freed.
"""

from __future__ import annotations

import atexit
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

from nixlet.store.layout import TMP
from nixlet.values.errors import StoreError
from nixlet.values.model import Store

_staging: dict[tuple[Path, int], tuple[Path, Any]] = {}
_state_lock = threading.Lock()
#: The prefix of a failed build's kept staging folder.
FAILED = "failed."


def staging_root(store: Store) -> Path:
    """This process's staging folder in the store, created on first use.

    It is held by an flock on its ``.lock`` sibling for the life of the process; the kernel
    drops the lock when the process dies (even by SIGKILL), which is how
    ``staging_garbage`` tells a crashed process's leftovers from a live build.

    Raises:
        StoreError: the store's ``.tmp`` cannot be written (a read-only store, a store
            removed under this process, a full disk).
    """
    key = (store.root, os.getpid())
    with _state_lock:
        found = _staging.get(key)
        if found is not None:
            return found[0]
        name = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}"
        tmp = store.root / TMP
        try:
            tmp.mkdir(exist_ok=True)  # a user may have removed .tmp (it only holds garbage)
            lock = filelock.FileLock(tmp / f"{name}.lock", thread_local=False)
            lock.acquire()  # before the folder exists: an unlocked folder is always garbage
            root = tmp / name
            root.mkdir()
        except OSError as e:
            raise StoreError(
                f"cannot stage builds in {tmp}: {e.strerror or e} (is the store read-only, "
                "removed, full, or .tmp not a folder?)",
                path=tmp,
            ) from None
        _staging[key] = (root, lock)
        return root


def new_staging(store: Store, label: str) -> Path:
    """A fresh, empty, writable folder in this process's staging area."""
    return Path(new_staging_path(store, label))


def new_staging_path(store: Store, label: str) -> str:
    """``new_staging`` as a plain string, for the publishing hot path.

    Raises:
        StoreError: the staging area cannot be written.
    """
    # The staging root belongs to this process alone, so a counter names folders uniquely
    # (mkdtemp's random names and retries cost a third of a small build's bookkeeping).
    path = os.path.join(staging_root(store), f"{label}.{next(_staging_counter)}")
    try:
        os.mkdir(path, 0o700)
    except FileNotFoundError:
        # The store was wiped (and maybe initialised again) under this process: start a new
        # staging root rather than failing every later build.
        forget(store)
        path = os.path.join(staging_root(store), f"{label}.{next(_staging_counter)}")
        _mkdir(store, path)
    except OSError as e:
        raise StoreError(f"cannot stage in {path}: {e.strerror}", path=path) from None
    return path


def _mkdir(store: Store, path: str) -> None:
    try:
        os.mkdir(path, 0o700)
    except OSError as e:
        raise StoreError(f"cannot stage in {path}: {e.strerror}", path=path) from None


_staging_counter = itertools.count()


def forget(store: Store) -> None:
    """Drop this process's staging root of ``store`` (the store was wiped or re-created):
    the next build makes a new one."""
    with _state_lock:
        found = _staging.pop((store.root, os.getpid()), None)
    if found is not None:
        found[1].release()


def is_staging(store: Store, path: Path) -> bool:
    """Whether ``path`` lies inside this store's staging area."""
    tmp = os.path.abspath(store.root / TMP) + os.sep
    return os.path.abspath(path).startswith(tmp)


def mark_failed(store: Store, path: Path) -> Path:
    """Keep a failed build's staging folder for inspection: the folder of a staging root
    that holds ``path`` is renamed ``failed.*``, so that ``remove_staging_garbage`` can free
    it later, from this process too. Returns where ``path`` is now (unchanged if it is not
    inside a staging root's folder)."""
    top = build_folder(store, path)
    if top is None or top.name.startswith(FAILED):
        return path
    kept = top.with_name(f"{FAILED}{top.name}")
    try:
        os.rename(top, kept)
    except OSError:
        return path
    return kept / os.path.relpath(os.path.abspath(path), top)


def build_folder(store: Store, path: str | os.PathLike[str]) -> Path | None:
    """The folder of a staging root that holds ``path`` (``path`` itself or an ancestor):
    the folder ``new_staging`` gave one build or one publication. None if ``path`` is not
    that deep inside the store's staging area."""
    tmp = os.path.abspath(store.root / TMP)
    parts = Path(os.path.relpath(os.path.abspath(path), tmp)).parts
    if not is_staging(store, Path(path)) or len(parts) < 2:
        return None
    return Path(tmp, parts[0], parts[1])


def staging_garbage(store: Store) -> list[Path]:
    """Staging folders no live build needs: the staging roots of dead processes, and the
    failed builds this process kept for inspection.

    Raises:
        StoreError: ``.tmp`` cannot be listed.
    """
    tmp = store.root / TMP
    try:
        names = sorted(os.listdir(tmp))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StoreError(f"cannot list {tmp}: {e.strerror}", path=tmp) from None
    garbage = []
    own = _staging.get((store.root, os.getpid()), (None,))[0]
    for name in names:
        path = tmp / name
        if name.endswith(".lock"):
            continue
        if path == own:
            garbage.extend(_own_failed(path))
            continue
        if not _is_held(tmp, name):
            garbage.append(path)
    return garbage


def _own_failed(root: Path) -> list[Path]:
    with suppress_missing():
        return sorted(root / n for n in os.listdir(root) if n.startswith(FAILED))
    return []


def _is_held(tmp: Path, name: str) -> bool:
    """Whether a live process holds the staging folder ``name`` (its lock is taken)."""
    probe = filelock.FileLock(tmp / f"{name}.lock", thread_local=False)
    try:
        probe.acquire(timeout=0)
    except filelock.Timeout:
        return True
    except OSError:
        return False  # no lock file can be made for it: nobody holds it
    probe.release()
    return False


def remove_staging_garbage(store: Store) -> int:
    """Remove what ``staging_garbage`` lists; return how many folders went."""
    found = staging_garbage(store)
    for path in found:
        remove_tree(path)
        if path.parent == store.root / TMP:
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
    """Remove a staged folder (or a stray file in ``.tmp``), whatever its modes."""
    with suppress_missing():
        if os.path.isdir(path) and not os.path.islink(path):
            make_writable(path)
            shutil.rmtree(path)
        else:  # a stray file in .tmp (a format record a crash left half-made)
            os.unlink(path)


@contextmanager
def suppress_missing() -> Iterator[None]:
    """Ignore a file or folder that is already gone."""
    try:
        yield
    except FileNotFoundError:
        pass


def _remove_empty_roots() -> None:
    """At a normal exit, remove this process's staging roots that hold nothing (and their
    lock files), so that every process that built does not leave two entries in ``.tmp``.
    A root holding a failed build's folder stays, as garbage, for inspection."""
    for (_, pid), (root, lock) in list(_staging.items()):
        if pid != os.getpid():
            continue
        try:
            os.rmdir(root)
        except FileNotFoundError:
            pass
        except OSError:
            continue  # not empty: a failed build kept for inspection; garbage from now on
        with suppress_missing():
            os.unlink(f"{root}.lock")
        lock.release()


atexit.register(_remove_empty_roots)
