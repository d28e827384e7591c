"""Queries (paths, listings, dependencies, contexts, configs) on a diamond DAG, and what they
raise when the store is not as asked: refs that are not in it, records that cannot be read,
stray entries, a broken ``.tmp`` or ``.locks``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import nixlet as nx
from nixlet.store import layout
from nixlet.store import opening as store_mod
from strategies import Diamond, realize_diamond
from unprivileged import as_nobody, public_folder


@pytest.fixture
def dia(store: nx.Store) -> Diamond:
    """A realized diamond in a fresh store."""
    return realize_diamond()


ABSENT_DREF = nx.DRef("z" * 32, "absent")


def _absent_rref(dia: Diamond) -> nx.RRef:
    return nx.RRef("z" * 32, dia.a.dhash, "a")


# ---------------------------------------------------------------- queries


def test_paths(store: nx.Store, dia: Diamond) -> None:
    """rref2path is the realization's out/ folder, dref2path the derivation's folder;
    both take refs or their text."""
    assert nx.dref2path(dia.a) == store.root / dia.a.key
    assert nx.rref2path(dia.ra) == store.root / dia.a.key / dia.ra.rhash / "out"
    assert nx.rref2path(str(dia.ra)) == nx.rref2path(dia.ra)
    assert nx.dref2path(str(dia.a)) == nx.dref2path(dia.a)
    assert (nx.rref2path(dia.ra) / "value.txt").read_text() == '"' + "x" * 1000 + '"'


def test_paths_are_computed_not_looked_up(store: nx.Store, dia: Diamond) -> None:
    """rref2path and dref2path of refs that are not in the store give their would-be
    paths without looking (as documented); a malformed ref is a RefError."""
    assert nx.rref2path(_absent_rref(dia)) == store.root / dia.a.key / ("z" * 32) / "out"
    assert nx.dref2path(ABSENT_DREF) == store.root / ABSENT_DREF.key
    with pytest.raises(nx.RefError):
        nx.rref2path("rref:nope")
    with pytest.raises(nx.RefError):
        nx.dref2path(str(dia.ra))


def test_listings(dia: Diamond) -> None:
    """alldrefs, allrrefs and drefrrefs list what the store holds."""
    assert nx.alldrefs() == sorted([dia.a, dia.b, dia.c, dia.d])
    assert sorted(nx.allrrefs()) == sorted([dia.ra, dia.rb, dia.rc, dia.rd])
    assert len(nx.allrrefs()) == 4
    assert nx.drefrrefs(dia.d) == [dia.rd]
    assert nx.drefrrefs(nx.DRef("z" * 32, "absent")) == []


def test_drefdeps_is_transitive(dia: Diamond) -> None:
    """drefdeps gives every derivation needed, transitively, without the start ones."""
    assert nx.drefdeps(dia.d) == {dia.a, dia.b, dia.c}
    assert nx.drefdeps(str(dia.b)) == {dia.a}
    assert nx.drefdeps([dia.b, dia.c]) == {dia.a}
    assert nx.drefdeps(dia.a) == set()


def test_rrefdeps_is_transitive(dia: Diamond) -> None:
    """rrefdeps gives every realization a realization was built from, transitively."""
    assert nx.rrefdeps(dia.rd) == {dia.ra, dia.rb, dia.rc}
    assert nx.rrefdeps(str(dia.rb)) == {dia.ra}
    assert nx.rrefdeps([dia.rb, dia.rc]) == {dia.ra}
    assert nx.rrefdeps(dia.ra) == set()


def test_rrefctx(dia: Diamond) -> None:
    """rrefctx maps each direct dependency to the RRefs chosen for it."""
    assert nx.rrefctx(dia.rd) == {dia.b: (dia.rb,), dia.c: (dia.rc,)}
    assert nx.rrefctx(dia.rb) == {dia.a: (dia.ra,)}
    assert nx.rrefctx(dia.ra) == {}


def test_drefcfg(dia: Diamond) -> None:
    """drefcfg reads a derivation's config back from the store."""
    cfg = nx.drefcfg(dia.d)
    assert cfg.to_dict() == {"name": "d", "left": str(dia.b), "right": str(dia.c), "value": 4}
    assert cfg.deps == (dia.b, dia.c)


def test_queries_of_absent_refs_are_store_errors(dia: Diamond) -> None:
    """Asking about refs that are not in the store raises StoreError."""
    with pytest.raises(nx.StoreError):
        nx.drefcfg(nx.DRef("z" * 32, "absent"))
    with pytest.raises(nx.StoreError):
        nx.rrefctx(nx.RRef("z" * 32, dia.a.dhash, "a"))


def test_absent_refs_are_named_in_the_error(store: nx.Store, dia: Diamond) -> None:
    """drefcfg, rrefctx, drefdeps and rrefdeps of refs that are not in the store raise a
    StoreError whose ref is the one missing, saying it is not in the store, including when
    the missing one is a dependency met on the way."""
    absent = _absent_rref(dia)
    for query, ref in [
        (lambda: nx.drefcfg(ABSENT_DREF), ABSENT_DREF),
        (lambda: nx.drefdeps(ABSENT_DREF), ABSENT_DREF),
        (lambda: nx.drefdeps([dia.d, ABSENT_DREF]), ABSENT_DREF),
        (lambda: nx.rrefctx(absent), absent),
        (lambda: nx.rrefdeps([absent]), absent),
    ]:
        with pytest.raises(nx.StoreError) as e:
            query()
        assert e.value.ref == ref and "is not in the store" in str(e.value), str(e.value)
    nx.rmref(dia.ra, force=True)
    with pytest.raises(nx.StoreError) as e:
        nx.rrefdeps(dia.rd)
    assert e.value.ref == dia.ra


def test_deps_of_something_that_is_not_a_ref(dia: Diamond) -> None:
    """drefdeps and rrefdeps of a value that is no ref nor list of refs: RefError, not
    TypeError from iterating it."""
    for query in (nx.drefdeps, nx.rrefdeps):
        with pytest.raises(nx.RefError):
            query(3)  # type: ignore[arg-type]
        with pytest.raises(nx.RefError):
            query([str(dia.a), None])  # type: ignore[list-item]


def test_drefcfg_of_a_removed_derivation_is_a_store_error(dia: Diamond) -> None:
    """After rmref of a DRef, drefcfg says it is not in the store (as documented) rather
    than answering from a cache of removed records."""
    assert nx.drefcfg(dia.b).name == "b"
    nx.rmref(dia.b, force=True)
    with pytest.raises(nx.StoreError):
        nx.drefcfg(dia.b)


def test_queries_of_unreadable_records() -> None:
    """Records and folders another user cannot read (a's records, c's folder): each query
    meeting one, first or on its way, raises StoreError naming the file or folder, never
    PermissionError."""
    with public_folder() as folder:
        store = nx.store_initialize(folder / "store")
        dia = realize_diamond()
        meta_a = layout.rref_dir(store, dia.ra) / layout.META_FILE
        config_a = layout.dref_dir(store, dia.a) / layout.CONFIG_FILE
        meta_a.chmod(0o600)
        config_a.chmod(0o600)
        layout.dref_dir(store, dia.c).chmod(0o700)
        store_mod.forget(store.root)

        def scenario() -> None:
            for query, path in [
                (lambda: nx.drefcfg(dia.a, store=store.root), config_a),
                (lambda: nx.drefdeps(dia.b, store=store.root), config_a),
                (lambda: nx.rrefctx(dia.ra, store=store.root), meta_a),
                (lambda: nx.rrefdeps(dia.rb, store=store.root), meta_a),
                (lambda: nx.allrrefs(store=store.root), layout.dref_dir(store, dia.c)),
                (lambda: nx.drefrrefs(dia.c, store=store.root), layout.dref_dir(store, dia.c)),
            ]:
                with pytest.raises(nx.StoreError) as e:
                    query()
                assert e.value.path == path and str(path) in str(e.value), str(e.value)
            assert nx.alldrefs(store=store.root) == sorted([dia.a, dia.b, dia.c, dia.d])

        as_nobody(scenario)


# ---------------------------------------------------------------- listings of odd stores


def test_listings_leave_out_stray_entries(store: nx.Store, dia: Diamond) -> None:
    """A file named like a derivation folder, unknown folders and files in the root, and
    stray files in a derivation folder (one named like a realization hash) are neither
    listed nor fatal to alldrefs, allrrefs or drefrrefs."""
    stray_dref = nx.DRef("a" * 32, "stray")
    (store.root / stray_dref.key).write_text("x")
    (store.root / "unknown").mkdir()
    (store.root / "unknown" / "f").write_text("x")
    (store.root / "notes.txt").write_text("x")
    (nx.dref2path(dia.d) / ("c" * 32)).write_text("a file named like a realization")
    (nx.dref2path(dia.d) / "notes.txt").write_text("x")
    assert nx.alldrefs() == sorted([dia.a, dia.b, dia.c, dia.d])
    assert nx.allrrefs() == sorted([dia.ra, dia.rb, dia.rc, dia.rd])
    assert nx.drefrrefs(dia.d) == [dia.rd]
    assert nx.drefrrefs(stray_dref) == []


@pytest.mark.parametrize("damage", ["tmp file", "locks file", "both missing"])
def test_listings_of_a_store_with_broken_work_folders(
    store: nx.Store, dia: Diamond, damage: str
) -> None:
    """.tmp or .locks replaced by a file, or both removed (a store copied without them):
    a process opening the store still lists and reads everything."""
    for name in (layout.TMP, layout.LOCKS):
        if damage == "both missing" or damage.startswith(name[1:]):
            subprocess.run(["rm", "-rf", str(store.root / name)], check=True)
            if damage != "both missing":
                (store.root / name).write_text("not a folder")
    store_mod.forget(store.root)  # as a new process would see it
    store_mod.reset_default()
    root = store.root
    assert nx.alldrefs(store=root) == sorted([dia.a, dia.b, dia.c, dia.d])
    assert nx.allrrefs(store=root) == sorted([dia.ra, dia.rb, dia.rc, dia.rd])
    assert nx.drefrrefs(dia.d, store=root) == [dia.rd]
    assert nx.rrefdeps(dia.rd, store=root) == {dia.ra, dia.rb, dia.rc}
    assert nx.drefcfg(dia.d, store=root).name == "d"
    assert set(nx.du(store=root)) == {dia.a, dia.b, dia.c, dia.d}
    assert nx.catref(dia.rd, "value.txt", store=Path(root)) == "4"
