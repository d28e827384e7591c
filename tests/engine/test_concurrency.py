"""Concurrency campaign: processes realizing or instantiating the same closure at once.

Builds are counted by two independent detectors, as filelock's own stress tests do: the
build log every build appends to (outside the store), and the realizations the store ends
up holding (``nixlet.drefrrefs``). The stages are non-deterministic (random bytes), so two
builds of one derivation always leave two realizations.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import nixlet as nx
from campaign_stages import (
    ENV_FORK,
    ENV_HOLD,
    ENV_LOG,
    BuildLock,
    alive,
    builds_per_dref,
    finish,
    killed,
    lock_file,
    lock_state,
    open_barrier,
    procfs_locks_usable,
    read_log,
    reaped,
    staging_folders,
    start,
    verify_store,
    wait_for,
)
from conftest import campaign_scale

pytestmark = pytest.mark.long


def _race(n: int, base: Path, spec: dict[str, Any], env: dict[str, str]) -> list[dict[str, Any]]:
    """Start ``n`` children on ``spec`` that all wait at one barrier, let them go at once,
    and return what each got."""
    barrier = base / "barrier"
    barrier.mkdir()
    procs = [start({**spec, "barrier": str(barrier)}, env) for _ in range(n)]
    with reaped(procs):
        open_barrier(barrier, n, procs)
        return [finish(p) for p in procs]


def _fresh(base: Path) -> tuple[Path, Path]:
    """A new store under ``base`` and the path of its build log."""
    base.mkdir()
    nx.store_initialize(base / "store")
    return base / "store", base / "log"


def _staging_is_empty(store: Path) -> None:
    """After successful runs every process is gone: its staging folder is garbage, and
    empty (published objects were renamed out of it, losing copies removed)."""
    for folder in nx.staging_garbage(store=store):
        leftovers = [p.name for p in folder.iterdir()]
        assert leftovers == [], f"{folder} kept {leftovers}"


def test_four_processes_build_each_derivation_once(tmp_path: Path) -> None:
    """Four processes released together realize one non-deterministic 3-stage chain with
    match_some(1): every derivation is built exactly once (build log), the store holds
    exactly one realization of each (drefrrefs), and all four return the same RRef."""
    for i in range(campaign_scale(3, 100)):
        store, log = _fresh(tmp_path / f"round{i}")
        spec = {"store": str(store), "stage": "chain", "kwargs": {"depth": 3}}
        results = _race(4, store.parent, spec, {ENV_LOG: str(log)})
        drefs = results[0]["drefs"]
        assert all(r["drefs"] == drefs for r in results)
        assert len({r["rrefs"][0] for r in results}) == 1, f"round {i}: {results}"
        assert builds_per_dref(log) == dict.fromkeys(drefs, 1), f"round {i}"
        for dref in drefs:
            assert len(nx.drefrrefs(dref, store=store)) == 1, f"round {i}: {dref}"
        state = verify_store(store)
        assert len(state.rrefs) == 3
        _staging_is_empty(store)


def test_race_with_a_racer_killed_at_random(tmp_path: Path) -> None:
    """Four processes race on the 11 derivations of the wide closure and one of them,
    chosen at random, is SIGKILLed at a random moment (perhaps while it holds a batch of
    locks, mid-build or mid-publish): the three others still agree on one RRef, none builds
    a derivation twice, and the store holds exactly one complete realization of each
    derivation."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for i in range(campaign_scale(2, 60)):
        store, log = _fresh(tmp_path / f"round{i}")
        barrier = store.parent / "barrier"
        barrier.mkdir()
        spec = {"store": str(store), "stage": "wide", "barrier": str(barrier)}
        procs = [start(spec, {ENV_LOG: str(log)}) for _ in range(4)]
        victim = rng.choice(procs)
        with reaped(procs):
            open_barrier(barrier, 4, procs)
            time.sleep(rng.uniform(0, 0.2))
            victim.kill()
            victim.communicate()
            outs = [finish(p) for p in procs if p is not victim]
        where = f"round {i}, seed {seed}"
        assert len({o["rrefs"][0] for o in outs}) == 1, where
        for dref in outs[0]["drefs"]:
            assert len(nx.drefrrefs(dref, store=store)) == 1, where
        survivors = {p.pid for p in procs if p is not victim}
        finished = [x.dref for x in read_log(log) if x.event == "done" and x.pid in survivors]
        assert len(finished) == len(set(finished)), f"{where}: a survivor rebuilt something"
        assert len(verify_store(store).rrefs) == 11, where
        nx.remove_staging_garbage(store=store)
        assert nx.staging_garbage(store=store) == []


def test_four_processes_instantiate_at_once(tmp_path: Path) -> None:
    """Four processes released together instantiate the same 11 stages: all get the same
    DRefs, and none writes anything to the store (a derivation's record is published with
    its first realization, not by instantiate)."""
    for i in range(campaign_scale(2, 20)):
        store, _ = _fresh(tmp_path / f"round{i}")
        spec = {"store": str(store), "stage": "wide", "realize": False}
        results = _race(4, store.parent, {**spec, "barrier_before": "instantiate"}, {})
        drefs = results[0]["drefs"]
        assert len(set(drefs)) == 11
        assert all(r["drefs"] == drefs for r in results)
        assert sorted(os.listdir(store)) == [".locks", ".tmp", "format"]
        assert os.listdir(store / ".tmp") == os.listdir(store / ".locks") == []


def test_four_processes_realize_a_wide_closure_at_once(tmp_path: Path) -> None:
    """Four processes released together realize 11 derivations in 7 levels (a 6-stage
    non-deterministic chain beside the crash pipeline, joined by a last stage). Each level's
    derivations are locked without waiting, built and published as a batch, and those whose
    lock another process holds are waited for one by one. So the processes race for every
    lock and publish each other's dependencies, yet each derivation is built exactly once,
    its record is published once (with its realization) and intact, and all four return
    the same RRef."""
    for i in range(campaign_scale(2, 40)):
        store, log = _fresh(tmp_path / f"round{i}")
        spec = {"store": str(store), "stage": "wide"}
        results = _race(4, store.parent, spec, {ENV_LOG: str(log)})
        drefs = results[0]["drefs"]
        assert all(r["drefs"] == drefs for r in results)
        assert len({r["rrefs"][0] for r in results}) == 1, f"round {i}: {results}"
        assert builds_per_dref(log) == dict.fromkeys(drefs, 1), f"round {i}"
        state = verify_store(store)
        assert {str(d) for d in state.drefs} == set(drefs)
        for dref in drefs:
            assert len(nx.drefrrefs(dref, store=store)) == 1, f"round {i}: {dref}"
        _staging_is_empty(store)


def test_match_some_three_by_three_processes(tmp_path: Path) -> None:
    """Three processes realize a 2-stage chain with match_some(3) at once. Each re-checks
    the matcher under the derivation's lock, so together they build exactly three
    realizations of each derivation (not three each), and all return the same three."""
    for i in range(campaign_scale(2, 60)):
        store, log = _fresh(tmp_path / f"round{i}")
        spec = {
            "store": str(store),
            "stage": "chain",
            "kwargs": {"depth": 2, "matcher": "some:3"},
            "many": True,
        }
        results = _race(3, store.parent, spec, {ENV_LOG: str(log)})
        drefs = results[0]["drefs"]
        chosen = {tuple(r["rrefs"]) for r in results}
        assert len(chosen) == 1 and len(next(iter(chosen))) == 3, f"round {i}: {chosen}"
        assert builds_per_dref(log) == dict.fromkeys(drefs, 3), f"round {i}"
        for dref in drefs:
            assert len(nx.drefrrefs(dref, store=store)) == 3, f"round {i}: {dref}"
        # The second stage was built three times in one context: the three first-stage
        # realizations that every process chose.
        first = nx.DRef.parse(drefs[0])
        contexts = {
            frozenset(nx.rrefctx(r, store=store)[first])
            for r in nx.drefrrefs(drefs[1], store=store)
        }
        assert contexts == {frozenset(nx.drefrrefs(first, store=store))}
        verify_store(store)


def _wait_until_waiting(lock: BuildLock, proc: subprocess.Popen[str]) -> None:
    """Wait until process ``proc`` blocks on ``lock`` (the only other process there holds
    it): seen in /proc/locks where it is usable, else given a generous second after it
    started."""
    if not procfs_locks_usable():
        time.sleep(1.0)
        return

    def waiting() -> bool:
        assert proc.poll() is None, "the waiting process ended early"
        return lock_state(lock)[1] == 1

    wait_for(waiting, f"process {proc.pid} to wait on {lock}")


def _wait_for_hold(log: Path, pid: int) -> str:
    """Wait until process ``pid`` starts a held (slow) build; return that build's DRef."""

    def held() -> list[str]:
        return [x.dref for x in read_log(log) if x.event == "hold" and x.pid == pid]

    wait_for(lambda: bool(held()), f"process {pid} to start its slow build")
    (dref,) = held()
    return dref


def test_waiting_process_takes_the_holders_result(tmp_path: Path) -> None:
    """Process A builds the last stage slowly (it sleeps until released) while holding its
    lock; process B arrives, finds no realization, blocks on the lock (seen in
    /proc/locks), and once A publishes and releases, re-checks the matcher and returns A's
    RRef without building anything."""
    for i in range(campaign_scale(1, 20)):
        _waiting_round(tmp_path / f"round{i}")


def _waiting_round(base: Path) -> None:
    store, log = _fresh(base)
    release = base / "release"
    spec = {"store": str(store), "stage": "chain", "kwargs": {"depth": 3}}
    a = start(spec, {ENV_LOG: str(log), ENV_HOLD: f"chain2={release}"})
    with reaped([a]) as procs:
        target = _wait_for_hold(log, a.pid)
        if procfs_locks_usable():
            assert lock_state(lock_file(store, target)) == (1, 0)  # A's, nobody waits
        b = start(spec, {ENV_LOG: str(log)})
        procs.append(b)
        _wait_until_waiting(lock_file(store, target), b)
        assert nx.drefrrefs(target, store=store) == []
        release.touch()
        out_a, out_b = finish(a), finish(b)
    assert target == out_a["drefs"][2]
    assert out_a["rrefs"] == out_b["rrefs"]
    assert all(x.pid == a.pid for x in read_log(log)), "B built something"
    assert builds_per_dref(log) == dict.fromkeys(out_a["drefs"], 1)
    assert [str(r) for r in nx.drefrrefs(target, store=store)] == out_a["rrefs"]
    verify_store(store)


def test_killed_lock_holder_does_not_block_others(tmp_path: Path) -> None:
    """Process A is SIGKILLed in the middle of a slow build, holding the derivation's lock,
    while B waits on that lock: the kernel releases it, B builds and completes, the store
    holds no partial object (A's half-written output stays in its staging folder, which is
    garbage), and every derivation has exactly one realization."""
    for i in range(campaign_scale(1, 20)):
        _killed_holder_round(tmp_path / f"round{i}")


def _killed_holder_round(base: Path) -> None:
    store, log = _fresh(base)
    spec = {"store": str(store), "stage": "chain", "kwargs": {"depth": 3}}
    never = base / "never-released"
    a = start(spec, {ENV_LOG: str(log), ENV_HOLD: f"chain1={never}"})
    with reaped([a]) as procs:
        held = _wait_for_hold(log, a.pid)
        b = start(spec, {ENV_LOG: str(log)})
        procs.append(b)
        _wait_until_waiting(lock_file(store, held), b)
        a.kill()
        killed(a)
        out_b = finish(b)
    lines = read_log(log)
    assert [x.event for x in lines if x.pid == a.pid and x.dref == held] == ["build", "hold"]
    assert [x.event for x in lines if x.pid == b.pid and x.dref == held] == ["build", "done"]
    state = verify_store(store)
    assert len(state.rrefs) == 3
    for dref in out_b["drefs"]:
        assert len(nx.drefrrefs(dref, store=store)) == 1
    (a_staging,) = staging_folders(store, a.pid)
    partial = list(a_staging.glob("chain1.*/out/noise.bin"))
    assert len(partial) == 1, "A's half-written output is in its staging folder"
    garbage = set(nx.staging_garbage(store=store))
    assert a_staging in garbage
    assert nx.remove_staging_garbage(store=store) == len(garbage)
    assert not a_staging.exists()


def test_forked_helper_of_a_killed_holder_does_not_block_others(tmp_path: Path) -> None:
    """A build may fork helpers that outlive it (multiprocessing workers under the fork
    start method, data-loader workers). Process A forks one while it builds chain1, holding
    that derivation's lock, and is SIGKILLed; the helper lives on. B, waiting on the lock,
    must still get it and complete while the helper runs: a forked helper must not inherit
    the build lock (flock belongs to the open file, which the fork shares)."""
    store, log = _fresh(tmp_path / "run")
    spec = {"store": str(store), "stage": "chain", "kwargs": {"depth": 2}}
    release = tmp_path / "release-helper"
    env = {ENV_LOG: str(log), ENV_HOLD: f"chain1={tmp_path / 'never'}"}
    a = start(spec, {**env, ENV_FORK: f"chain1={release}"})
    helper = 0
    try:
        with reaped([a]) as procs:
            held = _wait_for_hold(log, a.pid)
            (helper,) = [x.pid for x in read_log(log) if x.event == "fork"]
            b = start(spec, {ENV_LOG: str(log)})
            procs.append(b)
            _wait_until_waiting(lock_file(store, held), b)
            a.kill()
            killed(a)
            assert alive(helper)
            try:
                out_b = finish(b, timeout=10)
            except AssertionError as e:
                raise AssertionError(
                    f"B stayed blocked on {held}'s lock after its holder died: the lock is "
                    f"still held through the descriptor A's forked helper {helper} inherited"
                ) from e
            assert alive(helper), "B finished only once the helper was gone"
    finally:
        release.touch()
        if helper:
            wait_for(lambda: not alive(helper), f"the helper {helper} to end")
    assert len(nx.drefrrefs(held, store=store)) == 1
    assert str(nx.drefrrefs(held, store=store)[0].dref) == held
    assert out_b["rrefs"] == [str(r) for r in nx.drefrrefs(out_b["result"], store=store)]
    verify_store(store)
