"""Crash campaign: a realize of a multi-stage closure (several files, many small files, a few
MiB, and a stage on top of them) is SIGKILLed at random moments and at chosen points of the
publishing protocol. After every kill, each object visible in the store is complete and
read-only, the dead process's staging folders (and only those) are garbage and can be
removed, and a fresh process then completes the realize with the right content.

The stages are deterministic, so a clean realize in another store (the ``reference``)
names every object the crashed stores may hold: an object that is visible after a crash must
be one of those, and the recovered result must be the reference's RRef.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import nixlet as nx
from campaign_stages import (
    ENV_KILL,
    ENV_LOG,
    Holder,
    StoreState,
    builds_per_dref,
    killed,
    reaped,
    run,
    staging_folders,
    start,
    verify_store,
    wait_for,
)
from conftest import campaign_scale

pytestmark = pytest.mark.long


@attrs.frozen
class Reference:
    """A clean realize of the crash pipeline: what every crashed store must converge to."""

    result: nx.RRef
    state: StoreState
    elapsed: float  # seconds from the child's marker to realize's return


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """Three clean realizes of the crash pipeline in new stores: they agree, and give the
    objects and the duration a crashed store is compared with."""
    base = tmp_path_factory.mktemp("reference")
    outs = [run({"store": str(base / f"store{i}"), "stage": "crash"}) for i in range(3)]
    assert len({o["rrefs"][0] for o in outs}) == 1, "the crash pipeline is deterministic"
    state = verify_store(base / "store0")
    assert len(state.drefs) == len(state.rrefs) == 4
    assert verify_store(base / "store1") == state
    # The slowest of three clean runs: the window a random kill must fall in.
    return Reference(nx.RRef.parse(outs[0]["rrefs"][0]), state, max(o["elapsed"] for o in outs))


@pytest.fixture(scope="module")
def holder() -> Iterator[Holder]:
    """A live process that holds a staging folder in each store of this module."""
    h = Holder()
    yield h
    h.close()


def _new_store(base: Path, holder: Holder) -> tuple[Path, Path]:
    """A fresh store in which a live process (the holder) holds a staging folder."""
    store = base / "store"
    nx.store_initialize(store)
    return store, holder.hold(store)


def _check_after_crash(store: Path, dead: set[int], live: Path, reference: Reference) -> StoreState:
    """What must hold after processes ``dead`` died: every visible object is complete and
    one of the reference's; the staging garbage is exactly the dead processes' folders (not
    the live holder's), and removing it leaves the holder's folder alone."""
    state = verify_store(store)
    assert state.drefs <= reference.state.drefs
    assert state.rrefs <= reference.state.rrefs, "a crash left an object no clean run makes"
    garbage = set(nx.staging_garbage(store=store))
    assert garbage == set().union(*(staging_folders(store, pid) for pid in dead))
    assert live not in garbage
    assert nx.remove_staging_garbage(store=store) == len(garbage)
    for path in garbage:
        assert not path.exists() and not Path(f"{path}.lock").exists()
    assert nx.staging_garbage(store=store) == []
    assert (live / "live.txt").read_text() == "in use"
    return state


def _recover(store: Path, before: StoreState, reference: Reference, log: Path) -> None:
    """A fresh process completes the realize: it builds exactly the derivations the crash
    left unrealized and returns the reference's RRef."""
    out = run({"store": str(store), "stage": "crash"}, {ENV_LOG: str(log)})
    assert out["rrefs"] == [str(reference.result)]
    after = verify_store(store)
    assert after == reference.state
    missing = {str(d) for d in reference.state.drefs if not before.rrefs_of(d)}
    assert builds_per_dref(log) == dict.fromkeys(missing, 1)


def _kill_after(store: Path, delay: float) -> tuple[int, bool]:
    """Start a realize, SIGKILL it ``delay`` seconds after it starts instantiating; return
    its pid and whether it was still running when killed."""
    marker = store.parent / f"marker-{time.monotonic_ns()}"
    proc = start({"store": str(store), "stage": "crash", "marker": str(marker)})
    with reaped([proc]):
        wait_for(lambda: marker.exists() or proc.poll() is not None, "the child's marker")
        time.sleep(delay)
        alive = proc.poll() is None
        proc.kill()
        _, err = proc.communicate()
    assert proc.returncode in (0, -signal.SIGKILL), f"the child failed:\n{err}"
    return proc.pid, alive


# Where a realize of the crash pipeline in a fresh store calls the wrapped function, and how
# many derivations and realizations are then published. Realize goes level by level: level 0
# builds files, many and big (``_seal`` #1-3 as each is staged), then publishes them as a
# batch: one ``durability.make_durable`` (#1), then one ``_rename_new`` each (#1-3: each
# derivation's folder, its record and first realization inside, appears by one rename), then
# a chmod of each realization folder; level 1 does the same for summary (``_seal`` #4,
# ``durability.make_durable`` #2, ``_rename_new`` #4); last, ``durability.flush`` #1 makes
# the names durable. Instantiate writes nothing.
KILL_POINTS = {
    "mid-write-several-files": ("build:files", 0, 0),
    "mid-write-many-files": ("build:many", 0, 0),
    "mid-write-big-file": ("build:big", 0, 0),
    "batch-sealed-not-durable": ("sealing._seal:after:3", 0, 0),
    "batch-durable-not-renamed": ("durability.make_durable:after:1", 0, 0),
    "first-of-batch-renamed": ("publish._rename_new:after:1", 1, 1),
    "two-of-batch-renamed": ("publish._rename_new:after:2", 2, 2),
    "mid-write-summary": ("build:summary", 3, 3),
    "sealed-not-durable": ("sealing._seal:after:4", 3, 3),
    "just-before-rename": ("publish._rename_new:before:4", 3, 3),
    "just-after-rename": ("publish._rename_new:after:4", 4, 4),
    "published-not-flushed": ("durability.flush:before:1", 4, 4),
}


@pytest.mark.parametrize("point", list(KILL_POINTS), ids=list(KILL_POINTS))
def test_kill_at_chosen_point(
    point: str, reference: Reference, holder: Holder, tmp_path: Path
) -> None:
    """A child SIGKILLs itself at a chosen point (mid-write in a build, or just before or
    after a step of publishing): exactly the objects published before that point are
    visible, complete and read-only; its staging folder is garbage and goes; a fresh
    realize completes with the reference result."""
    spec, n_drefs, n_rrefs = KILL_POINTS[point]
    store, live = _new_store(tmp_path, holder)
    proc = start({"store": str(store), "stage": "crash"}, {ENV_KILL: spec})
    with reaped([proc]):
        killed(proc)
    garbage = staging_folders(store, proc.pid)
    assert len(garbage) == 1, "the child died after it began staging"
    state = _check_after_crash(store, {proc.pid}, live, reference)
    assert (len(state.drefs), len(state.rrefs)) == (n_drefs, n_rrefs)
    _recover(store, state, reference, tmp_path / "log")


@settings(
    max_examples=campaign_scale(6, 300),
    deadline=None,
    database=None,
    # The autouse fixture only resets process-wide defaults; each example makes its own store.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(fraction=st.floats(min_value=0.0, max_value=1.2))
def test_kill_at_random_moment(
    fraction: float,
    reference: Reference,
    holder: Holder,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A realize SIGKILLed at a random moment (a fraction of a clean realize's duration
    after it starts) leaves a consistent store that a fresh process completes."""
    base = tmp_path_factory.mktemp("random-kill")
    store, live = _new_store(base, holder)
    pid, alive = _kill_after(store, fraction * reference.elapsed)
    state = _check_after_crash(store, {pid}, live, reference)
    event(f"killed while running: {alive}; realizations left: {len(state.rrefs)}")
    _recover(store, state, reference, base / "log")


def test_repeated_kills_on_one_store(reference: Reference, holder: Holder, tmp_path: Path) -> None:
    """Crashes compound: several realizes of one store, each killed at a random moment
    without any cleaning in between, leave one garbage folder per dead process (and
    nothing else wrong); after removing it a fresh realize completes."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    store, live = _new_store(tmp_path, holder)
    dead: set[int] = set()
    for _ in range(campaign_scale(4, 80)):
        pid, _alive = _kill_after(store, rng.uniform(0, 1.25) * reference.elapsed)
        dead.add(pid)
        state = verify_store(store)
        assert state.rrefs <= reference.state.rrefs, f"seed {seed}"
    state = _check_after_crash(store, dead, live, reference)
    _recover(store, state, reference, tmp_path / "log")


def test_kill_while_creating_the_store(
    reference: Reference, holder: Holder, tmp_path: Path
) -> None:
    """A process killed inside ``store_initialize``, just before the format record is
    renamed into place, leaves a store without a format record and its staged copy in
    ``.tmp``. The next process completes the store and the realize, and once the dead
    process is gone ``remove_staging_garbage`` clears everything it left: ``.tmp`` then
    holds the live holder's staging alone."""
    store = tmp_path / "store"
    proc = start({"store": str(store), "stage": "crash"}, {ENV_KILL: "os.replace:before:1"})
    with reaped([proc]):
        killed(proc)
    assert not (store / "format").exists(), "the kill came before the format was published"
    assert sorted(p.name for p in store.iterdir()) == [".locks", ".tmp"]
    _recover(store, StoreState(frozenset(), frozenset()), reference, tmp_path / "log")
    live = holder.hold(store)
    nx.remove_staging_garbage(store=store)
    left = set((store / ".tmp").iterdir())
    assert left == {live, Path(f"{live}.lock")}, f"left in .tmp: {sorted(left)}"
    assert verify_store(store) == reference.state
