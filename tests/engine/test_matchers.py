"""The ready matchers: match_some, match_latest, match_all, match_only, match_exact and
match_best, alone on lists of RRefs and inside realize."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nixlet as nx
from strategies import builds, counting_build, hashes, stage, tree_stage

PROPERTY = settings(max_examples=50, deadline=None)
D = "d" * 32
rref_lists = st.lists(hashes.map(lambda h: nx.RRef(h, D, "m")), unique=True, max_size=6)


def _random(m: nx.Manager, log: str, matcher: nx.Matcher) -> nx.DRef:
    return stage(m, {"name": "rnd", "random": True, "log": log}, matcher)


# ---------------------------------------------------------------- on lists


@PROPERTY
@given(rref_lists, st.integers(1, 7))
def test_match_some_law(rrefs: list[nx.RRef], n: int) -> None:
    """match_some(n) asks for more while there are fewer than n, else returns the first n
    by RRef: a stable subset of its input."""
    got = nx.match_some(n)(None, list(rrefs))  # type: ignore[arg-type]
    if len(rrefs) < n:
        assert got is None
    else:
        assert got == sorted(rrefs)[:n]
        assert set(got) <= set(rrefs)


@PROPERTY
@given(rref_lists)
def test_match_all_law(rrefs: list[nx.RRef]) -> None:
    """match_all returns every realization (sorted), or asks for one if there is none."""
    got = nx.match_all()(None, list(rrefs))  # type: ignore[arg-type]
    assert got == (sorted(rrefs) if rrefs else None)


def test_match_only() -> None:
    """match_only asks for one build, returns a single realization, and refuses several
    with MatcherError naming itself."""
    r1, r2 = nx.RRef("a" * 32, D, "m"), nx.RRef("b" * 32, D, "m")
    assert nx.match_only()(None, []) is None  # type: ignore[arg-type]
    assert nx.match_only()(None, [r1]) == [r1]  # type: ignore[arg-type]
    with pytest.raises(nx.MatcherError) as e:
        nx.match_only()(None, [r1, r2])  # type: ignore[arg-type]
    assert e.value.matcher == "match_only()"
    assert e.value.dref == r1.dref
    assert "match_latest" in str(e.value)  # says what to use instead


def test_match_exact() -> None:
    """match_exact returns exactly its RRefs (given as objects or text) when present, and
    raises MatcherError naming itself when one is missing (building cannot help)."""
    r1, r2, r3 = (nx.RRef(c * 32, D, "m") for c in "abc")
    assert nx.match_exact([str(r2), r1])(None, [r3, r2, r1]) == [r1, r2]  # type: ignore[arg-type, list-item]
    with pytest.raises(nx.MatcherError) as e:
        nx.match_exact([r1, r3])(None, [r1, r2])  # type: ignore[arg-type]
    assert "match_exact" in e.value.matcher
    assert str(r3) in str(e.value)
    with pytest.raises(nx.MatcherError):
        nx.match_exact([r1])(None, [])  # type: ignore[arg-type]


def test_match_exact_refuses_malformed_refs() -> None:
    """match_exact parses its RRefs when made: a malformed one is a RefError."""
    with pytest.raises(nx.RefError):
        nx.match_exact(["rref:nope"])


@pytest.mark.parametrize(
    "make",
    [
        lambda: nx.match_some(0),
        lambda: nx.match_some(-2),
        lambda: nx.match_some(True),
        lambda: nx.match_some(1.0),  # type: ignore[arg-type]
        lambda: nx.match_latest(0),
        lambda: nx.match_best("f", n=0),
    ],
)
def test_matcher_counts_must_be_positive_ints(make: Any) -> None:
    """n must be a positive int."""
    with pytest.raises(ValueError):
        make()


def test_matchers_are_values() -> None:
    """Ready matchers compare by value, print their parameters and pickle."""
    for m in (
        nx.match_some(2),
        nx.match_latest(3),
        nx.match_all(),
        nx.match_only(),
        nx.match_exact([nx.RRef("a" * 32, D, "m")]),
        nx.match_best("s.txt", 2, True),
    ):
        assert pickle.loads(pickle.dumps(m)) == m
    assert nx.match_some(2) == nx.match_some(2) != nx.match_some(3)
    assert repr(nx.match_some(3)) == "match_some(n=3)"


# ---------------------------------------------------------------- match_latest


def test_match_latest_follows_build_start_time(store: nx.Store, tmp_path: Path) -> None:
    """match_latest picks the most recently started builds, newest first, whatever the
    order of their RRefs; it builds nothing when one exists."""
    log = tmp_path / "log"
    c = nx.instantiate(_random, str(log), nx.match_latest())
    r1 = nx.realize(c)
    r2 = nx.realize(c, force_rebuild=True)
    r3 = nx.realize(c, force_rebuild=True)
    assert len({r1, r2, r3}) == 3
    assert nx.realize(c) == r3
    assert builds(log) == 3
    for order in ([r1, r2, r3], [r3, r1, r2], sorted([r1, r2, r3])):
        assert nx.match_latest(2)(store, order) == [r3, r2]
        assert nx.match_latest(3)(store, order) == [r3, r2, r1]
    assert nx.match_latest(4)(store, [r1, r2, r3]) is None


@settings(max_examples=300)
@given(st.floats(min_value=0, max_value=2**33, allow_nan=False))
def test_build_times_round_trip(t: float) -> None:
    """A recorded build time reads back as the same POSIX time, to the microsecond."""
    from nixlet.store.records import format_time, parse_time

    text = format_time(t)
    assert abs(parse_time(text) - t) < 2e-6
    assert format_time(parse_time(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "2026-13-01T00:00:00.000000Z",  # month 13
        "2026-02-30T00:00:00.000000Z",  # no such day
        "2026-11-26T24:00:00.000000Z",
        "2026-11-26T04:08:49Z",  # no microseconds
        "2026-11-26 04:08:49.000000Z",
        "2026-11-26T04:08:49.000000",
        "２026-11-26T04:08:49.000000Z",  # a non-ASCII digit
        "",
    ],
)
def test_malformed_build_times_are_refused(text: str) -> None:
    from nixlet.store.records import parse_time

    with pytest.raises(ValueError):
        parse_time(text)


def test_match_latest_n_builds_until_n(store: nx.Store, tmp_path: Path) -> None:
    """match_latest(2) on an empty store builds twice."""
    log = tmp_path / "log"
    assert len(nx.realize_many(nx.instantiate(_random, str(log), nx.match_latest(2)))) == 2
    assert builds(log) == 2


# ---------------------------------------------------------------- match_best


def _scored(
    store: nx.Store, tmp_path: Path, contents: list[str | None]
) -> dict[str | None, nx.RRef]:
    """One realization per content of ``score.txt`` (None: no score file)."""
    specs = [
        [{"path": "score.txt", "file": c}] if c is not None else [{"path": "other", "file": "x"}]
        for c in contents
    ]
    c = nx.instantiate(tree_stage, tmp_path, specs, nx.match_all())
    found: dict[str | None, nx.RRef] = {}
    for _ in specs:
        before = set(nx.drefrrefs(c.result))
        nx.realize_many(c, force_rebuild=True)
        (new,) = set(nx.drefrrefs(c.result)) - before
        path = nx.rref2path(new) / "score.txt"
        found[path.read_text() if path.exists() else None] = new
    return found


def test_match_best_ranks_and_skips_with_warnings(store: nx.Store, tmp_path: Path) -> None:
    """match_best ranks by the number in the file (highest, or lowest with minimize);
    realizations missing the file or holding a non-number (or a non-finite one) are skipped
    with a NixletWarning each."""
    r = _scored(store, tmp_path, ["0.5", "0.9", " 0.1\n", "abc", None, "nan", "inf"])
    rrefs = list(r.values())
    with pytest.warns(nx.NixletWarning) as caught:
        assert nx.match_best("score.txt")(store, rrefs) == [r["0.9"]]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 4
    assert sum("is missing" in m for m in messages) == 1
    assert sum("not a number" in m for m in messages) == 3
    assert all("match_best" in m for m in messages)
    with pytest.warns(nx.NixletWarning):
        assert nx.match_best("score.txt", minimize=True)(store, rrefs) == [r[" 0.1\n"]]
    with pytest.warns(nx.NixletWarning):
        assert nx.match_best("score.txt", n=2)(store, rrefs) == [r["0.9"], r["0.5"]]
    with pytest.warns(nx.NixletWarning):
        assert nx.match_best("score.txt", n=2, minimize=True)(store, rrefs) == [
            r[" 0.1\n"],
            r["0.5"],
        ]
    with pytest.warns(nx.NixletWarning):
        assert nx.match_best("score.txt", n=4)(store, rrefs) is None


def test_match_best_without_bad_realizations_warns_nothing(store: nx.Store, tmp_path: Path) -> None:
    """With every realization scored, match_best raises no warning (warnings are errors
    in this suite)."""
    r = _scored(store, tmp_path, ["1", "2"])
    assert nx.match_best("score.txt")(store, list(r.values())) == [r["2"]]


def test_match_best_builds_until_enough_are_scored(store: nx.Store, tmp_path: Path) -> None:
    """Inside realize, match_best asks for builds until ``n`` realizations have a score,
    warning about the ones it skipped."""
    specs = [
        [{"path": "score.txt", "file": "0.3"}],
        [{"path": "score.txt", "file": "abc"}],
        [{"path": "score.txt", "file": "0.7"}],
    ]
    c = nx.instantiate(tree_stage, tmp_path, specs, nx.match_best("score.txt", n=2))
    with pytest.warns(nx.NixletWarning):
        rrefs = nx.realize_many(c)
    assert [nx.catref(r, "score.txt") for r in rrefs] == ["0.7", "0.3"]
    assert builds(tmp_path / "log") == 3


@pytest.mark.parametrize(
    ("content", "path"),
    [("accuracy: 0.42\n", "acc.txt"), ("0.42", "accuracy.txt"), ("nan", "acc.txt")],
    ids=["not-a-number", "misspelt-file", "nan"],
)
def test_match_best_stops_when_no_build_gives_a_score(
    store: nx.Store, tmp_path: Path, content: str, path: str
) -> None:
    """A non-deterministic build whose score file never holds a usable number (text around
    it, another file name, NaN) used to be built forever (7,045 realizations before it was
    killed): realize stops after the first build with a MatcherError that names the file and
    what it read, and the realization stays in the store for inspection."""
    specs = [[{"path": path, "file": content}]] * 3
    c = nx.instantiate(tree_stage, tmp_path, specs, nx.match_best("acc.txt"))
    with pytest.raises(nx.MatcherError) as e:
        nx.realize(c)
    assert builds(tmp_path / "log") == 1
    assert "acc.txt" in str(e.value) and e.value.dref == c.result
    expected = "is missing" if path != "acc.txt" else repr(content.encode())
    assert expected in str(e.value)
    assert len(nx.drefrrefs(c.result)) == 1


def _never_satisfied(store: nx.Store, rrefs: list[nx.RRef]) -> list[nx.RRef] | None:
    return None


def test_max_builds_bounds_a_matcher_that_never_chooses(store: nx.Store, tmp_path: Path) -> None:
    """A matcher that keeps asking for more while every build adds a new realization is
    stopped by ``max_builds`` with a MatcherError naming the bound, after exactly that many
    builds."""
    log = str(tmp_path / "log")
    c = nx.instantiate(lambda m: _random(m, log, _never_satisfied))
    with pytest.raises(nx.MatcherError, match="max_builds=4"):
        nx.realize(c, max_builds=4)
    assert builds(tmp_path / "log") == 4
    assert len(nx.drefrrefs(c.result)) == 4


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../b", "", "./s", "a//b"])
def test_match_best_refuses_files_outside_the_realization(bad: str) -> None:
    """match_best reads a file inside each realization: an absolute path or one with
    ``..`` (which would read outside it) is refused when the matcher is made."""
    with pytest.raises(nx.UsageError) as e:
        nx.match_best(bad)
    assert e.value.argument == "filename"
    assert nx.match_best("metrics/acc.txt").filename == "metrics/acc.txt"


def test_matcher_of_upstream_selects_for_downstream(store: nx.Store, tmp_path: Path) -> None:
    """A downstream stage is built against what the upstream matcher chose."""
    log = str(tmp_path / "log")

    def pipeline(m: nx.Manager) -> nx.DRef:
        a = _random(m, log, nx.match_some(3))
        return stage(m, {"name": "down", "src": a}, nx.match_only(), counting_build)

    r = nx.realize(nx.instantiate(pipeline))
    up = nx.instantiate(pipeline).derivations[0].dref
    assert nx.rrefctx(r)[up] == tuple(sorted(nx.drefrrefs(up))[:3])
