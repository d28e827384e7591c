"""The build helpers a build function uses: its output folders, config, config as
attributes, chosen dependency realizations and paths inside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import nixlet as nx
from strategies import stage

H = "e" * 32


def _introspect(b: nx.Build) -> None:
    """Write down what every build helper returns."""
    c = nx.build_cattrs(b)
    out = nx.build_outpath(b)
    dep_file = nx.build_path(b, [c.src, "value.txt"])
    report = {
        "outpath": str(out),
        "outpaths": [str(p) for p in nx.build_outpaths(b)],
        "staging": str(b.staging),
        "config": nx.build_config(b).to_dict(),
        "config_is_b_config": nx.build_config(b) is b.config,
        "lr": c.lr,
        "nested": c.nested,
        "deref": str(nx.build_deref(b, c.src)),
        "deref_of_object": str(nx.build_deref(b, nx.DRef.parse(c.src))),
        "dep_file": str(dep_file),
        "dep_text": dep_file.read_text(),
        "dep_file_of_object": str(nx.build_path(b, [nx.DRef.parse(c.src), "value.txt"])),
        "promise_path": str(nx.build_path(b, [nx.promise, "own.txt"])),
        "promise_tag_path": str(nx.build_path(b, ["__promise__", "sub", "x"])),
        "context": {str(k): [str(r) for r in v] for k, v in nx.build_context(b).items()},
    }
    nx.build_path(b, [nx.promise, "own.txt"]).write_text("mine")
    (out / "report.json").write_text(json.dumps(report))


def _pipeline(m: nx.Manager) -> nx.DRef:
    src = stage(m, {"name": "src", "value": 41})
    return nx.mkdrv(
        m,
        {
            "name": "user",
            "src": src,
            "lr": 0.1,
            "nested": {"k": [1, 2]},
            "own": [nx.promise, "own.txt"],
        },
        nx.match_only(),
        nx.build_wrapper(_introspect),
    )


@pytest.fixture
def report(store: nx.Store) -> tuple[dict[str, Any], nx.RRef, nx.RRef]:
    """The helpers' answers inside a real build, its RRef and its dependency's RRef."""
    c = nx.instantiate(_pipeline)
    r = nx.realize(c)
    (src,) = nx.drefrrefs(c.derivations[0].dref)
    return json.loads(nx.catref(r, "report.json")), r, src


def test_outpath_is_one_fresh_folder_in_staging(
    store: nx.Store, report: tuple[dict[str, Any], nx.RRef, nx.RRef]
) -> None:
    """build_outpath is the single output folder, inside the build's staging folder in
    the store's staging area; build_outpaths lists just it."""
    data, _, _ = report
    out = Path(data["outpath"])
    assert data["outpaths"] == [data["outpath"]]
    assert out.parent == Path(data["staging"])
    assert Path(data["staging"]).is_relative_to(store.root / ".tmp")


def test_config_and_cattrs(report: tuple[dict[str, Any], nx.RRef, nx.RRef]) -> None:
    """build_config is the derivation's config; build_cattrs exposes its keys as
    attributes (nested values as plain JSON)."""
    data, r, _ = report
    assert data["config"] == nx.drefcfg(r.dref).to_dict()
    assert data["config_is_b_config"] is True
    assert data["lr"] == 0.1
    assert data["nested"] == {"k": [1, 2]}


def test_deref_and_context(report: tuple[dict[str, Any], nx.RRef, nx.RRef]) -> None:
    """build_deref gives the realization chosen for a dependency (from a DRef or its
    text); build_context maps each direct dependency to its chosen RRefs."""
    data, r, src = report
    assert data["deref"] == data["deref_of_object"] == str(src)
    assert data["context"] == {str(src.dref): [str(src)]}
    assert nx.rrefctx(r) == {src.dref: (src,)}


def test_build_path_to_a_dependency_file(report: tuple[dict[str, Any], nx.RRef, nx.RRef]) -> None:
    """build_path of ``[dref, "value.txt"]`` is that file in the chosen realization."""
    data, _, src = report
    assert Path(data["dep_file"]) == nx.rref2path(src) / "value.txt"
    assert data["dep_file_of_object"] == data["dep_file"]
    assert data["dep_text"] == "41"


def test_build_path_of_a_promise_is_in_the_own_output(
    report: tuple[dict[str, Any], nx.RRef, nx.RRef],
) -> None:
    """``[promise, ...]`` (or its stored tag) names a path in the build's own output."""
    data, r, _ = report
    assert Path(data["promise_path"]) == Path(data["outpath"]) / "own.txt"
    assert Path(data["promise_tag_path"]) == Path(data["outpath"]) / "sub" / "x"
    assert nx.catref(r, "own.txt") == "mine"


# ---------------------------------------------------------------- unit: a hand-made Build


def _build(
    store: nx.Store, tmp_path: Path, context: dict[nx.DRef, tuple[nx.RRef, ...]], nouts: int = 1
) -> nx.Build:
    outs = tuple(tmp_path / f"o{i}" for i in range(nouts))
    return nx.Build(
        store, nx.DRef(H, "me"), nx.mkconfig({"name": "me", "a": 1}), context, outs, tmp_path
    )


def test_deref_of_a_non_dependency_is_a_closure_error(store: nx.Store, tmp_path: Path) -> None:
    """Asking for a DRef that is not a direct dependency raises ClosureError saying to put
    it in the config."""
    dep = nx.DRef("a" * 32, "dep")
    b = _build(store, tmp_path, {dep: (nx.RRef("b" * 32, dep.dhash, "dep"),)})
    stranger = nx.DRef("c" * 32, "stranger")
    with pytest.raises(nx.ClosureError, match="put it in the config") as e:
        nx.build_deref(b, stranger)
    assert e.value.dref == stranger
    with pytest.raises(nx.ClosureError):
        nx.build_path(b, [stranger, "f"])
    with pytest.raises(nx.ClosureError):
        nx.build_deref(b, str(stranger))


def test_deref_of_several_choices_is_a_closure_error(store: nx.Store, tmp_path: Path) -> None:
    """A dependency with several chosen realizations has no single deref."""
    dep = nx.DRef("a" * 32, "dep")
    chosen = (nx.RRef("b" * 32, dep.dhash, "dep"), nx.RRef("c" * 32, dep.dhash, "dep"))
    b = _build(store, tmp_path, {dep: chosen})
    with pytest.raises(nx.ClosureError, match="build_context"):
        nx.build_deref(b, dep)
    assert nx.build_context(b)[dep] == chosen


@pytest.mark.parametrize(
    "refpath",
    [
        [],
        "dref:x",
        None,
        ["not-a-dref", "f"],
        [3, "f"],
        [nx.DRef("a" * 32, "dep"), ".."],
        [nx.DRef("a" * 32, "dep"), "."],
        [nx.DRef("a" * 32, "dep"), ""],
        [nx.DRef("a" * 32, "dep"), "a/b"],
        [nx.DRef("a" * 32, "dep"), "/etc"],
        [nx.promise, "..", "x"],
    ],
)
def test_malformed_refpaths_are_ref_errors(store: nx.Store, tmp_path: Path, refpath: Any) -> None:
    """A RefPath must be a list starting with a DRef (or promise) followed by plain names:
    anything else, traversal included, raises RefError."""
    dep = nx.DRef("a" * 32, "dep")
    b = _build(store, tmp_path, {dep: (nx.RRef("b" * 32, dep.dhash, "dep"),)})
    with pytest.raises(nx.RefError):
        nx.build_path(b, refpath)


def test_outpath_of_a_multi_output_build_is_a_build_error(store: nx.Store, tmp_path: Path) -> None:
    """build_outpath refuses a build with several outputs; build_outpaths lists them."""
    b = _build(store, tmp_path, {}, nouts=2)
    with pytest.raises(nx.BuildError, match="build_outpaths"):
        nx.build_outpath(b)
    assert nx.build_outpaths(b) == [tmp_path / "o0", tmp_path / "o1"]


def _derefs_a_stranger(b: nx.Build) -> None:
    nx.build_deref(b, nx.DRef("c" * 32, "stranger"))


def test_helper_errors_inside_a_build_become_build_errors(store: nx.Store) -> None:
    """A helper error raised inside a build surfaces as BuildError whose cause is it."""
    c = nx.instantiate(
        lambda m: nx.mkdrv(m, {"name": "x"}, nx.match_only(), nx.build_wrapper(_derefs_a_stranger))
    )
    with pytest.raises(nx.BuildError) as e:
        nx.realize(c)
    assert isinstance(e.value.cause, nx.ClosureError)
    assert nx.allrrefs() == []


def _two_outputs(b: nx.Build) -> None:
    for i, out in enumerate(nx.build_outpaths(b)):
        (out / "i.txt").write_text(str(i))
        assert out.is_dir() and list(out.iterdir()) == [out / "i.txt"]


def test_outpaths_of_a_multi_output_build(store: nx.Store) -> None:
    """With nouts=3 a build gets three distinct empty folders, each published."""
    c = nx.instantiate(
        lambda m: nx.mkdrv(m, {"name": "x"}, nx.match_all(), nx.build_wrapper(_two_outputs, 3))
    )
    rrefs = nx.realize_many(c)
    assert sorted(nx.catref(r, "i.txt") for r in rrefs) == ["0", "1", "2"]
