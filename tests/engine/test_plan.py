"""``plan`` and ``Plan``: the deciding part of the plan / build one step / publish protocol.

Each test drives a plan by hand, as a parallel executor or a REPL would: no level barrier
between a derivation and its dependents, a paused driver that blocks only the derivation it
holds (checked against a real second process), failures that leave independent work
publishable, what ``record`` accepts, when locks are released (checked from another process,
which tries to take the lock without waiting), ``force_rebuild`` and the arguments ``plan``
refuses. Builds are counted in a log file outside the store (``protocol_stages``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import pytest

import nixlet as nx
from campaign_stages import (
    HANG_GUARD,
    finish,
    lock_file,
    lock_state,
    procfs_locks_usable,
    reaped,
    wait_for,
)
from nixlet.store import locks
from protocol_stages import (
    branches,
    build_pickled,
    builds,
    drive,
    finished,
    lock_is_free_elsewhere,
    node,
    overlap,
    start_child,
    while_alive,
)
from strategies import store_view


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """The build log, outside the store."""
    return tmp_path / "log"


def _by_name(steps: list[nx.BuildStep]) -> dict[str, nx.BuildStep]:
    return {s.dref.name: s for s in steps}


def _build(p: nx.Plan, step: nx.BuildStep) -> list[nx.RRef]:
    """Build one step here, publish it and record it; return what was published."""
    rrefs = nx.publish(nx.build_step(step))
    p.record(step, rrefs)
    return rrefs


def _dref(closure: nx.Closure, name: str) -> nx.DRef:
    (found,) = [d.dref for d in closure.derivations if d.dref.name == name]
    return found


# ---------------------------------------------------------------- the documented loop


def test_documented_loop_gives_what_realize_gives(store: nx.Store, log: Path) -> None:
    """The loop of the documentation realizes a closure (each derivation built once), and
    realize afterwards returns the same RRef without building anything."""
    c = nx.instantiate(branches, str(log))
    (rref,) = drive(c)
    assert builds(log) == {"paused": 1, "left0": 1, "left1": 1, "top": 1}
    assert nx.realize(c) == rref
    assert sum(builds(log).values()) == 4
    assert nx.drefrrefs(c.result) == [rref]


# ---------------------------------------------------------------- no level barrier


def _diamond(m: nx.Manager, log: str, hold: str | None = None) -> nx.DRef:
    """``a -> c``, and ``b`` independent of both (slow when ``hold`` is given), under
    ``top``."""
    a = node(m, "a", log=log, value=1)
    b = node(m, "b", log=log, value=2, hold=hold)
    return node(m, "top", node(m, "c", a, log=log, value=3), b, log=log)


def test_dependent_is_ready_while_an_independent_step_is_out(store: nx.Store, log: Path) -> None:
    """Once ``a`` is recorded, ``ready`` hands out ``c`` although ``b``'s step (same
    level as ``a``) is still out; ``top`` waits for ``b`` only."""
    c = nx.instantiate(_diamond, str(log))
    with nx.plan(c) as p:
        first = _by_name(p.ready())
        assert set(first) == {"a", "b"}
        _build(p, first["a"])
        second = _by_name(p.ready())
        assert set(second) == {"c"}  # b is still out, not recorded
        _build(p, second["c"])
        assert p.ready() == []  # top needs b
        assert not p.done
        _build(p, first["b"])
        (top,) = p.ready()
        assert top.dref == c.result
        _build(p, top)
        assert p.done
        assert nx.catref(p.result()[0], "value.txt") == "null"


def test_parallel_driver_builds_dependents_during_a_slow_build(
    store: nx.Store, log: Path, tmp_path: Path
) -> None:
    """A driver keeping two spawn workers busy builds and publishes ``a`` and then ``c``
    while ``b`` is still being built in the other worker: ``c``'s build finished before
    ``b``'s did (the build log), because ``c`` was handed out without waiting for ``b``."""
    release = tmp_path / "release-b"
    c = nx.instantiate(_diamond, str(log), str(release))
    order: list[str] = []
    ctx = multiprocessing.get_context("spawn")
    with nx.plan(c) as p, ProcessPoolExecutor(2, mp_context=ctx) as pool:
        running: dict[Future[Any], nx.BuildStep] = {}
        while not p.done:
            for step in p.ready():
                running[pool.submit(build_pickled, pickle.dumps(step))] = step
            done, _ = wait(running, timeout=HANG_GUARD, return_when=FIRST_COMPLETED)
            assert done, "no build finished before the hang guard"
            for future in done:
                step = running.pop(future)
                staged, _facts = future.result()
                p.record(step, nx.publish(staged))
                order.append(step.dref.name)
                if step.dref.name == "c":
                    assert "b" not in finished(log), "c waited for b"
                    release.touch()  # only now may b finish
        result = p.result()
    assert order == ["a", "c", "b", "top"]
    assert builds(log) == {"a": 1, "b": 1, "c": 1, "top": 1}
    assert nx.realize(c) == result[0]


# ---------------------------------------------------------------- a paused driver


def test_ready_one_step_holds_only_that_lock(store: nx.Store, log: Path) -> None:
    """``ready(max_steps=1)`` hands out one of two independent roots and holds that
    derivation's lock alone: another process can take the other's lock at once."""
    c = nx.instantiate(branches, str(log))
    with nx.plan(c) as p:
        (step,) = p.ready(max_steps=1)
        assert step.dref.name == "paused"
        assert not lock_is_free_elsewhere(store, step.dref)
        assert lock_is_free_elsewhere(store, _dref(c, "left0"))
        (nxt,) = p.ready(max_steps=1)
        assert nxt.dref.name == "left0"
        assert not lock_is_free_elsewhere(store, nxt.dref)


@pytest.mark.parametrize("driver", ["plan", "realize"])
def test_paused_driver_blocks_only_its_derivation(
    store: nx.Store, log: Path, tmp_path: Path, driver: str
) -> None:
    """A REPL-like driver holds one step (``paused``) and builds nothing. A second process
    realizing the same closure (by the protocol, or by ``realize``) builds the other
    branch completely (``left0``, ``left1``) and then waits for ``paused`` alone. Once the
    driver builds and records ``paused``, both finish with the same RRef, and every
    derivation was built exactly once."""
    c = nx.instantiate(branches, str(log))
    spec = {"store": str(store.root), "stage": "branches", "kwargs": {"log": str(log)}}
    with nx.plan(c) as p:
        (paused,) = p.ready(max_steps=1)
        assert paused.dref.name == "paused"
        child = start_child({**spec, "driver": driver})
        with reaped([child]):
            left_done = while_alive([child], lambda: "left1" in finished(log))
            wait_for(left_done, "the other process to build the left branch")
            if procfs_locks_usable():
                lock = lock_file(store.root, paused.dref)
                waiting = while_alive([child], lambda: lock_state(lock) == (1, 1))
                wait_for(waiting, "the child to wait for paused")
            assert child.poll() is None  # blocked on the paused derivation, still running
            assert builds(log) == {"left0": 1, "left1": 1}
            _build(p, paused)
            while not p.done:
                for step in p.ready():
                    _build(p, step)
            mine = p.result()
            theirs = finish(child)
    assert [str(r) for r in mine] == theirs["rrefs"]
    assert builds(log) == {"paused": 1, "left0": 1, "left1": 1, "top": 1}


def test_two_plans_in_two_processes_build_shared_work_once(
    store: nx.Store, log: Path, tmp_path: Path
) -> None:
    """Two processes drive plans of two overlapping closures (``shared`` under
    ``match_some(1)``, a different side stage on top in each). The first to lock
    ``shared`` builds it, slowly; the other waits for it and then uses it: ``shared`` is
    built once, both sides were built from the same realization of it, and the store
    holds one realization of each derivation."""
    release = tmp_path / "release"
    kwargs = {"log": str(log), "hold": str(release)}
    procs = [
        start_child({"store": str(store.root), "stage": "overlap", "kwargs": {**kwargs, "side": s}})
        for s in ("a", "b")
    ]
    with reaped(procs):
        building = while_alive(procs, lambda: builds(log)["shared"] == 1)
        wait_for(building, "one process to build shared")
        shared = nx.instantiate(overlap, str(log), "a", str(release)).derivations[0].dref
        assert shared.name == "shared"
        if procfs_locks_usable():
            lock = lock_file(store.root, shared)
            waiting = while_alive(procs, lambda: lock_state(lock) == (1, 1))
            wait_for(waiting, "the other process to wait for shared")
        release.touch()
        results = [finish(proc) for proc in procs]
    assert builds(log) == {"shared": 1, "side-a": 1, "side-b": 1}
    (shared_rref,) = nx.drefrrefs(shared)
    for result in results:
        (side,) = (nx.RRef.parse(r) for r in result["rrefs"])
        assert nx.rrefctx(side) == {shared: (shared_rref,)}
    assert len(nx.allrrefs()) == 3


# ---------------------------------------------------------------- failures


def _three(m: nx.Manager, log: str, failing: tuple[str, ...]) -> nx.DRef:
    """Three independent stages (those named in ``failing`` fail), ``after`` on top of
    ``bad``, and ``top`` on top of all."""
    ok1, bad, ok2 = (node(m, n, log=log, fail=n in failing, value=n) for n in ("ok1", "bad", "ok2"))
    after = node(m, "after", bad, log=log)
    return node(m, "top", ok1, ok2, after, log=log)


def _drive_failing(p: nx.Plan) -> dict[str, nx.BuildError]:
    """Drive ``p`` to its end, failing the steps whose build raises; return their errors."""
    errors: dict[str, nx.BuildError] = {}
    while not p.done:
        for step in p.ready():
            try:
                staged = nx.build_step(step)
            except nx.BuildError as e:
                errors[step.dref.name] = e
                p.fail(step, e)
                continue
            p.record(step, nx.publish(staged))
    return errors


def test_failure_leaves_the_other_steps_publishable(store: nx.Store, log: Path) -> None:
    """Of three independent steps, the middle one's build raises: the plan is told with
    ``fail``, which releases its lock at once (another process takes it); the other two
    publish and are chosen; nothing depending on the failed one is handed out; the plan is
    then done, and ``result`` raises that very BuildError."""
    c = nx.instantiate(_three, str(log), ("bad",))
    with nx.plan(c) as p:
        steps = p.ready()
        assert [s.dref.name for s in steps] == ["ok1", "bad", "ok2"]
        by_name = _by_name(steps)
        bad = by_name["bad"]
        assert not lock_is_free_elsewhere(store, bad.dref)
        with pytest.raises(nx.BuildError) as e:
            nx.build_step(bad)
        p.fail(bad, e.value)
        assert lock_is_free_elsewhere(store, bad.dref)
        for name in ("ok1", "ok2"):
            (rref,) = _build(p, by_name[name])
            assert p.chosen(by_name[name].dref) == (rref,)
            assert nx.drefrrefs(rref.dref) == [rref]
        assert p.ready() == []
        assert p.done
        assert p.chosen(_dref(c, "after")) is None
        with pytest.raises(nx.BuildError) as raised:
            p.result()
        assert raised.value is e.value
    assert builds(log) == {"ok1": 1, "bad": 1, "ok2": 1}
    assert nx.drefrrefs(bad.dref) == []


def test_two_failures_give_one_build_error_listing_both(store: nx.Store, log: Path) -> None:
    """With two failed steps, ``result`` raises one BuildError naming both derivations;
    the third step is still published."""
    c = nx.instantiate(_three, str(log), ("ok1", "bad"))
    with nx.plan(c) as p:
        errors = _drive_failing(p)
        assert set(errors) == {"ok1", "bad"}
        with pytest.raises(nx.BuildError) as raised:
            p.result()
    message = str(raised.value)
    assert "2 builds failed" in message
    for error in errors.values():
        assert str(error.dref) in message
    assert len(nx.drefrrefs(_dref(c, "ok2"))) == 1
    assert builds(log) == {"ok1": 1, "bad": 1, "ok2": 1}


def test_a_failure_belongs_to_its_plan_only(store: nx.Store, log: Path) -> None:
    """A new plan of the same closure hands the failed step out again, and only it (the
    others are chosen from the store)."""
    c = nx.instantiate(_three, str(log), ("bad",))
    with nx.plan(c) as p:
        _drive_failing(p)
    with nx.plan(c) as p:
        assert [s.dref.name for s in p.ready()] == ["bad"]


# ---------------------------------------------------------------- record


def _random(m: nx.Manager, log: str, matcher: nx.Matcher, random: bool = True) -> nx.DRef:
    return node(m, "one", log=log, random=random, matcher=matcher)


def test_matcher_wanting_more_gets_the_step_back(store: nx.Store, log: Path) -> None:
    """Under ``match_some(2)``, a recorded first build gives the same step back from
    ``ready``, its lock still held; the second record satisfies the matcher, which then
    releases the lock."""
    c = nx.instantiate(_random, str(log), nx.match_some(2))
    with nx.plan(c) as p:
        (step,) = p.ready()
        _build(p, step)
        assert not p.done
        assert p.chosen(step.dref) is None
        assert not lock_is_free_elsewhere(store, step.dref)
        (again,) = p.ready()
        assert again == step
        _build(p, again)
        assert p.done
        assert len(p.result()) == 2
        assert lock_is_free_elsewhere(store, step.dref)
    assert builds(log) == {"one": 2}


def test_deterministic_build_under_match_some_two_is_a_matcher_error(
    store: nx.Store, log: Path
) -> None:
    """A deterministic build recorded again under ``match_some(2)`` adds nothing new:
    ``record`` raises MatcherError naming the matcher, the lock is released, the plan is
    done, and ``result`` raises the same error."""
    c = nx.instantiate(_random, str(log), nx.match_some(2), False)
    with nx.plan(c) as p:
        (step,) = p.ready()
        first = _build(p, step)
        (again,) = p.ready()
        with pytest.raises(nx.MatcherError) as e:
            _build(p, again)
        assert e.value.matcher == "match_some(n=2)" and e.value.dref == step.dref
        assert "added nothing new" in str(e.value)
        assert lock_is_free_elsewhere(store, step.dref)
        assert p.done
        with pytest.raises(nx.MatcherError) as raised:
            p.result()
        assert raised.value is e.value
    assert nx.drefrrefs(step.dref) == first


class _NeverSatisfied:
    """A matcher that asks for more whatever it is given."""

    def __call__(self, store: nx.Store, rrefs: list[nx.RRef], /) -> list[nx.RRef] | None:
        return None


def test_max_builds_stops_a_matcher_that_never_gets_what_it_wants(
    store: nx.Store, log: Path
) -> None:
    """With ``max_builds=3``, the third build that leaves the matcher unsatisfied makes
    ``record`` raise MatcherError naming the bound; exactly three builds were made."""
    c = nx.instantiate(_random, str(log), _NeverSatisfied())
    with nx.plan(c, max_builds=3) as p:
        with pytest.raises(nx.MatcherError, match="max_builds=3") as e:
            while not p.done:
                for step in p.ready():
                    _build(p, step)
        assert e.value.dref == c.result
        assert p.done
    assert builds(log) == {"one": 3}
    assert len(nx.drefrrefs(c.result)) == 3


def test_record_of_a_step_not_out_is_a_usage_error(store: nx.Store, log: Path) -> None:
    """``record`` and ``fail`` refuse a step this plan did not hand out (another plan's,
    one already recorded, one made by hand) with UsageError."""
    c = nx.instantiate(_diamond, str(log))
    with nx.plan(c) as p:
        steps = _by_name(p.ready())
        a = steps["a"]
        rrefs = _build(p, a)
        with pytest.raises(nx.UsageError):
            p.record(a, rrefs)  # recorded already
        with pytest.raises(nx.UsageError):
            p.fail(a, nx.BuildError("x", dref=a.dref, cause=None, staging=None))
        top = c.derivation(c.result)
        by_hand = nx.BuildStep(store, top.dref, top.config, top.code, {}, top.realizer)
        with pytest.raises(nx.UsageError):
            p.record(by_hand, [])
        _build(p, steps["b"])
        assert [s.dref.name for s in p.ready()] == ["c"]


def test_record_refuses_rrefs_that_publish_did_not_return_for_the_step(
    store: nx.Store, log: Path
) -> None:
    """``record`` refuses another derivation's RRef and an RRef that was staged but never
    published (UsageError), and a malformed one (RefError); the step stays out each time,
    its lock held, and the right RRefs are then accepted."""
    stranger = nx.realize(nx.instantiate(lambda m: node(m, "stranger", log=str(log))))
    c = nx.instantiate(_random, str(log), nx.match_only(), False)
    with nx.plan(c) as p:
        (step,) = p.ready()
        staged = nx.build_step(step)
        for bad, error in (([stranger], nx.UsageError), (staged.rrefs, nx.UsageError)):
            with pytest.raises(error):
                p.record(step, bad)
        with pytest.raises(nx.RefError):
            p.record(step, ["rref:not-a-ref"])
        assert not lock_is_free_elsewhere(store, step.dref)
        assert not p.done
        rrefs = nx.publish(staged)
        p.record(step, [str(r) for r in rrefs])  # their text is accepted too
        assert p.result() == rrefs


def test_closed_plan_refuses_calls_and_releases_its_locks(store: nx.Store, log: Path) -> None:
    """Closing a plan releases the lock of every step still out (another process takes
    each at once); the closed plan refuses ``ready``, ``record`` and ``fail``."""
    c = nx.instantiate(_diamond, str(log))
    p = nx.plan(c)
    with p:
        steps = p.ready()
        assert all(not lock_is_free_elsewhere(store, s.dref) for s in steps)
    assert all(lock_is_free_elsewhere(store, s.dref) for s in steps)
    staged = nx.build_step(steps[0])
    rrefs = nx.publish(staged)  # a step still out at close can be published, not recorded
    with pytest.raises(nx.UsageError, match="closed"):
        p.ready()
    with pytest.raises(nx.UsageError, match="closed"):
        p.record(steps[0], rrefs)
    with pytest.raises(nx.UsageError, match="closed"):
        p.fail(steps[1], nx.BuildError("x", dref=None, cause=None, staging=None))
    assert nx.drefrrefs(steps[0].dref) == rrefs


def test_ready_refuses_a_max_steps_that_would_hand_out_nothing(store: nx.Store, log: Path) -> None:
    """``ready(max_steps=0)`` (or a negative or non-int bound) is a UsageError, not an
    empty list that a driver would loop on for ever."""
    c = nx.instantiate(_diamond, str(log))
    with nx.plan(c) as p:
        for bad in (0, -1, 1.5, "2"):
            with pytest.raises(nx.UsageError):
                p.ready(max_steps=bad)  # type: ignore[arg-type]
        assert len(p.ready(max_steps=None)) == 2


# ---------------------------------------------------------------- matchers that raise


class _RaisesWhenGiven:
    """A matcher that raises ``error`` once it is given a realization."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __call__(self, store: nx.Store, rrefs: list[nx.RRef], /) -> list[nx.RRef] | None:
        if rrefs:
            raise self.error
        return None


def test_a_matcher_raising_in_ready_keeps_the_steps_found_before(
    store: nx.Store, log: Path
) -> None:
    """When a matcher raises inside ``ready`` after other steps were found (and locked) in
    the same call, those steps come back from the next ``ready``: a driver that goes on
    after the error finishes the independent work, and is then done."""
    broken = nx.MatcherError("broken matcher", matcher="broken", dref=None)

    def pipeline(m: nx.Manager) -> nx.DRef:
        good = node(m, "good", log=str(log))
        bad = node(m, "bad", log=str(log), matcher=_RaisesWhenGiven(broken))
        return node(m, "top", good, bad, log=str(log))

    c = nx.instantiate(pipeline)
    nx.publish(nx.build_step(_step_of(c, "bad")))  # the store holds one: its matcher raises
    with nx.plan(c) as p:
        with pytest.raises(nx.MatcherError):
            p.ready()
        (good,) = p.ready()
        assert good.dref.name == "good"
        _build(p, good)
        assert p.done
        with pytest.raises(nx.MatcherError):
            p.result()
    assert lock_is_free_elsewhere(store, good.dref)


def test_a_matcher_raising_on_a_retried_lock_keeps_the_other_busy_ones(
    store: nx.Store, log: Path
) -> None:
    """Two derivations whose locks another holder has are set aside by ``ready``; when
    both are released and the first one's matcher then raises, the second is not
    forgotten: the next ``ready`` hands it out."""
    broken = nx.MatcherError("broken matcher", matcher="broken", dref=None)

    def pipeline(m: nx.Manager) -> nx.DRef:
        x = node(m, "x", log=str(log), matcher=_RaisesWhenGiven(broken))
        y, z = node(m, "y", log=str(log)), node(m, "z", log=str(log))
        return node(m, "top", x, y, z, log=str(log))

    c = nx.instantiate(pipeline)
    with contextlib.ExitStack() as other_holder, nx.plan(c) as p:
        for name in ("x", "y"):
            lock = locks.derivation_lock(store, _dref(c, name), wait=False)
            assert other_holder.enter_context(lock)
        (z,) = p.ready()  # x and y are busy
        assert z.dref.name == "z"
        nx.publish(nx.build_step(_step_of(c, "x")))  # the other holder built x
        other_holder.close()
        with pytest.raises(nx.MatcherError):
            p.ready()
        (y,) = p.ready()
        assert y.dref.name == "y"
        _build(p, y)
        _build(p, z)
        assert p.done
        assert p.chosen(y.dref) is not None
    assert builds(log) == {"x": 1, "y": 1, "z": 1}


def _step_of(c: nx.Closure, name: str) -> nx.BuildStep:
    """The step of a root derivation, made by hand (no plan, no lock)."""
    drv = c.derivation(_dref(c, name))
    return nx.BuildStep(c.store, drv.dref, drv.config, drv.code, {}, drv.realizer)


def test_a_matcher_raising_anything_fails_its_derivation(store: nx.Store, log: Path) -> None:
    """A user's matcher raising a plain exception in ``record`` gets it through as it is;
    the lock is released and the plan is done, with ``result`` raising that exception
    (not "the plan is not done")."""
    c = nx.instantiate(_random, str(log), _RaisesWhenGiven(KeyError("no score")))
    with nx.plan(c) as p:
        (step,) = p.ready()
        with pytest.raises(KeyError):
            _build(p, step)
        assert lock_is_free_elsewhere(store, step.dref)
        assert p.done
        with pytest.raises(KeyError):
            p.result()


# ---------------------------------------------------------------- force_rebuild and arguments


@pytest.mark.parametrize(
    "form", ["dref", "text", "list", "true"], ids=["a DRef", "its text", "a list", "True"]
)
def test_force_rebuild_forms(store: nx.Store, log: Path, form: str) -> None:
    """``force_rebuild`` takes the target as one DRef, its text, a list, or True: the
    plan hands the realized target out again (and nothing else)."""
    c = nx.instantiate(_random, str(log), nx.match_only(), False)
    nx.realize(c)
    forms: dict[str, Any] = {
        "dref": c.result,
        "text": str(c.result),
        "list": [c.result],
        "true": True,
    }
    with nx.plan(c, force_rebuild=forms[form]) as p:
        (step,) = p.ready()
        assert step.dref == c.result
        _build(p, step)
    assert builds(log) == {"one": 2}


@pytest.mark.parametrize("nothing", [(), [], False, None])
def test_force_rebuild_of_nothing_builds_nothing(store: nx.Store, log: Path, nothing: Any) -> None:
    """An empty ``force_rebuild`` (or False, or None) forces nothing: a realized closure
    is done at once."""
    c = nx.instantiate(_random, str(log), nx.match_only(), False)
    rref = nx.realize(c)
    with nx.plan(c, force_rebuild=nothing) as p:
        assert p.ready() == []
        assert p.done
        assert p.result() == [rref]


def test_force_rebuild_of_a_dependency_as_text(store: nx.Store, log: Path) -> None:
    """A dependency forced by its text alone (not a list) is handed out again; its
    deterministic rebuild changes nothing, so its dependent is not rebuilt."""
    c = nx.instantiate(_diamond, str(log))
    first = nx.realize(c)
    a = _dref(c, "a")
    with nx.plan(c, force_rebuild=str(a)) as p:
        (step,) = p.ready()
        assert step.dref == a
        _build(p, step)
        assert p.ready() == []
        assert p.done
        assert p.result() == [first]
    assert builds(log) == {"a": 2, "b": 1, "c": 1, "top": 1}


@pytest.mark.parametrize("call", [nx.realize, nx.realize_many, nx.plan])
def test_a_string_instead_of_a_closure_is_a_usage_error(
    store: nx.Store, log: Path, call: Any
) -> None:
    """``realize("dref:...")`` (and ``realize_many``, ``plan``, and a DRef object) raise
    UsageError pointing at instantiate; nothing is built."""
    c = nx.instantiate(_random, str(log), nx.match_only(), False)
    for wrong in (str(c.result), c.result):
        with pytest.raises(nx.UsageError, match="instantiate"):
            call(wrong)
    assert builds(log) == {}


@pytest.mark.parametrize("bad", [0, -1, 2.0, "10"])
def test_bad_max_builds_is_a_usage_error(store: nx.Store, log: Path, bad: Any) -> None:
    """``max_builds`` must be a positive int (or None)."""
    c = nx.instantiate(_random, str(log), nx.match_only(), False)
    with pytest.raises(nx.UsageError):
        nx.plan(c, max_builds=bad)


def test_force_rebuild_of_a_stranger_is_a_closure_error(store: nx.Store, log: Path) -> None:
    """A forced DRef outside the closure is a ClosureError, whichever form it comes in."""
    c = nx.instantiate(_random, str(log), nx.match_only(), False)
    stranger = nx.instantiate(lambda m: node(m, "stranger")).result
    for form in (stranger, str(stranger), [stranger]):
        with pytest.raises(nx.ClosureError):
            nx.plan(c, force_rebuild=form)


# ---------------------------------------------------------------- another store


def _deterministic(m: nx.Manager, log: str) -> nx.DRef:
    return node(m, "det-top", node(m, "det-base", log=log, value=7), log=log, value=8)


def test_realize_into_a_second_store_on_a_first_build(
    store: nx.Store, log: Path, tmp_path: Path
) -> None:
    """A closure instantiated against the default store is realized into a second, empty
    store first (``store=other``): the derivation records come with the steps, so the
    second store is complete on its own. Realized then in the first store and in a
    third, the deterministic closure has the same RRef in all three."""
    other = nx.store_initialize(tmp_path / "other")
    nx.store_initialize(store.root)  # the first store is the default again
    c = nx.instantiate(_deterministic, str(log))
    assert c.store == store
    there = nx.realize(c, store=other)
    assert nx.allrrefs(store=store) == []  # nothing went to the closure's own store
    assert len(nx.allrrefs(store=other)) == 2
    assert nx.drefcfg(c.result, store=other) == c.derivation(c.result).config
    here = nx.realize(c)
    assert here == there
    third = nx.store_initialize(tmp_path / "third")  # after the records of two stores
    assert nx.realize(c, store=third) == here
    assert builds(log) == {"det-base": 3, "det-top": 3}
    # The same names and modes in all (meta.json's build times differ).
    assert _shape(store) == _shape(other) == _shape(third)


def _shape(store: nx.Store) -> dict[str, tuple[Any, ...]]:
    """What a store shows its readers, without file contents and times."""
    return {path: entry[:2] for path, entry in store_view(store).items()}
