"""gc: what it keeps (exactly the closure of the roots, checked against a reachability
computed here from the store's files), dry runs, idempotence, and gc running in a loop
while another process realizes random DAGs.

Stores are filled by child processes (``CHILD`` below) so that this process holds no
temporary roots on them unless a test says so.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

import nixlet as nx
from campaign_stages import HANG_GUARD, child_env, reaped, verify_realization, wait_for
from strategies import store_view

#: A child that realizes random DAGs (``strategies.dag_stage``) round after round, each
#: with random derivations forced, and appends every RRef ``realize_many`` returned to a
#: file, one a line, then ``done``; it then waits for its stdin to close before it exits
#: (its results are its temporary roots while it lives).
CHILD = r"""
import json, random, sys
import attrs
import nixlet as nx
from strategies import Dag, Node, dag_stage

def pick(store, rrefs):
    # Builds two in each context, keeps one: the other is garbage once the realize returns.
    return None if len(rrefs) < 2 else [max(rrefs)]

@attrs.frozen
class PickNode(Node):
    def make_matcher(self):
        return pick if self.matcher == "pick" else super().make_matcher()

store, seed, rounds, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = open(sys.argv[5], "a")
nx.store_initialize(store)
rng = random.Random(seed)
for r in range(rounds):
    nodes = []
    for i in range(rng.randint(1, 6)):
        deps = tuple(sorted(rng.sample(range(i), min(i, rng.randint(0, 2)))))
        rand = rng.random() < 0.6
        matcher = rng.choice(["only", "some1", "some2", "pick"] if rand else ["only", "some1"])
        # The matcher is in the config: one DRef, one matcher, whatever the round.
        nodes.append(PickNode(i, deps, rand, matcher, {"dag": rng.randint(0, 3), "m": matcher}))
    closure = nx.instantiate(dag_stage, Dag(tuple(nodes)), log)
    many = {f"s{n.index}" for n in nodes if n.random and n.matcher != "only"}
    forced = [d.dref for d in closure.derivations if d.dref.name in many and rng.random() < 0.5]
    for rref in nx.realize_many(closure, forced):
        print(rref, file=out, flush=True)
print("done", file=out, flush=True)
sys.stdin.read()
"""


def _start(store: Path, seed: int, rounds: int, tmp: Path) -> subprocess.Popen[str]:
    """Start ``CHILD``; it writes its RRefs to ``tmp / f"out{seed}"``."""
    args = [str(store), str(seed), str(rounds), str(tmp / "log"), str(tmp / f"out{seed}")]
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _fill(store: nx.Store, seed: int, rounds: int, tmp: Path) -> list[nx.RRef]:
    """Realize random DAGs in a child that then exits; return what its realizes returned."""
    proc = _start(store.root, seed, rounds, tmp)
    _, err = proc.communicate("", timeout=HANG_GUARD)
    assert proc.returncode == 0, err
    lines = (tmp / f"out{seed}").read_text().split()
    assert lines[-1] == "done"
    return [nx.RRef.parse(line) for line in lines[:-1]]


def _on_disk(root: Path) -> tuple[set[str], set[str]]:
    """Every derivation and realization in the store, from its folders alone: ``dref:``
    and ``rref:`` strings."""
    drefs, rrefs = set(), set()
    for name in os.listdir(root):
        if len(name) > 33 and name[32] == "-" and (root / name).is_dir():
            drefs.add(f"dref:{name}")
            for sub in os.listdir(root / name):
                if (root / name / sub).is_dir():
                    rrefs.add(f"rref:{sub}-{name}")
    return drefs, rrefs


def _closure(root: Path, start: set[str]) -> set[str]:
    """The realizations reachable from ``start`` by reading each ``meta.json`` as plain
    JSON: an independent computation of what gc must keep."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        rref = todo.pop()
        if rref in seen:
            continue
        seen.add(rref)
        rhash, _, dkey = rref[len("rref:") :].partition("-")
        meta = json.loads((root / dkey / rhash / "meta.json").read_text())
        for deps in meta["context"].values():
            todo.extend(deps)
    return seen


def test_gc_keeps_exactly_the_closure_of_roots_and_keep(store: nx.Store, tmp_path: Path) -> None:
    """With user links on some realizations and ``keep`` naming others (an RRef and a DRef),
    gc leaves exactly their closure (computed independently from meta.json files), no
    derivation without realizations, and every kept realization verifies."""
    rng = random.Random(7)
    _fill(store, 1, 10, tmp_path)
    drefs, rrefs = _on_disk(store.root)
    assert len(rrefs) > 5
    linked = rng.sample(sorted(rrefs), 3)
    kept_rref = rng.choice(sorted(rrefs))
    kept_dref = rng.choice(sorted(drefs))
    for i, r in enumerate(linked):
        nx.linkrref(r, tmp_path / f"link{i}")
    dref_rrefs = {r for r in rrefs if r.endswith(kept_dref[len("dref:") :])}
    want = _closure(store.root, {*linked, kept_rref, *dref_rrefs})
    assert want != rrefs  # something to remove

    report = nx.gc(keep=[kept_rref, nx.DRef.parse(kept_dref)])

    after_drefs, after_rrefs = _on_disk(store.root)
    assert after_rrefs == want
    assert after_drefs == {"dref:" + r.split("-", 1)[1] for r in want}
    assert {str(r) for r in report.rrefs} == rrefs - want
    assert {str(d) for d in report.drefs} == drefs - after_drefs
    assert report.bytes > 0 and not report.dry_run
    for r in after_rrefs:
        verify_realization(store, nx.RRef.parse(r))


def test_dry_run_changes_nothing_and_a_second_gc_is_a_no_op(
    store: nx.Store, tmp_path: Path
) -> None:
    """A dry run reports what the real run then removes, byte for byte, and changes
    nothing; a gc after it finds nothing and changes nothing."""
    made = _fill(store, 2, 4, tmp_path)
    nx.linkrref(made[0], tmp_path / "keep")
    before = store_view(store)
    dry = nx.gc(dry_run=True)
    assert store_view(store) == before
    assert dry.rrefs and dry.dry_run
    real = nx.gc()
    assert (real.drefs, real.rrefs, real.bytes) == (dry.drefs, dry.rrefs, dry.bytes)
    after = store_view(store)
    again = nx.gc()
    assert store_view(store) == after
    assert (again.drefs, again.rrefs, again.bytes, again.staging) == ((), (), 0, ())


def test_an_rref_held_by_this_process_survives_gc(store: nx.Store, tmp_path: Path) -> None:
    """What realize returned in this process is a temporary root until it ends: gc, with
    no other root, keeps it and what it was built from; what no one holds goes."""
    _fill(store, 3, 3, tmp_path)  # garbage: its process ended
    log = str(tmp_path / "log")
    from strategies import Dag, Node, dag_stage

    dag = Dag((Node(0, (), True, "some1", {}), Node(1, (0,), True, "some1", {})))
    held = nx.realize(nx.instantiate(dag_stage, dag, log))
    report = nx.gc()
    assert report.rrefs  # the child's work went
    _, rrefs = _on_disk(store.root)
    assert rrefs == _closure(store.root, {str(held)})
    verify_realization(store, held)


def test_a_plan_drops_what_it_did_not_choose(store: nx.Store) -> None:
    """Realizations a matcher looked at but did not choose are temporary roots only while
    the realize runs: after it returns, gc in the same process removes them and keeps
    the result."""

    def pick_one_of_three(s: nx.Store, rrefs: list[nx.RRef]) -> list[nx.RRef] | None:
        return None if len(rrefs) < 3 else [max(rrefs)]

    def noise(b: nx.Build) -> None:
        (nx.build_outpath(b) / "n").write_bytes(os.urandom(8))

    def stage(m: nx.Manager) -> nx.DRef:
        return nx.mkdrv(m, {"name": "three"}, pick_one_of_three, nx.build_wrapper(noise))

    result = nx.realize(nx.instantiate(stage))
    assert len(nx.drefrrefs(result.dref)) == 3
    report = nx.gc()
    assert len(report.rrefs) == 2 and result not in report.rrefs
    assert nx.drefrrefs(result.dref) == [result]


def test_a_result_stays_held_after_a_later_realize_that_failed(
    store: nx.Store, tmp_path: Path
) -> None:
    """A realize's result stays a root until the process ends, even when a later realize
    chose it again and then failed (its plan's roots are dropped, not the earlier
    result's). The realization was built by another process, so this one only chose it."""
    from strategies import stage

    code = (
        "import sys, nixlet as nx\n"
        "from strategies import stage\n"
        "nx.store_initialize(sys.argv[1])\n"
        "nx.realize(nx.instantiate(stage, {'name': 'first', 'value': 1}))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(store.root)], check=True, env=child_env())
    fail = tmp_path / "fail"
    fail.touch()

    def second(m: nx.Manager) -> nx.DRef:
        a = stage(m, {"name": "first", "value": 1})
        return stage(m, {"name": "second", "a": a, "fail": str(fail)})

    held = nx.realize(nx.instantiate(stage, {"name": "first", "value": 1}))
    with pytest.raises(nx.BuildError):
        nx.realize(nx.instantiate(second))
    assert held not in nx.gc().rrefs
    verify_realization(store, held)


def test_keep_refuses_what_is_not_a_ref(store: nx.Store) -> None:
    """gc(keep=...) takes refs; anything else is a RefError, before anything is removed."""
    with pytest.raises(nx.RefError):
        nx.gc(keep=["not a ref"])


def test_gc_removes_dead_staging(store: nx.Store, tmp_path: Path) -> None:
    """The staging a killed process left is removed by gc and listed in its report."""
    code = (
        "import os, sys, nixlet as nx\n"
        "from nixlet.store import staging\n"
        "s = nx.store_initialize(sys.argv[1])\n"
        "(staging.new_staging(s, 'x') / 'junk').write_bytes(b'j' * 100)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(store.root)], check=True, env=child_env())
    assert nx.staging_garbage()
    report = nx.gc()
    assert len(report.staging) == 1 and nx.staging_garbage() == []


def test_gc_in_a_loop_while_another_process_realizes_loses_nothing(
    store: nx.Store, tmp_path: Path
) -> None:
    """gc runs again and again while a child realizes random DAGs with non-deterministic,
    forced builds; every RRef the child's realizes returned is still in the store and
    verifies (its inputs included) once the child is done, before it exits. Then, the
    child gone, its results are garbage like any other."""
    rounds = 12
    out = tmp_path / "out11"
    with reaped([_start(store.root, 11, rounds, tmp_path)]) as (proc,):
        collected = 0

        def child_done() -> bool:
            nonlocal collected
            collected += len(nx.gc().rrefs)
            if proc.poll() is not None:
                raise AssertionError(f"child died: {proc.communicate()[1]}")
            return out.exists() and out.read_text().endswith("done\n")

        wait_for(child_done, "the child's realizations")
        nx.gc()
        returned = [nx.RRef.parse(line) for line in out.read_text().split()[:-1]]
        assert returned
        for rref in returned:
            verify_realization(store, rref)
        _, err = proc.communicate("", timeout=HANG_GUARD)
        assert proc.returncode == 0, err
    assert collected > 0  # gc did remove things meanwhile: the race was exercised
    nx.gc()
    assert _on_disk(store.root) == (set(), set())
