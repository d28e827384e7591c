"""``diff``: configs compared recursively (added, removed, changed; JSON types kept
apart), realizations' contexts and files by content."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import nixlet as nx
from cli_pipeline import realize_pipeline


def _put(m: nx.Manager, config: dict[str, object]) -> nx.DRef:
    return nx.mkdrv(m, config, nx.match_only(), nx.build_wrapper(_write), version="1")


def _write(b: nx.Build) -> None:
    out = nx.build_outpath(b)
    for path, text in nx.build_cattrs(b).files.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(text)


def _rref(config: dict[str, object]) -> nx.RRef:
    return nx.realize(nx.instantiate(_put, config))


def test_configs_differ_recursively(store: nx.Store) -> None:
    """Keys and list items added, removed and changed, at any depth, as JSON pointers;
    1, 1.0 and true are different values."""
    a = _rref({"name": "t", "files": {}, "opts": {"lr": 1, "a/b": [1, 2, 3], "gone": 0}})
    b = _rref({"name": "t", "files": {}, "opts": {"lr": 1.0, "a/b": [1, 5], "new": True}})
    d = nx.diff(a.dref, b.dref)
    assert d.config.changed == {"/opts/lr": (1, 1.0), "/opts/a~1b/1": (2, 5)}
    assert d.config.removed == {"/opts/a~1b/2": 3, "/opts/gone": 0}
    assert d.config.added == {"/opts/new": True}
    assert not d.context and not d.files and bool(d)
    assert nx.diff(a.dref, a.dref) == nx.Diff(
        a.dref, a.dref, nx.Changes(), nx.Changes(), nx.Changes()
    )
    assert not nx.diff(a, a)


def test_files_differ_by_content(store: nx.Store) -> None:
    """Files added, removed, and changed (by hash and size); folders are entries too."""
    a = _rref({"name": "f", "files": {"same.txt": "x", "old.txt": "o", "c.txt": "1"}})
    b = _rref({"name": "f", "files": {"same.txt": "x", "sub/new.txt": "n", "c.txt": "22"}})
    d = nx.diff(a, b)
    assert set(d.files.added) == {"sub", "sub/new.txt"}
    assert set(d.files.removed) == {"old.txt"}
    assert set(d.files.changed) == {"c.txt"}
    before, after = d.files.changed["c.txt"]
    assert isinstance(before, dict) and isinstance(after, dict)
    assert (before["size"], after["size"]) == (1, 2)
    assert before["xxh3_128"] != after["xxh3_128"]
    assert d.files.added["sub"] == {"type": "dir"}
    assert "/files/old.txt" in d.config.removed
    json_form = d.files.to_json()
    assert json_form["changed"] == {"c.txt": [before, after]}


def _noise(b: nx.Build) -> None:
    (nx.build_outpath(b) / "noise.txt").write_text(str(random.random()))


def _downstream(m: nx.Manager) -> nx.DRef:
    noise = nx.mkdrv(m, {"name": "noise"}, nx.match_latest(), nx.build_wrapper(_noise))
    return _put(m, {"name": "down", "files": {"f": "same"}, "noise": noise})


def test_contexts_differ(store: nx.Store) -> None:
    """Two realizations of one derivation built in other contexts: the dependency's
    chosen realizations differ; realizations of one context differ in files only."""
    first = nx.realize(nx.instantiate(_downstream))
    (noise,) = nx.rrefdeps(first)
    second = nx.realize(nx.instantiate(_downstream), force_rebuild=[noise.dref])
    d = nx.diff(first, second)
    assert not d.config and not d.files
    assert d.context.changed == {
        str(noise.dref): ([str(noise)], [str(next(iter(nx.rrefdeps(second))))])
    }

    b = realize_pipeline(store)
    d = nx.diff(b.runs1[0], b.runs1[1])
    assert not d.config and not d.context and set(d.files.changed) == {"seed.txt"}
    t = nx.diff(b.runs1[0], b.runs2[0])
    assert t.config.changed == {"/lr": (0.1, 0.2)} and not t.context


def test_refusals(store: nx.Store, tmp_path: Path) -> None:
    """A derivation against a realization, a malformed or absent ref."""
    b = realize_pipeline(store)
    with pytest.raises(nx.UsageError, match="two derivations or two realizations"):
        nx.diff(b.train1, b.runs1[0])
    with pytest.raises(nx.RefError):
        nx.diff("nope", b.train1)
    with pytest.raises(nx.StoreError):
        nx.diff(b.train1, nx.DRef("z" * 32, "gone"))
