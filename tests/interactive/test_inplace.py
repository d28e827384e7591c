"""The in-place layer, as in the pylightnix quick start: ``instantiate_inplace(mkdrv,
config, matcher, realizer)`` one cell at a time, a later stage referring to an earlier
in-place DRef, then ``realize_inplace``."""

from __future__ import annotations

from pathlib import Path

import pytest

import nixlet as nx
from strategies import builds, counting_build


def _add(b: nx.Build) -> None:
    """Add one to the number of the dependency."""
    c = nx.build_cattrs(b)
    n = int(nx.build_path(b, [c.src, "value.txt"]).read_text())
    (nx.build_outpath(b) / "value.txt").write_text(str(n + 1))
    with open(c.log, "a") as f:
        f.write("add\n")


def test_quick_start(store: nx.Store, tmp_path: Path) -> None:
    """Two cells: the second stage's config holds the first in-place DRef; realizing the
    second builds both, once, and its context holds the first's realization."""
    log = str(tmp_path / "log")
    first = nx.instantiate_inplace(
        nx.mkdrv,
        {"name": "hello", "value": 41, "log": log},
        nx.match_only(),
        nx.build_wrapper(counting_build),
    )
    assert nx.allrrefs() == []  # instantiating builds nothing
    second = nx.instantiate_inplace(
        nx.mkdrv,
        {"name": "world", "src": first, "log": log},
        nx.match_only(),
        nx.build_wrapper(_add),
    )
    r2 = nx.realize_inplace(second)
    assert nx.catref(r2, "value.txt") == "42"
    r1 = nx.realize_inplace(first)
    assert nx.rrefctx(r2) == {first: (r1,)}
    assert builds(Path(log)) == 2
    assert nx.realize_inplace(str(second)) == r2
    assert builds(Path(log)) == 2


def test_inplace_drefs_match_instantiate(store: nx.Store, tmp_path: Path) -> None:
    """An in-place DRef is the one instantiate gives the same stage."""
    config = {"name": "same", "value": 1}
    d = nx.instantiate_inplace(nx.mkdrv, config, nx.match_only(), nx.build_wrapper(counting_build))
    c = nx.instantiate(nx.mkdrv, config, nx.match_only(), nx.build_wrapper(counting_build))
    assert d == c.result
    assert nx.realize_inplace(d) == nx.realize(c)


def test_inplace_force_rebuild(store: nx.Store, tmp_path: Path) -> None:
    """realize_inplace takes force_rebuild like realize."""
    log = tmp_path / "log"
    d = nx.instantiate_inplace(
        nx.mkdrv, {"name": "f", "log": str(log)}, nx.match_only(), nx.build_wrapper(counting_build)
    )
    r = nx.realize_inplace(d)
    assert nx.realize_inplace(d, force_rebuild=True) == r
    assert builds(log) == 2


def test_inplace_stage_functions(store: nx.Store) -> None:
    """instantiate_inplace runs any stage function with its arguments."""

    def staged(m: nx.Manager, value: int) -> nx.DRef:
        return nx.mkdrv(
            m, {"name": "s", "value": value}, nx.match_only(), nx.build_wrapper(counting_build)
        )

    d = nx.instantiate_inplace(staged, 5)
    assert nx.catref(nx.realize_inplace(d), "value.txt") == "5"


def test_unknown_dref_is_a_closure_error(store: nx.Store) -> None:
    """realize_inplace of a DRef not declared in place raises ClosureError; a stage
    depending on one does too."""
    other = nx.instantiate(
        nx.mkdrv, {"name": "other"}, nx.match_only(), nx.build_wrapper(counting_build)
    ).result
    with pytest.raises(nx.ClosureError):
        nx.realize_inplace(other)
    with pytest.raises(nx.ClosureError):
        nx.instantiate_inplace(
            nx.mkdrv, {"name": "x", "src": other}, nx.match_only(), nx.build_wrapper(counting_build)
        )


def test_inplace_managers_are_per_store(tmp_path: Path) -> None:
    """Each store has its own in-place manager: a DRef declared for one store is unknown
    to the other."""
    s1 = nx.store_initialize(tmp_path / "s1")
    s2 = nx.store_initialize(tmp_path / "s2")
    d = nx.instantiate_inplace(
        nx.mkdrv, {"name": "one"}, nx.match_only(), nx.build_wrapper(counting_build), store=s1
    )
    r = nx.realize_inplace(d, store=s1)
    assert nx.allrrefs(store=s1) == [r]
    assert nx.allrrefs(store=s2) == []
    with pytest.raises(nx.ClosureError):
        nx.realize_inplace(d, store=s2)


def test_inplace_without_a_store_is_a_store_error() -> None:
    """With no store anywhere the in-place layer raises StoreError."""
    with pytest.raises(nx.StoreError):
        nx.instantiate_inplace(nx.mkdrv, {}, nx.match_only(), nx.build_wrapper(counting_build))
