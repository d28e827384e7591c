"""Build locks: one per derivation, so that processes sharing a store build each derivation
once. Part of the store layer (see ``nixlet.staging``).

On Linux a derivation's lock is one byte of one shared file, ``.locks/build.lock``, locked
with an open-file-description (OFD) record lock at an offset taken from the DRef's hash. A
first build therefore creates no lock file (a file create, with the mtime it needs for
rsync, was measured at 7-10 % of a 1000-stage chain's first realize), and the store does
not fill up with one lock file per derivation. Where OFD locks do not exist (macOS, the
BSDs), each derivation has its own file, ``.locks/<dhash>-<name>.lock``, locked with
``flock``. Both kinds belong to the open file, not to the process: two threads of one
process exclude each other, closing one lock's descriptor releases nothing else, and the
kernel releases a lock when its holder dies, so a crashed builder never blocks the others
for good.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from nixlet.store.layout import CANONICAL_MTIME, LOCKS
from nixlet.values.errors import StoreError
from nixlet.values.hashing import B32_ALPHABET
from nixlet.values.model import Store
from nixlet.values.refs import DRef

#: The shared lock file of OFD locks, under ``.locks``.
BUILD_LOCK = "build.lock"

# The struct below is 64-bit Linux's; elsewhere the per-derivation files are used.
_OFD = hasattr(fcntl, "F_OFD_SETLKW") and struct.calcsize("P") == 8
# struct flock on 64-bit Linux: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks).
_FLOCK = struct.Struct("hhqqixxxx")
# Our base32 alphabet to the digits int(..., 32) reads, value for value.
_FROM_B32 = str.maketrans(B32_ALPHABET, "0123456789abcdefghijklmnopqrstuv")


def lock_slot(dref: DRef) -> int:
    """The byte of ``build.lock`` that is a derivation's lock: the first 60 bits of its
    hash (a collision would only make two derivations share a lock)."""
    return int(dref.dhash[:12].translate(_FROM_B32), 32)


def lock_path(store: Store, dref: DRef) -> str:
    """The file holding a derivation's lock."""
    name = BUILD_LOCK if _OFD else f"{dref.key}.lock"
    return os.path.join(store.root, LOCKS, name)


def _open_lock(store: Store, path: str) -> int:
    """Open (creating if needed) a lock file. A new one gets the canonical mtime: rsync
    then leaves the lock files of a merged store alone instead of replacing one (a new
    inode) under a process that holds the old. A lock file is never deleted: deleting it
    would let two processes lock two different inodes.

    Raises:
        StoreError: the lock file cannot be opened for writing (a read-only store, a store
            of another user, ``.locks`` not a folder).
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
    try:
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            # .locks was removed (by hand, or a store copied without it): make it again,
            # but never the store's root (a store removed under this process stays gone).
            with contextlib.suppress(FileExistsError):
                os.mkdir(os.path.dirname(path))
            fd = os.open(path, flags, 0o644)
    except OSError as e:
        raise _unopenable(store, path, e) from None
    if path not in _canonical:  # once per process: the shared file is opened per build
        if os.fstat(fd).st_mtime != CANONICAL_MTIME:
            # Only the owner may set it; in a store shared by a group, the owner's first
            # build does. The mtime only spares rsync work, so nothing is lost without it.
            with contextlib.suppress(PermissionError):
                os.utime(fd, (CANONICAL_MTIME, CANONICAL_MTIME))
        _canonical.add(path)
    return fd


def _unopenable(store: Store, path: str, e: OSError) -> StoreError:
    if e.errno == errno.ENOTDIR:
        what = (
            f"{os.path.dirname(path)} is not a folder. It should hold only lock files: "
            "remove it, and nixlet makes it again"
        )
    else:
        what = (
            f"building needs write access to the store {store.root}; is it read-only, or "
            "another user's? (Reading what it holds works without.)"
        )
    return StoreError(f"cannot open the build lock {path}: {e.strerror or e}; {what}", path=path)


#: Lock files this process has seen with the canonical mtime.
_canonical: set[str] = set()


def _try_lock(fd: int, path: str, dref: DRef, wait: bool) -> bool:
    """Lock ``dref`` on the open lock file ``fd``; False if another holder has it and
    ``wait`` is False.

    Raises:
        StoreError: the store's filesystem does not support the lock.
    """
    try:
        if _OFD:
            cmd = fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK
            fcntl.fcntl(fd, cmd, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, lock_slot(dref), 1, 0))
        else:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES) and not wait:
            return False
        raise StoreError(
            f"cannot take the build lock of {dref} on {path}: {e.strerror}. The store's "
            "filesystem must support record locks (fcntl) or flock; put the store on a "
            "local filesystem",
            path=path,
        ) from e
    return True


@contextmanager
def derivation_lock(store: Store, dref: DRef, *, wait: bool = True) -> Iterator[bool]:
    """Hold the build lock of one derivation; yields whether it is held (always, when
    ``wait``; without waiting, False if another holder has it).

    The lock is a system call on a descriptor opened for it alone: filelock's
    ``FileLock`` was measured at 100-140 us per acquire against 2 us (docs/design.md);
    filelock still guards the once-per-process staging lock.
    """
    path = lock_path(store, dref)
    fd = _open_lock(store, path)
    _held_locks.add(fd)
    try:
        yield _try_lock(fd, path, dref, wait)
    finally:
        # Closing the last descriptor of the open file releases the lock. A forked child
        # closed its copy at fork (below), so only this process's is left.
        if fd in _held_locks:
            _held_locks.discard(fd)
            os.close(fd)


#: Descriptors of the derivation locks this process holds.
_held_locks: set[int] = set()


def _drop_locks_in_child() -> None:
    """A lock belongs to the open file, which fork shares: a helper process forked by a
    build (a data loader, multiprocessing) would keep the derivation locked after the
    builder died. The child closes its copies at once."""
    for fd in _held_locks:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_locks.clear()


os.register_at_fork(after_in_child=_drop_locks_in_child)
