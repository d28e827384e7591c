"""``instantiate`` and ``mkdrv``: closures in dependency order, purity (records only, no
realization), and the errors for dependencies that were not declared."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

import nixlet as nx
from strategies import Dag, builds, counting_build, dag_stage, dags, stage, store_view

PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _diamond(m: nx.Manager, log: str) -> nx.DRef:
    a = stage(m, {"name": "a", "value": 1, "log": log})
    b = stage(m, {"name": "b", "src": a, "log": log})
    c = stage(m, {"name": "c", "src": a, "log": log})
    return stage(m, {"name": "d", "left": b, "right": c, "log": log})


def test_closure_is_in_dependency_order(store: nx.Store, tmp_path: Path) -> None:
    """Each derivation of a closure comes after all of its dependencies; the result last."""
    c = nx.instantiate(_diamond, str(tmp_path / "log"))
    order = [d.dref for d in c.derivations]
    assert [d.name for d in order] == ["a", "b", "c", "d"]
    for i, d in enumerate(c.derivations):
        assert set(d.config.deps) <= set(order[:i])
    assert order[-1] == c.result
    assert c.store == store


def test_instantiate_is_pure(store: nx.Store, tmp_path: Path) -> None:
    """Instantiating builds nothing and writes nothing; realize then records each
    derivation (its canonical config and code identity) with its first realization."""
    log = tmp_path / "log"
    before = store_view(store)
    c = nx.instantiate(_diamond, str(log))
    assert store_view(store) == before
    assert nx.allrrefs() == [] and nx.alldrefs() == []
    assert builds(log) == 0
    nx.realize(c)
    assert nx.alldrefs() == sorted(d.dref for d in c.derivations)
    for d in c.derivations:
        d_rrefs = [r.rhash for r in nx.drefrrefs(d.dref)]
        assert sorted(os.listdir(nx.dref2path(d.dref))) == sorted(["code", "config.json", *d_rrefs])
        assert (nx.dref2path(d.dref) / "config.json").read_bytes() == d.config.canonical
        assert nx.drefcfg(d.dref) == d.config


def test_instantiate_twice_gives_the_same_closure(store: nx.Store, tmp_path: Path) -> None:
    """Instantiation is deterministic: same stages, same DRefs, same order."""
    a = nx.instantiate(_diamond, str(tmp_path / "log"))
    b = nx.instantiate(_diamond, str(tmp_path / "log"))
    assert [d.dref for d in a.derivations] == [d.dref for d in b.derivations]
    assert a.result == b.result


def test_stage_arguments_are_passed(store: nx.Store, tmp_path: Path) -> None:
    """instantiate passes positional and keyword arguments to the stage."""

    def staged(m: nx.Manager, value: int, *, name: str) -> nx.DRef:
        return stage(m, {"name": name, "value": value})

    c = nx.instantiate(staged, 3, name="kw")
    assert c.result.name == "kw"
    assert c.derivation(c.result).config.to_dict() == {"name": "kw", "value": 3}


def test_unneeded_derivations_are_left_out_of_the_closure(store: nx.Store) -> None:
    """A derivation declared but not needed by the result is not in the closure."""

    def staged(m: nx.Manager) -> nx.DRef:
        stage(m, {"name": "unused"})
        return stage(m, {"name": "used"})

    c = nx.instantiate(staged)
    assert [d.dref.name for d in c.derivations] == ["used"]
    with pytest.raises(nx.ClosureError):
        c.derivation(nx.DRef("a" * 32, "unused"))


def test_declaring_twice_is_one_derivation(store: nx.Store) -> None:
    """The same config and code declared twice is one derivation, in the closure once."""

    def staged(m: nx.Manager) -> nx.DRef:
        a1 = stage(m, {"name": "a"})
        a2 = stage(m, {"name": "a"}, nx.match_all())
        assert a1 == a2
        return stage(m, {"name": "b", "x": a1, "y": a2})

    c = nx.instantiate(staged)
    assert [d.dref.name for d in c.derivations] == ["a", "b"]
    assert c.derivations[1].config.deps == (c.derivations[0].dref,)


def test_stage_may_return_a_dref_string(store: nx.Store) -> None:
    """A stage returning the text of a DRef of this instantiation is accepted."""
    c = nx.instantiate(lambda m: str(stage(m, {"name": "s"})))  # type: ignore[arg-type, return-value]
    assert c.result.name == "s"


@pytest.mark.parametrize("returned", [None, 3, "not a ref", f"dref:{'a' * 32}-x"])
def test_stage_must_return_one_of_its_drefs(store: nx.Store, returned: object) -> None:
    """A stage returning anything but a DRef it declared raises ClosureError."""

    def staged(m: nx.Manager) -> object:
        stage(m, {"name": "s"})
        return returned

    with pytest.raises(nx.ClosureError):
        nx.instantiate(staged)  # type: ignore[arg-type]


def test_dependency_from_another_instantiation_is_refused(store: nx.Store) -> None:
    """A DRef declared in another instantiation cannot be a dependency: ClosureError, and
    no record of the refused instantiation is written."""
    other = nx.instantiate(lambda m: stage(m, {"name": "other"})).result
    before = nx.alldrefs()

    def staged(m: nx.Manager) -> nx.DRef:
        fine = stage(m, {"name": "fine"})
        return stage(m, {"name": "bad", "src": other, "ok": fine})

    with pytest.raises(nx.ClosureError, match="call the stage that makes it first") as e:
        nx.instantiate(staged)
    assert e.value.dref == other
    assert nx.alldrefs() == before


def test_returning_a_foreign_dref_is_refused(store: nx.Store) -> None:
    """A stage cannot return a DRef of another instantiation."""
    other = nx.instantiate(lambda m: stage(m, {"name": "other"})).result
    with pytest.raises(nx.ClosureError):
        nx.instantiate(lambda m: other)


def test_mkdrv_needs_a_manager_and_callables(store: nx.Store) -> None:
    """mkdrv refuses a first argument that is not a Manager (TypeError) and a matcher or
    realizer that is not callable (ConfigError)."""
    with pytest.raises(TypeError):
        nx.mkdrv(store, {}, nx.match_only(), nx.build_wrapper(counting_build))  # type: ignore[arg-type]
    m = nx.Manager(store)
    with pytest.raises(nx.ConfigError):
        nx.mkdrv(m, {}, "match_only", nx.build_wrapper(counting_build))  # type: ignore[arg-type]
    with pytest.raises(nx.ConfigError):
        nx.mkdrv(m, {}, nx.match_only(), None)  # type: ignore[arg-type]


def test_build_wrapper_refuses_bad_nouts() -> None:
    """build_wrapper needs a positive number of outputs and a callable."""
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(ValueError):
            nx.build_wrapper(counting_build, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        nx.build_wrapper("not callable")  # type: ignore[arg-type]


def test_invalid_config_in_a_stage_is_a_config_error(store: nx.Store) -> None:
    """A bad config inside a stage surfaces as ConfigError from instantiate."""
    with pytest.raises(nx.ConfigError):
        nx.instantiate(lambda m: stage(m, {"name": "bad/name"}))


# ---------------------------------------------------------------- property


@PROPERTY
@given(dags())
def test_random_dags_instantiate_purely_in_dependency_order(dag: Dag) -> None:
    """For random DAGs of 1-8 stages with random configs: the closure of the last stage
    holds exactly it and its ancestors, each after its dependencies; instantiating writes
    one record per declared stage and no realization."""
    with tempfile.TemporaryDirectory() as tmp:
        store = nx.store_initialize(Path(tmp) / "store")
        log = str(Path(tmp) / "log")
        c = nx.instantiate(dag_stage, dag, log, store=store)
        refs = [
            nx.instantiate(dag_stage, dag, log, k, store=store).result
            for k in range(len(dag.nodes))
        ]
        last = len(dag.nodes) - 1
        expected = {refs[i] for i in dag.ancestors(last)} | {refs[last]}
        order = [d.dref for d in c.derivations]
        assert set(order) == expected and len(order) == len(expected)
        assert c.result == refs[last] == order[-1]
        for i, d in enumerate(c.derivations):
            assert set(d.config.deps) <= set(order[:i])
            node = dag.nodes[refs.index(d.dref)]
            assert set(d.config.deps) == {refs[j] for j in node.deps}
        assert nx.allrrefs(store=store) == []
        assert builds(Path(log)) == 0
        assert nx.alldrefs(store=store) == []
