"""sync: copying closures between stores with the real rsync, locally and over a real sshd
on 127.0.0.1 (tests/sshd.py), into staging first, checked, then published by rename.

Every destination is checked with ``verify_store`` (campaign_stages.py), an independent
reimplementation of the store's rules: each visible realization's files rehashed against
its manifest, its name recomputed, its records rehashed, nothing stray in the store.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import nixlet as nx
from campaign_stages import HANG_GUARD, verify_store
from nixlet.store import layout
from sshd import SshServer

# ---------------------------------------------------------------- stages


def _write(b: nx.Build) -> None:
    """Writes its config's ``text`` to ``out.txt``, a noise file, and a small tree."""
    c = nx.build_cattrs(b)
    for out in nx.build_outpaths(b):
        (out / "out.txt").write_text(str(c.text))
        (out / "noise.txt").write_text(repr(random.random()))  # each build: another RRef
        (out / "sub").mkdir()
        (out / "sub" / "run.sh").write_text("#!/bin/sh\n")
        (out / "sub" / "run.sh").chmod(0o755)
        (out / "link").symlink_to("out.txt")


def _big(b: nx.Build) -> None:
    """Writes ``size`` random bytes (slow enough to interrupt under --bwlimit)."""
    size = nx.build_cattrs(b).size
    (nx.build_outpath(b) / "big.bin").write_bytes(random.randbytes(size))


def _pipeline(m: nx.Manager) -> nx.DRef:
    """a -> b -> c (c depends on b, b on a), and d, built from a alone."""
    a = nx.mkdrv(m, {"name": "a", "text": "A"}, nx.match_only(), nx.build_wrapper(_write))
    b = nx.mkdrv(m, {"name": "b", "text": "B", "a": a}, nx.match_only(), nx.build_wrapper(_write))
    c = nx.mkdrv(m, {"name": "c", "text": "C", "b": b}, nx.match_only(), nx.build_wrapper(_write))
    return c


def _other(m: nx.Manager) -> nx.DRef:
    a = nx.mkdrv(m, {"name": "a", "text": "A"}, nx.match_only(), nx.build_wrapper(_write))
    return nx.mkdrv(
        m, {"name": "d", "text": "D", "a": a}, nx.match_all(), nx.build_wrapper(_write, nouts=2)
    )


def _with_big(m: nx.Manager, size: int) -> nx.DRef:
    a = nx.mkdrv(m, {"name": "a", "text": "A"}, nx.match_only(), nx.build_wrapper(_write))
    return nx.mkdrv(
        m, {"name": "big", "size": size, "a": a}, nx.match_only(), nx.build_wrapper(_big)
    )


def _source(root: Path) -> tuple[nx.Store, nx.RRef, list[nx.RRef]]:
    """A store holding the pipeline (c's closure: a, b, c) and d's two realizations."""
    src = nx.store_initialize(root)
    c = nx.realize(nx.instantiate(_pipeline, store=src), store=src)
    d = nx.realize_many(nx.instantiate(_other, store=src), store=src)
    return src, c, d


def _files(store: nx.Store, rrefs: list[nx.RRef]) -> int:
    """The regular files of these realizations (their out/ and meta.json)."""
    count = 0
    for rref in rrefs:
        for _folder, _dirs, files in os.walk(layout.rref_dir(store, rref)):
            count += sum(not os.path.islink(os.path.join(_folder, f)) for f in files)
    return count


def _inodes(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file of a store but its staging area."""
    found = {}
    for folder, dirs, files in os.walk(root):
        if folder == str(root):
            dirs[:] = [d for d in dirs if d != layout.TMP]
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            found[os.path.relpath(os.path.join(folder, name), root)] = (st.st_ino, st.st_mtime_ns)
    return found


def _leftovers(store: nx.Store) -> list[str]:
    """What a sync left in the destination's staging area: anything below a staging root
    but the process's temporary gc roots (the staging roots and their lock files are this
    process's, made once and kept)."""
    tmp = store.root / layout.TMP
    return [
        f"{d}/{n}"
        for d in os.listdir(tmp)
        if (tmp / d).is_dir()
        for n in os.listdir(tmp / d)
        if n != "roots"
    ]


# ---------------------------------------------------------------- local


def test_sync_everything_into_an_empty_store(tmp_path: Path) -> None:
    """Every realization arrives, checked and canonical; the report says what came."""
    src, c, d = _source(tmp_path / "src")
    dst = nx.store_initialize(tmp_path / "dst")
    report = nx.sync(src, dst)
    everything = nx.allrrefs(store=src)
    assert len(everything) == 5
    assert list(report.published) == everything and report.present == ()
    assert report.files == _files(src, everything) + 2 * len(nx.alldrefs(store=src))
    assert verify_store(dst.root) == verify_store(src.root)
    assert nx.catref(c, "out.txt", store=dst) == "C"
    assert _leftovers(dst) == []
    again = nx.sync(src, dst)
    assert again.published == () and list(again.present) == everything and again.files == 0


def test_sync_of_a_ref_copies_its_closure_only(tmp_path: Path) -> None:
    """An RRef brings what it was built from and nothing else; a DRef brings all its
    realizations, each with its closure."""
    src, c, d = _source(tmp_path / "src")
    dst = nx.store_initialize(tmp_path / "dst")
    b = next(iter(nx.rrefctx(c, store=src).values()))[0]
    a = next(iter(nx.rrefctx(b, store=src).values()))[0]
    report = nx.sync(src, dst, str(b))
    assert report.published == tuple(sorted([a, b]))
    assert set(verify_store(dst.root).rrefs) == {a, b}
    assert {r.name for r in nx.allrrefs(store=dst)} == {"a", "b"}
    report = nx.sync(src, dst, [d[0].dref])
    assert set(report.published) == set(d) and report.present == (a,)
    assert set(verify_store(dst.root).rrefs) == {a, b, *d}


def test_present_objects_are_not_transferred(tmp_path: Path) -> None:
    """Into a store that holds part of the closure, only the missing objects travel:
    rsync's count of files matches theirs, and the files already there keep their inodes
    and mtimes."""
    src, c, _ = _source(tmp_path / "src")
    dst = nx.store_initialize(tmp_path / "dst")
    b = next(iter(nx.rrefctx(c, store=src).values()))[0]
    nx.sync(src, dst, b)
    before = _inodes(dst.root)
    report = nx.sync(src, dst)
    missing = sorted(
        set(nx.allrrefs(store=src)) - set(nx.allrrefs(store=dst)) | set(report.published)
    )
    assert len(report.present) == 2 and set(report.published).isdisjoint(report.present)
    new_drefs = {r.dref for r in report.published}
    assert report.files == _files(src, missing) + 2 * len(new_drefs)
    after = _inodes(dst.root)
    assert {k: after[k] for k in before} == before
    assert verify_store(dst.root) == verify_store(src.root)


@pytest.mark.parametrize("damage", ["file", "manifest"])
def test_a_corrupted_source_object_is_refused(tmp_path: Path, damage: str) -> None:
    """A byte changed in a published output (or a manifest rewritten to match it) is found
    by the receiver: StoreError naming the object, and nothing of the sync appears."""
    src, c, _ = _source(tmp_path / "src")
    dst = nx.store_initialize(tmp_path / "dst")
    b = next(iter(nx.rrefctx(c, store=src).values()))[0]
    target = nx.rref2path(b, store=src) / "out.txt"
    if damage == "file":
        os.chmod(target, 0o644)
        target.write_text("X")  # same size, other bytes
    else:
        meta = layout.rref_dir(src, b) / layout.META_FILE
        os.chmod(meta, 0o644)
        meta.write_bytes(meta.read_bytes().replace(b'"size":1', b'"size":2', 1))
    with pytest.raises(nx.StoreError, match="refused") as e:
        nx.sync(src, dst, c)
    assert e.value.ref == b
    assert nx.allrrefs(store=dst) == [] and nx.alldrefs(store=dst) == []
    assert _leftovers(dst) == []


def test_errors_of_use(tmp_path: Path) -> None:
    """Two remote sides, an rsync daemon, a bad ref, a ref not in the source, and a
    destination that is not a store are refused before anything is copied."""
    src, c, _ = _source(tmp_path / "src")
    dst = nx.store_initialize(tmp_path / "dst")
    with pytest.raises(nx.UsageError, match="two remote"):
        nx.sync("a:/x", "b:/y")
    with pytest.raises(nx.UsageError, match="module"):
        nx.sync("host::module/store", dst)
    with pytest.raises(nx.RefError):
        nx.sync(src, dst, "rref:nope")
    with pytest.raises(nx.StoreError, match="not in the store"):
        nx.sync(dst, src, c)
    with pytest.raises(nx.StoreError, match="no nixlet store"):
        nx.sync(src, tmp_path / "nowhere")
    assert nx.allrrefs(store=dst) == []


# ---------------------------------------------------------------- interrupted


def _rsync_children() -> list[int]:
    """The pids of this process's rsync children."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path("/proc", pid, "stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        if comm == "rsync" and int(rest.split()[1]) == os.getpid():
            found.append(int(pid))
    return found


def _partial(store: nx.Store) -> bool:
    """Whether rsync has started writing the big file into the staging area."""
    for folder, _dirs, files in os.walk(store.root / layout.TMP):
        for name in files:
            if "big.bin" in name and os.lstat(os.path.join(folder, name)).st_size > 0:
                return True
    return False


def test_a_killed_rsync_leaves_a_valid_destination(tmp_path: Path) -> None:
    """rsync is SIGKILLed while it copies a large file (slowed by --bwlimit): the sync
    raises StoreError, the destination stays valid with nothing new visible and no staging
    left, and running the sync again completes it."""
    src = nx.store_initialize(tmp_path / "src")
    big = nx.realize(nx.instantiate(_with_big, 4 << 20, store=src), store=src)
    dst = nx.store_initialize(tmp_path / "dst")
    before = verify_store(dst.root)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            nx.sync(src, dst, big, rsync_options=["--bwlimit=512"])
        except BaseException as e:  # noqa: BLE001 (handed to the test's thread)
            errors.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + HANG_GUARD
    while not _partial(dst):
        assert worker.is_alive() and time.monotonic() < deadline, "rsync never started"
        time.sleep(0.01)
    killed = _rsync_children()
    assert killed
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    worker.join(HANG_GUARD)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], nx.StoreError), errors
    assert "rsync" in str(errors[0])
    assert verify_store(dst.root) == before
    assert _leftovers(dst) == []
    report = nx.sync(src, dst, big)
    assert big in report.published and len(report.published) == 2
    assert verify_store(dst.root).rrefs == {big, *nx.rrefdeps(big, store=src)}


# ---------------------------------------------------------------- over ssh


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A real sshd on 127.0.0.1, logging in as the current user with a throw-away key."""
    server = SshServer.start(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


def test_sync_over_ssh_both_ways(tmp_path: Path, sshd: SshServer) -> None:
    """Push into a store reached through ssh (the receiver runs there), then pull a closure
    back from it into a third store; both destinations verify and hold what they should."""
    src, c, d = _source(tmp_path / "src")
    far = nx.store_initialize(tmp_path / "far")
    near = nx.store_initialize(tmp_path / "near")
    opts = {"remote_python": sys.executable, "ssh": sshd.ssh}
    pushed = nx.sync(src, sshd.location(far.root), **opts)
    assert list(pushed.published) == nx.allrrefs(store=src)
    assert verify_store(far.root) == verify_store(src.root)
    assert _leftovers(far) == []
    again = nx.sync(src, sshd.location(far.root), **opts)
    assert again.published == () and again.files == 0
    pulled = nx.sync(sshd.location(far.root), near, c, **opts)
    assert set(pulled.published) == {c, *nx.rrefdeps(c, store=src)}
    assert verify_store(near.root).rrefs == set(pulled.published)
    assert nx.catref(c, "out.txt", store=near) == "C"


def test_a_corrupted_object_is_refused_over_ssh(tmp_path: Path, sshd: SshServer) -> None:
    """The remote receiver checks too: the error comes back as a StoreError naming the
    object, and the remote store stays without it."""
    src, c, _ = _source(tmp_path / "src")
    far = nx.store_initialize(tmp_path / "far")
    target = nx.rref2path(c, store=src) / "out.txt"
    os.chmod(target, 0o644)
    target.write_text("Z")
    with pytest.raises(nx.StoreError, match="refused") as e:
        nx.sync(src, sshd.location(far.root), c, remote_python=sys.executable, ssh=sshd.ssh)
    assert e.value.ref == c
    assert nx.allrrefs(store=far) == []


def test_no_nixlet_on_the_far_side(tmp_path: Path, sshd: SshServer) -> None:
    """A remote Python that cannot run nixlet gives a StoreError saying so."""
    src, c, _ = _source(tmp_path / "src")
    with pytest.raises(nx.StoreError, match="no answer from nixlet"):
        nx.sync(src, sshd.location(tmp_path / "far"), remote_python="/no/python", ssh=sshd.ssh)
