"""``realize`` and ``realize_many``: caching, forced rebuilds, matchers asking for more,
dependency choices, failed builds that leave nothing behind, promises, several outputs,
and a property over random DAGs. Builds are counted in a log file outside the store."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

import nixlet as nx
from strategies import Dag, builds, dag_stage, dags, stage, store_view

PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _single(
    m: nx.Manager, log: str, matcher: nx.Matcher | None = None, random: bool = False, **extra: Any
) -> nx.DRef:
    return stage(m, {"name": "one", "value": 1, "log": log, "random": random, **extra}, matcher)


def _pair(
    m: nx.Manager,
    log: str,
    up: nx.Matcher | None = None,
    down: nx.Matcher | None = None,
    up_random: bool = False,
    down_random: bool = False,
) -> nx.DRef:
    a = stage(m, {"name": "up", "value": 1, "log": log, "random": up_random}, up)
    return stage(m, {"name": "down", "src": a, "log": log, "random": down_random}, down)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """The build log, outside the store."""
    return tmp_path / "log"


# ---------------------------------------------------------------- caching


def test_realize_is_idempotent(store: nx.Store, log: Path) -> None:
    """A second realize of the same closure builds nothing and returns the same RRef."""
    first = nx.realize(nx.instantiate(_pair, str(log)))
    assert builds(log) == 2
    assert nx.realize(nx.instantiate(_pair, str(log))) == first
    assert builds(log) == 2
    assert len(nx.allrrefs()) == 2


def test_realize_returns_a_published_realization(store: nx.Store, log: Path) -> None:
    """The returned RRef belongs to the target and its files are in the store."""
    c = nx.instantiate(_pair, str(log))
    r = nx.realize(c)
    assert r.dref == c.result
    assert nx.catref(r, "value.txt") == "null"
    assert nx.drefrrefs(c.result) == [r]


def test_forced_deterministic_rebuild_gives_the_same_rref(store: nx.Store, log: Path) -> None:
    """force_rebuild=True builds the target again; a deterministic build gives the same
    RRef and no duplicate realization; dependencies are not rebuilt."""
    c = nx.instantiate(_pair, str(log))
    first = nx.realize(c)
    assert nx.realize(c, force_rebuild=True) == first
    assert builds(log, "down") == 2 and builds(log, "up") == 1
    assert nx.drefrrefs(c.result) == [first]
    assert len(nx.allrrefs()) == 2


def test_forcing_a_dependency_rebuilds_it(store: nx.Store, log: Path) -> None:
    """force_rebuild may name a dependency (as a DRef or its text); a deterministic
    rebuild of it changes no choice, so the target is not rebuilt."""
    c = nx.instantiate(_pair, str(log))
    first = nx.realize(c)
    up = c.derivations[0].dref
    assert nx.realize(c, force_rebuild=[str(up)]) == first
    assert nx.realize(c, force_rebuild=[up]) == first
    assert builds(log, "up") == 3 and builds(log, "down") == 1


def test_force_rebuild_outside_the_closure_is_a_closure_error(store: nx.Store, log: Path) -> None:
    """Forcing a DRef the closure does not hold raises ClosureError; nothing is built."""
    c = nx.instantiate(_pair, str(log))
    stranger = nx.instantiate(lambda m: stage(m, {"name": "stranger"})).result
    with pytest.raises(nx.ClosureError):
        nx.realize(c, force_rebuild=[stranger])
    with pytest.raises(nx.RefError):
        nx.realize(c, force_rebuild=["not a dref"])
    assert builds(log) == 0


# ---------------------------------------------------------------- matchers asking for more


def test_match_some_builds_until_satisfied(store: nx.Store, log: Path) -> None:
    """match_some(3) of a random stage on an empty store builds three times; asked again,
    it builds nothing."""
    c = nx.instantiate(_single, str(log), nx.match_some(3), True)
    rrefs = nx.realize_many(c)
    assert len(rrefs) == 3 and len(set(rrefs)) == 3
    assert builds(log) == 3
    assert nx.realize_many(c) == rrefs
    assert builds(log) == 3


def test_deterministic_stage_cannot_satisfy_match_some(store: nx.Store, log: Path) -> None:
    """A deterministic stage under match_some(3) raises MatcherError naming the matcher
    once a build adds nothing new; the one realization stays, and the lock is released."""
    c = nx.instantiate(_single, str(log), nx.match_some(3))
    with pytest.raises(nx.MatcherError) as e:
        nx.realize_many(c)
    assert "match_some(n=3)" in str(e.value)
    assert e.value.matcher == "match_some(n=3)"
    assert e.value.dref == c.result
    assert builds(log) == 2
    assert len(nx.drefrrefs(c.result)) == 1
    assert len(nx.realize_many(nx.instantiate(_single, str(log), nx.match_all()))) == 1


def test_realize_of_several_is_a_matcher_error(store: nx.Store, log: Path) -> None:
    """realize raises MatcherError when the target's matcher chose several; realize_many
    returns them all (without building again)."""
    c = nx.instantiate(_single, str(log), nx.match_some(2), True)
    with pytest.raises(nx.MatcherError, match="realize_many") as e:
        nx.realize(c)
    assert e.value.dref == c.result
    rrefs = nx.realize_many(c)
    assert len(rrefs) == 2
    assert builds(log) == 2


def test_matcher_is_not_part_of_the_identity(store: nx.Store, log: Path) -> None:
    """The same stage under another matcher has the same DRef and sees the same
    realizations."""
    a = nx.instantiate(_single, str(log), nx.match_only(), True)
    b = nx.instantiate(_single, str(log), nx.match_all(), True)
    assert a.result == b.result
    r = nx.realize(a)
    assert nx.realize_many(b) == [r]
    assert builds(log) == 1


def _rogue_matcher(store: nx.Store, rrefs: list[nx.RRef], /) -> list[nx.RRef] | None:
    """Returns an RRef it was not given."""
    return [nx.RRef("a" * 32, "b" * 32, "rogue")]


def _wrong_type_matcher(store: nx.Store, rrefs: list[nx.RRef], /) -> Any:
    """Returns a string instead of a list."""
    return str(rrefs[0]) if rrefs else None


def test_matcher_returning_strangers_is_a_matcher_error(store: nx.Store, log: Path) -> None:
    """A matcher returning RRefs it was not given raises MatcherError naming it."""
    c = nx.instantiate(_single, str(log), _rogue_matcher)
    with pytest.raises(nx.MatcherError) as e:
        nx.realize(c)
    assert "_rogue_matcher" in str(e.value)
    assert "_rogue_matcher" in e.value.matcher
    assert e.value.dref == c.result


def test_matcher_returning_a_non_list_is_a_matcher_error(store: nx.Store, log: Path) -> None:
    """A matcher must return a list (or None); a string is refused naming it."""
    c = nx.instantiate(_single, str(log), _wrong_type_matcher)
    with pytest.raises(nx.MatcherError, match="_wrong_type_matcher"):
        nx.realize(c)


# ---------------------------------------------------------------- dependency choices


def test_upstream_choice_changes_rebuild_downstream(store: nx.Store, log: Path) -> None:
    """Choosing another upstream realization builds the downstream against it; the old
    downstream realization stays bound to the old choice, and is chosen again when the old
    upstream choice comes back."""
    ups = nx.realize_many(nx.instantiate(_single, str(log), nx.match_some(2), True, name="up"))
    assert len(ups) == 2
    u1, u2 = ups

    def pipeline(m: nx.Manager, chosen: nx.RRef) -> nx.DRef:
        a = _single(m, str(log), nx.match_exact([chosen]), True, name="up")
        return stage(m, {"name": "down", "src": a, "log": str(log)})

    d1 = nx.realize(nx.instantiate(pipeline, u1))
    d2 = nx.realize(nx.instantiate(pipeline, u2))
    assert d1.dref == d2.dref and d1 != d2
    assert nx.rrefctx(d1) == {u1.dref: (u1,)}
    assert nx.rrefctx(d2) == {u2.dref: (u2,)}
    assert builds(log, "down") == 2
    assert nx.realize(nx.instantiate(pipeline, u1)) == d1
    assert builds(log, "down") == 2
    assert d1.rhash[:16] != d2.rhash[:16]  # another context, another hash prefix


def test_downstream_of_several_upstream_choices(store: nx.Store, log: Path) -> None:
    """With match_some(2) upstream, the downstream's context holds both chosen RRefs."""
    c = nx.instantiate(_pair, str(log), nx.match_some(2), nx.match_only(), True)
    r = nx.realize(c)
    up = c.derivations[0].dref
    assert set(nx.rrefctx(r)[up]) == set(nx.drefrrefs(up))
    assert len(nx.rrefctx(r)[up]) == 2


# ---------------------------------------------------------------- failures


def test_failing_realizer_is_a_build_error_and_leaves_nothing(
    store: nx.Store, log: Path, tmp_path: Path
) -> None:
    """A build function that raises gives BuildError with .dref, .cause and .staging (an
    existing folder holding the partial output); the store shows nothing new, and a
    later realize succeeds."""
    fail = tmp_path / "fail"
    fail.touch()
    c = nx.instantiate(_single, str(log), None, False, fail=str(fail))
    before_view, before_rrefs = store_view(store), nx.allrrefs()
    with pytest.raises(nx.BuildError) as e:
        nx.realize(c)
    err = e.value
    assert err.dref == c.result
    assert isinstance(err.cause, RuntimeError) and "asked to fail" in str(err.cause)
    assert Path(err.staging).is_dir()
    assert any(p.name == "value.txt" for p in Path(err.staging).rglob("*"))
    assert "kept for inspection" in str(err)
    assert nx.allrrefs() == before_rrefs
    assert not nx.dref2path(c.result).exists()  # not even the record: it comes with a realization
    assert store_view(store) == before_view
    fail.unlink()
    r = nx.realize(c)
    assert nx.allrrefs() == [r]


def test_failing_dependency_stops_the_downstream(store: nx.Store, tmp_path: Path) -> None:
    """When a dependency fails, the downstream is not built and nothing is published."""
    fail = tmp_path / "fail"
    fail.touch()
    log = str(tmp_path / "log")

    def pipeline(m: nx.Manager) -> nx.DRef:
        a = stage(m, {"name": "a", "fail": str(fail), "log": log})
        return stage(m, {"name": "b", "src": a, "log": log})

    with pytest.raises(nx.BuildError):
        nx.realize(nx.instantiate(pipeline))
    assert builds(Path(log), "b") == 0
    assert nx.allrrefs() == []


def _raising_realizer(step: nx.BuildStep, /) -> list[Path]:
    raise KeyError("plain realizer failed")


def _outside_realizer(step: nx.BuildStep, /) -> list[Path]:
    out = step.store.root.parent / "outside"  # a real folder, but not in the staging area
    out.mkdir(exist_ok=True)
    (out / "f").write_text("x")
    return [out]


def _empty_realizer(step: nx.BuildStep, /) -> list[Path]:
    return []


@pytest.mark.parametrize("realizer", [_raising_realizer, _outside_realizer, _empty_realizer])
def test_bad_plain_realizers_are_build_errors(store: nx.Store, realizer: Any) -> None:
    """A realizer (without build_wrapper) that raises, returns a folder outside the
    staging area, or returns no folder gives BuildError naming the derivation; nothing is
    published."""
    c = nx.instantiate(lambda m: nx.mkdrv(m, {"name": "plain"}, nx.match_only(), realizer))
    before = store_view(store)
    with pytest.raises(nx.BuildError) as e:
        nx.realize(c)
    assert e.value.dref == c.result
    assert store_view(store) == before
    if realizer is _raising_realizer:
        assert isinstance(e.value.cause, KeyError)


def _no_model(b: nx.Build) -> None:
    (nx.build_outpath(b) / "other.bin").write_text("x")


def _model(b: nx.Build) -> None:
    out = nx.build_outpath(b)
    nx.build_path(b, [nx.promise, "model.bin"]).write_text("weights")
    (out / "logs").mkdir()
    (out / "logs" / "train.txt").write_text("ok")


def _promising(m: nx.Manager, fn: Any) -> nx.DRef:
    return nx.mkdrv(
        m,
        {"name": "p", "model": [nx.promise, "model.bin"], "log": [nx.promise, "logs", "train.txt"]},
        nx.match_only(),
        nx.build_wrapper(fn),
        version="1",
    )


def test_broken_promise_is_a_promise_error(store: nx.Store) -> None:
    """A build that does not create a promised file raises PromiseError (a BuildError)
    listing what is missing; nothing is published."""
    c = nx.instantiate(_promising, _no_model)
    before = store_view(store)
    with pytest.raises(nx.PromiseError) as e:
        nx.realize(c)
    assert isinstance(e.value, nx.BuildError)
    assert sorted(e.value.missing) == ["logs/train.txt", "model.bin"]
    assert e.value.dref == c.result
    assert Path(e.value.staging).is_dir()
    assert "model.bin" in str(e.value)
    assert nx.allrrefs() == []
    assert store_view(store) == before


def test_kept_promise_publishes(store: nx.Store) -> None:
    """A build creating every promised path is published with them."""
    r = nx.realize(nx.instantiate(_promising, _model))
    assert nx.catref(r, "model.bin") == "weights"
    assert nx.catref(r, "logs", "train.txt") == "ok"


# ---------------------------------------------------------------- several outputs


def test_nouts_two_gives_two_realizations(store: nx.Store, log: Path) -> None:
    """A build with nouts=2 publishes two realizations from one build."""

    def staged(m: nx.Manager) -> nx.DRef:
        return stage(m, {"name": "two", "log": str(log)}, nx.match_all(), nouts=2)

    rrefs = nx.realize_many(nx.instantiate(staged))
    assert len(rrefs) == 2
    assert builds(log) == 1
    assert sorted(nx.catref(r, "index.txt") for r in rrefs) == ["0", "1"]
    assert nx.realize_many(nx.instantiate(staged)) == rrefs
    assert builds(log) == 1


def test_nouts_with_match_some_builds_once(store: nx.Store, log: Path) -> None:
    """match_some(2) over a two-output build is satisfied by one build."""

    def staged(m: nx.Manager) -> nx.DRef:
        return stage(m, {"name": "two", "log": str(log)}, nx.match_some(2), nouts=2)

    assert len(nx.realize_many(nx.instantiate(staged))) == 2
    assert builds(log) == 1


# ---------------------------------------------------------------- property


@PROPERTY
@given(dags())
def test_random_dags_realize_idempotently_in_chosen_contexts(dag: Dag) -> None:
    """For random DAGs under match_only/match_some: realizing every stage is idempotent
    (nothing is built the second time, same choices), and every realization's context holds
    exactly the realizations chosen for its direct dependencies."""
    with tempfile.TemporaryDirectory() as tmp:
        store = nx.store_initialize(Path(tmp) / "store")
        log = Path(tmp) / "log"
        n = len(dag.nodes)
        closures = [nx.instantiate(dag_stage, dag, str(log), k, store=store) for k in range(n)]
        refs = [c.result for c in closures]
        chosen = [nx.realize_many(c) for c in closures]
        built, everything = builds(log), nx.allrrefs(store=store)
        assert [nx.realize_many(c) for c in closures] == chosen
        assert builds(log) == built
        assert nx.allrrefs(store=store) == everything
        for k, node in enumerate(dag.nodes):
            expected_count = 2 if node.matcher == "some2" else 1
            assert len(chosen[k]) == expected_count
            assert sorted(nx.drefrrefs(refs[k], store=store)) == sorted(chosen[k])
            for rref in chosen[k]:
                context = nx.rrefctx(rref, store=store)
                assert context == {refs[j]: tuple(sorted(chosen[j])) for j in node.deps}
