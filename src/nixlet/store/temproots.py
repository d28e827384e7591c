"""Temporary roots and the gc lock: what a running process keeps from ``gc``. Part of the
store layer; user roots are ``nixlet.store.roots``.

Each process that realizes or publishes keeps one file, ``roots``, in its staging folder
(``.tmp/<host>-<pid>-<rand>/roots``), holding one RRef a line: what its plans chose, saw or
built, until each plan closes, and the results of the realizations that returned, until the
process ends. The staging folder is held by the process's flock for its whole life
(``nixlet.store.staging``) and the kernel drops that lock when the process dies, even by
SIGKILL: a dead process's roots stop counting at once, and go with its staging garbage. (One
lock per process rather than a second one for the roots; and nothing of a process's own
shows outside ``.tmp``, which a merge with rsync skips.)

``gc`` reads them under an exclusive ``flock`` of the ``.locks`` folder. A process takes the
same lock *shared* from the moment it looks at realizations (a matcher reads them) until what
it chose is written down as temporary roots, and while it publishes: ``gc`` never sees a
realization chosen but not yet rooted, nor deletes one a matcher is reading. The lock is
held for one batch (one ``Plan.ready``, one ``Plan.record``, one publication), never while
waiting for a build lock (``gc`` could wait for a builder that waits for ``gc``).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from nixlet.store import records, staging
from nixlet.store.layout import LOCKS, TMP
from nixlet.values.errors import RefError, StoreError
from nixlet.values.model import Store
from nixlet.values.refs import RRef

#: The name of a process's temporary-root file in its staging folder (staging's own entries
#: are always ``<label>.<n>``: no clash).
TEMP = "roots"

# ---------------------------------------------------------------- the gc lock


@contextmanager
def gc_lock(store: Store, *, shared: bool) -> Iterator[bool]:
    """Hold the gc lock: an ``flock`` of the ``.locks`` folder itself, shared (writers:
    choosing, publishing, linking) or exclusive (``gc``). A folder, not a lock file: no
    file to create (in a store one may only read, too), none for rsync to copy. Yields
    whether it is held: a writer in a store whose ``.locks`` it cannot open goes on
    without it (it cannot write to the store either).

    Raises:
        StoreError: exclusive, and ``.locks`` cannot be opened.
    """
    if shared:
        with _shared_hold(store) as held:
            yield held
        return
    path = os.path.join(store.root, LOCKS)
    fd = _open_folder(path)
    if fd is None:
        if not shared:
            raise StoreError(
                f"cannot open {path} to take the gc lock: collecting garbage needs a "
                f"store it can write ({store.root})",
                path=path,
            )
        yield False
        return
    _held_fds.add(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield True
    finally:
        if fd in _held_fds:  # a forked child closed its copy at fork
            _held_fds.discard(fd)
            os.close(fd)


class _SharedHold:
    """This process's shared hold of one store's gc lock: one descriptor of ``.locks``,
    kept open, and how many holders (plans, publications, threads) are inside. Only the
    first takes the flock and only the last lets it go: a realize takes the lock three
    times per build, and opening the folder each time was measured at about 50 µs a build.
    (flock belongs to the open file: two holders on one descriptor share one lock, so the
    count, not the kernel, says when it is free.)"""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.count = 0
        self.guard = threading.Lock()


_shared: dict[tuple[Path, int], _SharedHold] = {}
_shared_guard = threading.Lock()


#: How many stores' descriptors a process keeps open: the ones in use, and the most recent
#: others. A process that opens hundreds of stores (a test suite) must not run out of
#: descriptors; one that uses a few pays no open per build.
KEPT_STORES = 8


def _hold_of(store: Store) -> _SharedHold:
    key = (store.root, os.getpid())
    hold = _shared.get(key)
    if hold is None:
        with _shared_guard:
            hold = _shared.setdefault(key, _SharedHold())
            _trim_holds()
    return hold


def _trim_holds() -> None:
    """Close the descriptors of the oldest stores' holds that nobody is inside (the caller
    holds ``_shared_guard``); their next use opens ``.locks`` again."""
    for key in list(_shared)[:-KEPT_STORES]:
        hold = _shared[key]
        with hold.guard:
            if hold.count:
                continue
            del _shared[key]
            if hold.fd is not None and hold.fd in _held_fds:
                _held_fds.discard(hold.fd)
                with contextlib.suppress(OSError):
                    os.close(hold.fd)
            hold.fd = None


def _take_shared(store: Store, hold: _SharedHold) -> bool:
    """Enter ``hold`` (taking the flock if first); whether the lock is really held."""
    with hold.guard:
        if hold.count == 0:
            if hold.fd is None:
                hold.fd = _open_folder(os.path.join(store.root, LOCKS))
                if hold.fd is not None:
                    _held_fds.add(hold.fd)
            if hold.fd is not None:
                # Waits while a gc runs; other threads of this process wait on the guard.
                fcntl.flock(hold.fd, fcntl.LOCK_SH)
        hold.count += 1
        return hold.fd is not None


def _let_go_shared(hold: _SharedHold) -> None:
    with hold.guard:
        hold.count -= 1
        if hold.count == 0 and hold.fd is not None and hold.fd in _held_fds:
            fcntl.flock(hold.fd, fcntl.LOCK_UN)


@contextmanager
def _shared_hold(store: Store) -> Iterator[bool]:
    hold = _hold_of(store)
    held = _take_shared(store, hold)
    try:
        yield held
    finally:
        _let_go_shared(hold)


def forget(store: Store) -> None:
    """Close this process's kept descriptor of a store's ``.locks`` (the store was wiped,
    or its filesystem is to be unmounted)."""
    with _temp_lock:
        temp = _temp.pop((store.root, os.getpid()), None)
    if temp is not None:
        temp.close()
    with _shared_guard:
        hold = _shared.pop((store.root, os.getpid()), None)
    if hold is not None and hold.fd is not None and hold.fd in _held_fds:
        _held_fds.discard(hold.fd)
        with contextlib.suppress(OSError):
            os.close(hold.fd)


def _open_folder(path: str) -> int | None:
    """Open ``.locks`` (making it if it was removed); None if that fails."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            os.mkdir(path)
    except OSError:
        return None
    try:
        return os.open(path, flags)
    except OSError:
        return None


#: Descriptors of gc locks and of temporary-root files this process holds.
_held_fds: set[int] = set()


# ---------------------------------------------------------------- temporary roots

#: The owner of what this process keeps until it ends: the results of finished realizes.
PROCESS = "process"
#: The owner of what this process published: kept until it ends, unless a plan records it
#: (it is then that plan's, and goes when the plan closes, unless it is its result).
PUBLISHED = "published"


class _TempRoots:
    """This process's temporary-root file of one store, and who holds each line.

    ``held`` maps an owner (a plan, ``PROCESS`` or ``PUBLISHED``) to its RRefs, as text
    (hashing text is cheaper than hashing RRef values, and text is what the file holds);
    the file holds their union (``written``), appended to as owners add, rewritten when an
    owner lets go.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.path: str | None = None
        self.held: dict[object, set[str]] = {}
        self.written: set[str] = set()
        self.broken = False  # the file cannot be made (a read-only store): root nothing
        self.fd: int | None = None

    def _open(self) -> int | None:
        """The file, opened for appending (made on first use) in this process's staging
        folder, which is locked before it exists: never taken for a dead process's. Kept
        open (an open and a close per write were most of a build's rooting cost);
        ``forget`` closes it, for a store wiped or unmounted under this process."""
        if self.broken:
            return None
        if self.fd is not None:
            return self.fd
        try:
            self.path = os.path.join(staging.staging_root(self.store), TEMP)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self.fd = os.open(self.path, flags, 0o600)
        except OSError:  # StoreError included: a read-only store, where no gc of ours runs
            self.broken = True
            return None
        _held_fds.add(self.fd)
        return self.fd

    def close(self) -> None:
        """Close the kept descriptor (see ``_open``)."""
        if self.fd is not None and self.fd in _held_fds:
            _held_fds.discard(self.fd)
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd = None

    def add(self, owner: object, rrefs: Iterable[RRef]) -> None:
        """Give ``owner`` these roots (the caller holds the gc lock shared). An RRef held
        as ``PUBLISHED`` moves to ``owner``: a plan that records what it published drops it
        when it closes."""
        texts = [str(r) for r in rrefs]
        mine = self.held.setdefault(owner, set())
        mine.update(texts)
        loose = self.held.get(PUBLISHED)
        if loose and owner is not PUBLISHED:
            loose.difference_update(texts)
        new = [t for t in dict.fromkeys(texts) if t not in self.written]
        if not new:
            return
        fd = self._open()
        if fd is None:
            return
        os.write(fd, "".join(f"{t}\n" for t in new).encode())
        self.written.update(new)

    def release(self, owner: object, keep: Iterable[RRef]) -> None:
        """``owner`` lets go of its roots but ``keep`` (held until the process ends); the
        file is rewritten without what nobody holds any more."""
        dropped = self.held.pop(owner, set())
        kept = {str(r) for r in keep}
        if kept:
            self.held.setdefault(PROCESS, set()).update(kept)
        if not dropped - kept:
            return
        wanted = set().union(*self.held.values()) if self.held else set()
        if self.path is None or wanted == self.written:
            return
        with gc_lock(self.store, shared=True):
            # Under the lock: gc never reads a half-written file.
            fd = self._open()
            if fd is None:
                return
            os.ftruncate(fd, 0)  # appends then start at 0 again
            os.write(fd, "".join(f"{t}\n" for t in sorted(wanted)).encode())
            self.written = wanted


_temp: dict[tuple[Path, int], _TempRoots] = {}
_temp_lock = threading.RLock()


def _roots_of(store: Store) -> _TempRoots:
    key = (store.root, os.getpid())
    found = _temp.get(key)
    if found is None:
        found = _temp[key] = _TempRoots(store)
        for older in list(_temp.values())[:-KEPT_STORES]:
            older.close()  # reopened on its next write (see _TempRoots._open)
    return found


class Rooting:
    """Holds the gc lock shared for one batch of choosing or publishing (a context manager,
    made by ``rooting``): RRefs ``add``-ed become temporary roots of ``owner`` before the
    lock is let go, even when the block ends by an exception (what was chosen may still be
    in use). A plain class, not a generator: a realize enters one three times per build."""

    def __init__(self, store: Store, owner: object) -> None:
        self.store, self.owner = store, owner
        self.pending: list[RRef] = []
        self._hold = _hold_of(store)

    def __enter__(self) -> Rooting:
        _take_shared(self.store, self._hold)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            with contextlib.suppress(OSError):  # rooting is best effort on a broken disk
                self.flush()
        finally:
            _let_go_shared(self._hold)

    def add(self, rrefs: Iterable[RRef]) -> None:
        """Root these when the lock is let go (or sooner)."""
        self.pending.extend(rrefs)

    def flush(self) -> None:
        """Write down what was added so far."""
        if self.pending:
            with _temp_lock:
                _roots_of(self.store).add(self.owner, self.pending)
            self.pending = []

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """Let go of the gc lock for a while (to wait for a build lock), after writing
        down what was added; take it again after."""
        self.flush()
        _let_go_shared(self._hold)
        try:
            yield
        finally:
            _take_shared(self.store, self._hold)


def rooting(store: Store, owner: object) -> Rooting:
    """Hold the gc lock shared for one batch of choosing or publishing; what is added to
    the ``Rooting`` becomes temporary roots of ``owner`` before the lock goes."""
    return Rooting(store, owner)


def release(store: Store, owner: object, keep: Iterable[RRef] = ()) -> None:
    """``owner`` (a plan that closes) lets go of its temporary roots, except ``keep``
    (its results), which this process holds until it ends. Best effort: a root that cannot
    be dropped only keeps something longer."""
    with _temp_lock, contextlib.suppress(OSError):
        found = _temp.get((store.root, os.getpid()))
        if found is not None:
            found.release(owner, keep)


def temp_roots(store: Store) -> set[RRef]:
    """The temporary roots of live processes, this one's included (the caller holds the
    gc lock exclusively, so no process writes its file meanwhile). A dead process's file
    is left to its staging garbage.

    Raises:
        StoreError: ``.tmp`` or a live process's file cannot be read.
    """
    tmp = os.path.join(store.root, TMP)
    try:
        names = sorted(os.listdir(tmp))
    except FileNotFoundError:
        return set()
    except OSError as e:
        raise StoreError(f"cannot list {tmp}: {e.strerror or e}", path=tmp) from None
    own = staging._staging.get((store.root, os.getpid()), (None,))[0]
    found: set[RRef] = set()
    for name in names:
        path = os.path.join(tmp, name, TEMP)
        if name.endswith(".lock") or not os.path.exists(path):
            continue
        if Path(tmp, name) != own and not staging._is_held(Path(tmp), name):
            continue  # a dead process's: its roots ended with it
        try:
            found.update(_parse_lines(records.read_bytes(path)))
        except FileNotFoundError:
            continue  # its process ended meanwhile, and removed its staging
        except OSError as e:
            raise StoreError(f"cannot read {path}: {e.strerror or e}", path=path) from None
    return found


def _parse_lines(data: bytes) -> Iterator[RRef]:
    for line in data.decode("utf-8", "replace").splitlines():
        with contextlib.suppress(RefError):
            yield RRef.parse(line)  # a line cut by a crash is no RRef: skipped


def _forget_at_fork() -> None:
    """A forked child must not hold its parent's gc lock nor write to its parent's roots:
    it closes its copies and starts afresh (in a staging folder of its own)."""
    for fd in _held_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_fds.clear()
    _shared.clear()
    _temp.clear()


def _remove_own_files() -> None:
    """At a normal exit, remove this process's temporary-root files: their roots end with
    it, and staging then removes its folder if nothing else is left in it. (Registered
    after staging's own exit hook, so it runs before it.)"""
    for (_, pid), roots in list(_temp.items()):
        if pid == os.getpid() and roots.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(roots.path)


os.register_at_fork(after_in_child=_forget_at_fork)
atexit.register(_remove_own_files)
