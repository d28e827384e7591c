"""GC roots: user links (``linkrref``, ``linkrrefs``) and the temporary roots of live
processes, as ``gc`` sees them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import nixlet as nx
from campaign_stages import HANG_GUARD, child_env, reaped, verify_realization, wait_for
from nixlet.store import roots as roots_mod

#: A child that realizes a two-stage chain (tagged ``argv[3]``) in ``argv[1]``, writes the
#: RRef to ``argv[2]`` and sleeps until it is killed.
HOLDER = r"""
import os, sys, time, nixlet as nx
def noise(b):
    (nx.build_outpath(b) / "n").write_bytes(os.urandom(16))
def stage(m):
    a = nx.mkdrv(m, {"name": "a", "tag": sys.argv[3]}, nx.match_some(1), nx.build_wrapper(noise))
    return nx.mkdrv(m, {"name": "b", "a": a}, nx.match_some(1), nx.build_wrapper(noise))
nx.store_initialize(sys.argv[1])
rref = nx.realize(nx.instantiate(stage))
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(rref))
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
time.sleep(600)
"""


def _made_elsewhere(store: nx.Store, tmp: Path) -> nx.RRef:
    """A chain (new each call) realized by a child that has ended: nobody holds it."""
    out = tmp / f"made{len(list(tmp.glob('made*')))}"
    code = HOLDER.replace("time.sleep(600)", "")
    subprocess.run(
        [sys.executable, "-c", code, str(store.root), str(out), out.name],
        check=True,
        env=child_env(),
    )
    return nx.RRef.parse(out.read_text())


def _chain(store: nx.Store, rref: nx.RRef) -> set[nx.RRef]:
    return {rref} | nx.rrefdeps(rref, store=store)


def test_a_link_keeps_its_realization_and_its_inputs(store: nx.Store, tmp_path: Path) -> None:
    """linkrref makes a symlink to rref2path and a registration under roots/; gc keeps the
    realization and what it was built from, which verify."""
    rref = _made_elsewhere(store, tmp_path)
    link = nx.linkrref(rref, tmp_path / "result")
    assert link == tmp_path / "result" and link.is_symlink()
    assert link.resolve() == nx.rref2path(rref).resolve()
    assert len(os.listdir(store.root / roots_mod.ROOTS)) == 1
    report = nx.gc()
    assert report.rrefs == () and report.roots == ()
    for r in _chain(store, rref):
        verify_realization(store, r)


def test_a_deleted_link_stops_counting(store: nx.Store, tmp_path: Path) -> None:
    """Once the user deletes the link, gc removes the realization, its inputs and the
    stale registration."""
    rref = _made_elsewhere(store, tmp_path)
    link = nx.linkrref(rref, tmp_path / "result")
    chain = _chain(store, rref)
    link.unlink()
    report = nx.gc()
    assert set(report.rrefs) == chain and len(report.roots) == 1
    assert nx.allrrefs() == [] and os.listdir(store.root / roots_mod.ROOTS) == []


def test_a_link_pointed_elsewhere_stops_counting(store: nx.Store, tmp_path: Path) -> None:
    """A link the user points at something outside the store no longer keeps anything; a
    link replaced by linkrref keeps only its new realization."""
    first = _made_elsewhere(store, tmp_path)
    second = _made_elsewhere(store, tmp_path)
    assert first != second
    chains = _chain(store, first), _chain(store, second)
    link = nx.linkrref(first, tmp_path / "result")
    nx.linkrref(second, link)  # replaced: one link, one registration
    assert set(nx.gc().rrefs) == chains[0]
    link.unlink()
    link.symlink_to(tmp_path)
    assert set(nx.gc().rrefs) == chains[1]


def test_linkrref_refuses_what_it_cannot_link(store: nx.Store, tmp_path: Path) -> None:
    """A file in the way, a missing folder and an absent realization are refused, and
    nothing is registered."""
    rref = _made_elsewhere(store, tmp_path)
    (tmp_path / "file").write_text("mine")
    with pytest.raises(nx.UsageError):
        nx.linkrref(rref, tmp_path / "file")
    with pytest.raises(nx.UsageError):
        nx.linkrref(rref, tmp_path / "no" / "link")
    nx.rmref(rref)
    with pytest.raises(nx.StoreError):
        nx.linkrref(rref, tmp_path / "link")
    assert not (tmp_path / "link").exists() and (tmp_path / "file").read_text() == "mine"
    assert not (store.root / roots_mod.ROOTS).exists() or not os.listdir(
        store.root / roots_mod.ROOTS
    )


def test_linkrrefs_names_links_by_rref_or_as_given(store: nx.Store, tmp_path: Path) -> None:
    """One link per RRef, named by the RRef (without ``rref:``) or by ``names``; bad names
    are refused."""
    a, b = _made_elsewhere(store, tmp_path), _made_elsewhere(store, tmp_path)
    links = nx.linkrrefs([a, b], tmp_path / "out")
    assert [p.name for p in links] == [str(a)[5:], str(b)[5:]]
    named = nx.linkrrefs([a, str(b)], tmp_path / "named", names=["x", "y"])
    assert [p.resolve() for p in named] == [nx.rref2path(r).resolve() for r in (a, b)]
    for bad in (["x"], ["x", "x"], ["x", "../y"], "xy"):
        with pytest.raises(nx.UsageError):
            nx.linkrrefs([a, b], tmp_path / "bad", names=bad)
    assert nx.gc().rrefs == ()


def test_a_live_process_s_roots_count_until_it_is_killed(store: nx.Store, tmp_path: Path) -> None:
    """What a live process's realize returned survives gc here; once the process is
    killed (SIGKILL: no exit hook runs), its temporary roots count for nothing."""
    out = tmp_path / "held"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store.root), str(out), "held"],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with reaped([proc]):
        wait_for(lambda: out.exists() or proc.poll() is not None, "the holder's realize")
        assert proc.poll() is None, proc.communicate()[1]
        rref = nx.RRef.parse(out.read_text())
        chain = _chain(store, rref)
        assert nx.gc().rrefs == ()
        verify_realization(store, rref)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=HANG_GUARD)
    report = nx.gc()
    assert set(report.rrefs) == chain
    assert nx.allrrefs() == [] and len(report.staging) == 1
