"""A first end-to-end check: a two-stage pipeline builds once, then is cached."""

from __future__ import annotations

import nixlet as nx


def _write_number(b: nx.Build) -> None:
    (nx.build_outpath(b) / "n.txt").write_text(str(nx.build_cattrs(b).n))


def _add_one(b: nx.Build) -> None:
    c = nx.build_cattrs(b)
    n = int(nx.build_path(b, [c.src, "n.txt"]).read_text())
    (nx.build_outpath(b) / "n.txt").write_text(str(n + 1))


def _pipeline(m: nx.Manager) -> nx.DRef:
    src = nx.mkdrv(m, {"name": "src", "n": 41}, nx.match_only(), nx.build_wrapper(_write_number))
    return nx.mkdrv(m, {"name": "inc", "src": src}, nx.match_only(), nx.build_wrapper(_add_one))


def test_two_stages_build_then_cache(store: nx.Store) -> None:
    closure = nx.instantiate(_pipeline)
    assert nx.allrrefs() == []
    first = nx.realize(closure)
    assert nx.catref(first, "n.txt") == "42"
    assert len(nx.allrrefs()) == 2
    assert nx.realize(nx.instantiate(_pipeline)) == first
    assert len(nx.allrrefs()) == 2
