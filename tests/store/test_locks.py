"""Build locks (nixlet.locks): one per derivation, exclusive between processes, threads and
descriptors, released when the holder exits or dies; OFD byte-range locks on one shared
file on Linux, per-derivation ``flock`` files where OFD locks do not exist."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import nixlet as nx
from nixlet.store import layout, locks

A = nx.DRef("a" * 32, "a")
B = nx.DRef("b" * 32, "b")


@pytest.fixture(params=["ofd", "flock"])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test with OFD locks (this machine's default) and with the flock fallback."""
    if request.param == "flock":
        monkeypatch.setattr(locks, "_OFD", False)
    else:
        assert locks._OFD, "Linux has OFD locks (fcntl.F_OFD_SETLKW)"
    yield request.param


def test_a_held_lock_excludes_a_second_holder_in_the_same_process(
    store: nx.Store, kind: str
) -> None:
    """Each acquisition opens its own descriptor, so even one process does not get the
    same derivation's lock twice; another derivation's lock is free."""
    with locks.derivation_lock(store, A) as first:
        assert first
        with locks.derivation_lock(store, A, wait=False) as second:
            assert not second
        with locks.derivation_lock(store, B, wait=False) as other:
            assert other
        # Releasing B's lock did not release A's (POSIX process locks would have).
        with locks.derivation_lock(store, A, wait=False) as third:
            assert not third
    with locks.derivation_lock(store, A, wait=False) as after:
        assert after


def test_a_waiting_thread_gets_the_lock_when_it_is_released(store: nx.Store, kind: str) -> None:
    got = threading.Event()
    release = threading.Event()

    def waiter() -> None:
        with locks.derivation_lock(store, A):
            got.set()

    with locks.derivation_lock(store, A):
        t = threading.Thread(target=waiter)
        t.start()
        assert not got.wait(0.3), "the waiter got a lock that is held"
        release.set()
    assert got.wait(10), "the waiter never got the released lock"
    t.join()


HOLDER = """
import sys, time
import nixlet as nx
from nixlet.store import locks
store = nx.store_initialize(sys.argv[1])
if sys.argv[2] == "flock":
    locks._OFD = False
with locks.derivation_lock(store, nx.DRef("a" * 32, "a")):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_lock_held_by_a_killed_process_is_free(store: nx.Store, kind: str) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store.root), kind], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            with locks.derivation_lock(store, A, wait=False) as got:
                assert not got, "another process's lock was granted"
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(10)
            with locks.derivation_lock(store, A, wait=False) as got:
                assert got, "the dead holder's lock was not released"
        finally:
            holder.kill()


def test_lock_files(store: nx.Store, kind: str) -> None:
    """OFD locks live in one file whatever the number of derivations; the fallback makes
    one file per derivation. Either gets the canonical mtime (rsync leaves it alone)."""
    for dref in (A, B):
        with locks.derivation_lock(store, dref):
            pass
    names = sorted(os.listdir(store.root / layout.LOCKS))
    if kind == "ofd":
        assert names == [locks.BUILD_LOCK]
        assert locks.lock_slot(A) != locks.lock_slot(B)
    else:
        assert names == [f"{A.key}.lock", f"{B.key}.lock"]
    for name in names:
        assert os.stat(store.root / layout.LOCKS / name).st_mtime == layout.CANONICAL_MTIME


def test_lock_slots_are_spread_and_stable() -> None:
    """A slot is a pure function of the hash (every process must agree on it), and
    distinct hashes give distinct slots."""
    digits = str.maketrans("0123456789", "abcdefghij")
    drefs = [nx.DRef((f"{i:04d}" + "a" * 28).translate(digits), "x") for i in range(1000)]
    slots = {locks.lock_slot(d) for d in drefs}
    assert len(slots) == len(drefs)
    assert all(0 <= s < 1 << 60 for s in slots)
    assert locks.lock_slot(A) == int("0" * 12, 32)
    assert locks.lock_slot(nx.DRef("7" * 32, "x")) == (1 << 60) - 1


def test_realize_takes_the_locks(tmp_path: Path, kind: str) -> None:
    """A realize of many derivations leaves one lock file (OFD locks), or one per
    derivation (the flock fallback), and both kinds serialise the same way."""
    store = nx.store_initialize(tmp_path / "many")

    def stage(m: nx.Manager) -> nx.DRef:
        def build(b: nx.Build) -> None:
            (nx.build_outpath(b) / "i").write_text(str(nx.build_cattrs(b).i))

        leaves = [
            nx.mkdrv(
                m, nx.mkconfig({"name": f"l{i}", "i": i}), nx.match_some(), nx.build_wrapper(build)
            )
            for i in range(20)
        ]
        return nx.mkdrv(
            m,
            nx.mkconfig({"name": "top", "i": 0, "deps": leaves}),
            nx.match_some(),
            nx.build_wrapper(build),
        )

    closure = nx.instantiate(stage, store=store)
    rref = nx.realize(closure, store=store)
    assert len(nx.alldrefs(store=store)) == 21
    names = os.listdir(store.root / layout.LOCKS)
    if kind == "ofd":
        assert names == [locks.BUILD_LOCK]
    else:
        assert sorted(names) == sorted(f"{d.dref.key}.lock" for d in closure.derivations)
    assert nx.realize(nx.instantiate(stage, store=store), store=store) == rref


def test_a_filesystem_without_locks_gives_a_store_error(
    store: nx.Store, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store on a filesystem that refuses locks (some FUSE and network mounts answer
    ENOLCK) gets nixlet's own error, naming the lock file and what to do."""
    import errno
    import fcntl

    def refuse(*_: object) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    real = fcntl.fcntl, fcntl.flock
    monkeypatch.setattr(fcntl, "fcntl", refuse)
    monkeypatch.setattr(fcntl, "flock", refuse)
    with pytest.raises(nx.StoreError, match="local filesystem") as e:
        with locks.derivation_lock(store, A):
            pass
    assert str(e.value.path).startswith(str(store.root / layout.LOCKS))
    assert isinstance(e.value, OSError)
    # The descriptor was closed: the next lock (with locks working again) is free.
    monkeypatch.setattr(fcntl, "fcntl", real[0])
    monkeypatch.setattr(fcntl, "flock", real[1])
    with locks.derivation_lock(store, A, wait=False) as got:
        assert got
