"""Merge campaign: two stores built independently from overlapping closures, merged with
real ``rsync -a`` in both directions.

Store A and store B each realize a deterministic stage (the same RRef in both, built at
different times), a non-deterministic stage on top of it (a different RRef in each), and a
stage of their own. After ``rsync -a A/ B/`` every object of both is intact in B, the
deterministic one keeps B's own record, and a realize in B sees the union; after
``rsync -a B/ A/`` the two stores hold the same refs. One merge runs as the unprivileged
user ``nobody`` on stores it owns, where read-only folders really bind (root ignores
modes), to show that rsync never needs to write inside a published object.
"""

from __future__ import annotations

import math
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import nixlet as nx
from campaign_stages import (
    AS_NOBODY,
    ENV_LOG,
    HANG_GUARD,
    StoreState,
    builds_per_dref,
    finish,
    reaped,
    run,
    start,
    verify_store,
)
from conftest import campaign_scale
from nixlet.store import layout, records
from nixlet.store import opening as store_mod

pytestmark = pytest.mark.long


@attrs.frozen
class Built:
    """One store after its own realize."""

    root: Path
    state: StoreState
    det: nx.RRef
    noise: nx.RRef
    side: nx.RRef

    def meta(self, rref: nx.RRef) -> bytes:
        """The bytes of a realization's meta.json in this store."""
        store = store_mod.open_store(self.root)
        return (layout.rref_dir(store, rref) / layout.META_FILE).read_bytes()


def _one(state: StoreState, name: str) -> nx.RRef:
    (rref,) = [r for r in state.rrefs if r.name == name]
    return rref


def _build_both(base: Path) -> tuple[Built, Built]:
    """Realize the merge pipeline in two new stores, one process each: side "a" in store
    A, then side "b" in store B, in a later second of the clock (rsync compares mtimes to
    the second, so builds within one second could hide a file whose mtime is not
    canonical)."""
    outs: list[dict[str, Any]] = []
    for s in ("A", "B"):
        if outs:
            time.sleep(math.floor(time.time()) + 1.05 - time.time())
        outs.append(run({"store": str(base / s), "stage": "merge", "kwargs": {"side": s.lower()}}))
    built = []
    for s, out in zip(("A", "B"), outs, strict=True):
        state = verify_store(base / s)
        side = _one(state, f"side-{s.lower()}")
        assert out["rrefs"] == [str(side)]
        built.append(Built(base / s, state, _one(state, "det"), _one(state, "noise"), side))
    return built[0], built[1]


def _file_inodes(root: Path) -> dict[str, int]:
    """The inode of every file of a store but its staging area, by relative path."""
    found = {}
    for folder, dirs, files in os.walk(root):
        if folder == str(root):
            dirs.remove(layout.TMP)
        for name in files:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = os.lstat(path).st_ino
    return found


def _rsync(src: Path, dst: Path, as_nobody: bool) -> None:
    """``rsync -a src/ dst/``, as root or as nobody; it must succeed and say nothing."""
    command = ["rsync", "-a", f"{src}/", f"{dst}/"]
    done = subprocess.run(
        [*AS_NOBODY, *command] if as_nobody else command,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert (done.returncode, done.stderr) == (0, ""), f"{command} failed: {done.stderr}"


def _realize_in(store: Path, log: Path, as_nobody: bool, **kwargs: Any) -> list[str]:
    """Realize the merge pipeline in ``store`` (in a child process, run by nobody if
    asked) and return the RRefs it chose."""
    spec = {"store": str(store), "stage": "merge", "kwargs": kwargs, "many": True}
    proc = start(spec, {ENV_LOG: str(log)}, as_nobody=as_nobody)
    with reaped([proc]):
        out = finish(proc)
    assert out["uid"] == (pwd.getpwnam("nobody").pw_uid if as_nobody else os.getuid())
    return list(out["rrefs"])


def _merge_campaign(base: Path, as_nobody: bool = False) -> None:
    """Build A and B, merge A into B, realize in B, merge B into A, checking each step."""
    a, b = _build_both(base)
    if as_nobody:
        _give_to_nobody(base)
    # Before: the deterministic stage is one RRef in both stores, with its own build
    # times in each; the non-deterministic one differs.
    assert a.det == b.det
    times = [records.read_build_times(store_mod.open_store(s.root), s.det) for s in (a, b)]
    assert math.floor(times[0][1]) < math.floor(times[1][0]), "built in different seconds"
    assert a.meta(a.det) != b.meta(b.det)
    assert len(a.meta(a.det)) == len(b.meta(b.det))  # fixed-width times
    assert a.noise != b.noise and a.side.dref != b.side.dref
    a_det_meta, b_det_meta = a.meta(a.det), b.meta(b.det)
    b_files = _file_inodes(b.root)

    _rsync(a.root, b.root, as_nobody)
    # rsync's quick check (size and mtime, to the second) passes over every file B had:
    # records, realizations and lock files keep their inodes (a process waiting on a lock
    # file keeps waiting on the one other processes open). The format record is the
    # exception: it keeps the mtime of its creation, so rsync rewrites it, same bytes.
    after = _file_inodes(b.root)
    rewritten = {p for p, ino in b_files.items() if after.get(p) != ino}
    assert rewritten <= {"format"}, f"rsync replaced files B already had: {sorted(rewritten)}"
    assert (b.root / "format").read_bytes() == layout.FORMAT_BYTES
    merged_b = verify_store(b.root)
    assert merged_b.rrefs == a.state.rrefs | b.state.rrefs
    assert merged_b.drefs == a.state.drefs | b.state.drefs
    assert b.meta(b.det) == b_det_meta, "B's record of the shared object was replaced"
    for rref in a.state.rrefs - {a.det}:
        assert b.meta(rref) == a.meta(rref)

    # A realize in B sees both stores' realizations of the noise stage, and builds nothing.
    log = base / "log"
    union = _realize_in(b.root, log, as_nobody and _nobody_runs_python(), side=None, noise="all")
    assert union == sorted([str(a.noise), str(b.noise)])
    assert builds_per_dref(log) == {}

    _rsync(b.root, a.root, as_nobody)
    merged_a = verify_store(a.root)
    assert merged_a == merged_b
    assert a.meta(a.det) == a_det_meta, "A's record of the shared object was replaced"
    assert nx.allrrefs(store=a.root) == nx.allrrefs(store=b.root)
    assert nx.alldrefs(store=a.root) == nx.alldrefs(store=b.root)


def test_rsync_merges_two_stores(tmp_path: Path) -> None:
    """Two independently built stores merge with rsync -a in both directions, as root."""
    assert shutil.which("rsync"), "rsync is missing: run scripts/install-system.sh"
    for i in range(campaign_scale(1, 10)):
        _merge_campaign(tmp_path / f"round{i}")


@pytest.fixture
def nobody_base() -> Iterator[Path]:
    """A folder that the user nobody can reach: pytest's own temporary folders are private
    to root (mode 0700), so this one is made beside them and removed afterwards."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("running as nobody needs root and setpriv")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    base = Path(tempfile.mkdtemp(prefix="nixlet-merge-nobody-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base)


def _nobody_runs_python() -> bool:
    """Whether nobody can run this interpreter (not when it lives in root's home, 0700)."""
    probe = subprocess.run([*AS_NOBODY, sys.executable, "-c", "pass"], capture_output=True)
    return probe.returncode == 0


def _give_to_nobody(base: Path) -> None:
    """Hand both stores (and their folder) to nobody, then check that read-only store
    folders now bind: nobody cannot create a file inside a published realization."""
    subprocess.run(["chown", "-R", "nobody:nogroup", str(base)], check=True)
    store = store_mod.open_store(base / "A")
    inside = layout.rref_dir(store, nx.allrrefs(store=store)[0]) / "intruder"
    probe = subprocess.run([*AS_NOBODY, "touch", str(inside)], capture_output=True, text=True)
    assert probe.returncode != 0 and "Permission denied" in probe.stderr
    assert not inside.exists()


def test_rsync_merge_as_unprivileged_user(nobody_base: Path) -> None:
    """The same merge, with both rsyncs run as nobody on stores nobody owns: rsync -a never
    fails on the read-only folders of the objects both stores hold. The realize in the
    merged store runs as nobody too where nobody can run this interpreter (else as root,
    which creates nothing in the store since it builds nothing)."""
    assert shutil.which("rsync"), "rsync is missing: run scripts/install-system.sh"
    for i in range(campaign_scale(1, 10)):
        _merge_campaign(nobody_base / f"round{i}", as_nobody=True)
