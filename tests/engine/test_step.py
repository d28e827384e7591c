"""``build_step``: a pure function of a ``BuildStep``, run in any process sharing the store.

The steps cross into workers started by ``spawn`` and ``forkserver``, which share nothing
with the planning process: the stage's module is one the test writes into its temporary
folder, never imported by the worker before the step arrives, and the derivations were
never realized before (first builds, so no record of them is in the store to read). The
``Staged`` a worker returns is published by the planner, or the worker publishes itself.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import sys
import textwrap
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import nixlet as nx
from campaign_stages import HANG_GUARD
from protocol_stages import build_and_publish, build_or_error, build_pickled, node
from strategies import store_view

START_METHODS = ["spawn", "forkserver"]

#: The stage module the planning process writes and imports; workers import it afresh.
STAGE_SOURCE = textwrap.dedent(
    '''
    """A two-stage pipeline whose build functions live outside the test suite."""

    import json

    import nixlet as nx


    def fresh(b: nx.Build) -> None:
        """Write the config's value and the text of every input."""
        inputs = {
            str(dep): nx.build_path(b, [dep, "out.txt"]).read_text()
            for dep in sorted(nx.build_context(b))
        }
        text = json.dumps({"value": nx.build_cattrs(b).value, "inputs": inputs})
        (nx.build_outpath(b) / "out.txt").write_text(text)


    def stage(m: nx.Manager, value: int) -> nx.DRef:
        """``up`` and ``down`` (on top of ``up``), both deterministic."""
        realizer = nx.build_wrapper(fresh)
        up = nx.mkdrv(m, {"name": "up", "value": value}, nx.match_only(), realizer)
        return nx.mkdrv(m, {"name": "down", "value": value, "src": up}, nx.match_only(), realizer)
    '''
)


@pytest.fixture
def stage_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A stage module of a fresh name in ``tmp_path``, importable here and by workers
    (spawn and forkserver children get this process's ``sys.path``)."""
    folder = tmp_path / "modules"
    folder.mkdir()
    name = f"fresh_stage_{uuid.uuid4().hex}"
    (folder / f"{name}.py").write_text(STAGE_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    module = __import__(name)
    yield module
    sys.modules.pop(name, None)


def _pool(method: str) -> ProcessPoolExecutor:
    """One worker at a time, a new one for every step: no step sees what another left."""
    context = multiprocessing.get_context(method)
    return ProcessPoolExecutor(1, mp_context=context, max_tasks_per_child=1)


def _assert_fresh(facts: dict[str, Any], module: str) -> None:
    """The worker held nothing of the planning process when the step arrived."""
    assert facts["pid"] != os.getpid()
    assert not facts["module_loaded"], f"{module} was loaded before the step came"
    assert not facts["default_store"]
    assert facts["configs_cached"] == 0
    assert facts["locks_held"] == 0


@pytest.mark.parametrize("method", START_METHODS)
def test_worker_builds_a_first_build_that_the_planner_publishes(
    store: nx.Store, stage_module: ModuleType, method: str
) -> None:
    """Each step, pickled, is built by ``build_step`` in a fresh worker (no stage module,
    no default store, no cached config, no locks); the ``Staged`` comes back pickled and
    the planner publishes and records it. The result reads as the build wrote it, and
    ``realize`` in this process then finds it without building."""
    c = nx.instantiate(stage_module.stage, 5)
    assert nx.allrrefs() == []  # first builds: the store knows nothing of these
    with nx.plan(c) as p, _pool(method) as pool:
        while not p.done:
            for step in p.ready():
                blob = pickle.dumps(step)
                future = pool.submit(build_pickled, blob, stage_module.__name__)
                staged, facts = future.result(timeout=HANG_GUARD)
                _assert_fresh(facts, stage_module.__name__)
                assert isinstance(staged, nx.Staged) and staged.dref == step.dref
                assert not nx.dref2path(step.dref).exists()  # nothing visible before publish
                p.record(step, nx.publish(staged))
        (rref,) = p.result()
    up = c.derivations[0].dref
    (up_rref,) = nx.drefrrefs(up)
    up_text = nx.catref(up_rref, "out.txt")
    assert json.loads(up_text) == {"value": 5, "inputs": {}}
    assert json.loads(nx.catref(rref, "out.txt")) == {"value": 5, "inputs": {str(up): up_text}}
    assert nx.realize(c) == rref
    assert len(nx.allrrefs()) == 2


@pytest.mark.parametrize("method", START_METHODS)
def test_worker_builds_and_publishes_itself(
    store: nx.Store, stage_module: ModuleType, method: str
) -> None:
    """A fresh worker builds the pickled step and publishes it itself; the planner
    records the RRefs it sends back, which are in the store, read-only, and what a
    build in this process would have made (a deterministic stage)."""
    c = nx.instantiate(stage_module.stage, 6)
    with nx.plan(c) as p, _pool(method) as pool:
        while not p.done:
            for step in p.ready():
                future = pool.submit(build_and_publish, pickle.dumps(step), stage_module.__name__)
                texts, facts = future.result(timeout=HANG_GUARD)
                _assert_fresh(facts, stage_module.__name__)
                rrefs = [nx.RRef.parse(t) for t in texts]
                assert all(nx.rref2path(r).parent.stat().st_mode & 0o777 == 0o555 for r in rrefs)
                p.record(step, rrefs)
        (rref,) = p.result()
    assert nx.drefrrefs(c.result) == [rref]
    # The same step built here gives the same RRef, and stages nothing new.
    with nx.plan(c, force_rebuild=True) as p:
        (step,) = p.ready()
        staged = nx.build_step(step)
        assert staged.rrefs == (rref,) and staged.objects == (None,)


@pytest.mark.parametrize("method", START_METHODS)
def test_build_error_in_a_worker_comes_back_with_its_fields(
    store: nx.Store, tmp_path: Path, method: str
) -> None:
    """A build failing in a fresh worker gives a BuildError that crosses back with its
    derivation, cause and kept staging folder; the planner fails the step with it and
    ``result`` raises it."""
    c = nx.instantiate(lambda m: node(m, "doomed", fail=True, log=str(tmp_path / "log")))
    with nx.plan(c) as p, _pool(method) as pool:
        (step,) = p.ready()
        error = pool.submit(build_or_error, step).result(timeout=HANG_GUARD)
        assert isinstance(error, nx.BuildError)
        assert error.dref == step.dref
        assert isinstance(error.cause, RuntimeError) and "fails on purpose" in str(error.cause)
        assert error.staging is not None and (Path(error.staging) / "out" / "value.txt").exists()
        p.fail(step, error)
        assert p.done
        with pytest.raises(nx.BuildError, match="fails on purpose"):
            p.result()
    assert nx.allrrefs() == []


# ---------------------------------------------------------------- in this process


def test_build_step_publishes_nothing(store: nx.Store, tmp_path: Path) -> None:
    """``build_step`` leaves the store's visible tree as it was: the outputs wait, sealed
    and read-only, in staging, until ``publish``."""
    c = nx.instantiate(lambda m: node(m, "quiet", value=1, log=str(tmp_path / "log")))
    before = store_view(store)
    with nx.plan(c) as p:
        (step,) = p.ready()
        staged = nx.build_step(step)
        assert store_view(store) == before
        (obj,) = staged.objects
        assert obj is not None and Path(obj, "out", "value.txt").read_text() == "1"
        assert Path(obj, "out").stat().st_mode & 0o777 == 0o555
        assert staged.nbytes == len("1") + len("{}")  # value.txt and inputs.json
        p.record(step, nx.publish(staged))
    assert store_view(store) != before
    assert not Path(obj).exists()  # moved into the store by publish


def test_build_step_is_a_function_of_the_step(store: nx.Store, tmp_path: Path) -> None:
    """The same step built twice (a deterministic stage) stages the same RRef; the step
    survives pickling, and its copy builds the same RRef too."""
    c = nx.instantiate(lambda m: node(m, "pure", value=2, log=str(tmp_path / "log")))
    with nx.plan(c) as p:
        (step,) = p.ready()
        first, second = nx.build_step(step), nx.build_step(step)
        copy = pickle.loads(pickle.dumps(step))
        assert copy == step
        third = nx.build_step(copy)
        assert first.rrefs == second.rrefs == third.rrefs
        assert len({first.objects, second.objects, third.objects}) == 3  # three stagings
        p.record(step, nx.publish_many([first, second, third])[0])
    assert len(nx.drefrrefs(c.result)) == 1
