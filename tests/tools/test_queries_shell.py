"""Queries (paths, listings, dependencies, contexts, configs) on a diamond DAG, and the
shell-like helpers: lsref, catref, rmref, du, shellref, dirrw."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

import nixlet as nx
from strategies import stage, store_view, walk_files


@attrs.frozen
class Diamond:
    """a <- b, a <- c, (b, c) <- d, realized."""

    a: nx.DRef
    b: nx.DRef
    c: nx.DRef
    d: nx.DRef
    ra: nx.RRef
    rb: nx.RRef
    rc: nx.RRef
    rd: nx.RRef


def _diamond(m: nx.Manager) -> nx.DRef:
    a = stage(m, {"name": "a", "value": "x" * 1000})
    b = stage(m, {"name": "b", "src": a, "value": 2})
    c = stage(m, {"name": "c", "src": a, "value": 3})
    return stage(m, {"name": "d", "left": b, "right": c, "value": 4})


@pytest.fixture
def dia(store: nx.Store) -> Diamond:
    """A realized diamond in a fresh store."""
    closure = nx.instantiate(_diamond)
    rd = nx.realize(closure)
    a, b, c, d = (x.dref for x in closure.derivations)
    (ra,), (rb,), (rc,) = nx.drefrrefs(a), nx.drefrrefs(b), nx.drefrrefs(c)
    return Diamond(a, b, c, d, ra, rb, rc, rd)


# ---------------------------------------------------------------- queries


def test_paths(store: nx.Store, dia: Diamond) -> None:
    """rref2path is the realization's out/ folder, dref2path the derivation's folder;
    both take refs or their text."""
    assert nx.dref2path(dia.a) == store.root / dia.a.key
    assert nx.rref2path(dia.ra) == store.root / dia.a.key / dia.ra.rhash / "out"
    assert nx.rref2path(str(dia.ra)) == nx.rref2path(dia.ra)
    assert nx.dref2path(str(dia.a)) == nx.dref2path(dia.a)
    assert (nx.rref2path(dia.ra) / "value.txt").read_text() == '"' + "x" * 1000 + '"'


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


# ---------------------------------------------------------------- lsref, catref


def test_lsref(dia: Diamond) -> None:
    """lsref lists a realization's files, or a derivation's records and realizations."""
    assert nx.lsref(dia.ra) == ["value.txt"]
    assert nx.lsref(str(dia.a)) == sorted(["code", "config.json", dia.ra.rhash])
    with pytest.raises(nx.StoreError):
        nx.lsref(nx.RRef("z" * 32, dia.a.dhash, "a"))
    with pytest.raises(nx.RefError):
        nx.lsref("value.txt")


def test_catref(dia: Diamond) -> None:
    """catref reads a file inside a realization."""
    assert nx.catref(dia.rd, "value.txt") == "4"
    assert nx.catref(str(dia.rb), "value.txt") == "2"


@pytest.mark.parametrize(
    "parts",
    [
        (),
        ("..",),
        ("..", "..", "format"),
        (".",),
        ("",),
        ("a/b",),
        ("/etc/passwd",),
        ("..", "meta.json"),
        ("sub", "..", "value.txt"),
    ],
)
def test_catref_refuses_hostile_parts(dia: Diamond, parts: tuple[str, ...]) -> None:
    """Path parts that are empty, '.', '..' or hold a '/' raise RefError: catref cannot
    read outside the realization's files."""
    with pytest.raises(nx.RefError):
        nx.catref(dia.ra, *parts)


def test_catref_of_a_dref_is_a_ref_error(dia: Diamond) -> None:
    """catref reads realizations, not derivations."""
    with pytest.raises(nx.RefError):
        nx.catref(dia.a, "config.json")  # type: ignore[arg-type]


# ---------------------------------------------------------------- rmref


def _without(view: dict[str, object], prefix: str) -> dict[str, object]:
    return {k: v for k, v in view.items() if k != prefix and not k.startswith(prefix + "/")}


def test_rmref_of_a_realization(store: nx.Store, dia: Diamond) -> None:
    """rmref of an RRef removes that realization whole; everything else is intact; a
    later realize builds it again (same RRef for a deterministic stage)."""
    before = store_view(store)
    gone = f"{dia.rd.dref.key}/{dia.rd.rhash}"
    nx.rmref(dia.rd)
    assert not nx.rref2path(dia.rd).parent.exists()
    assert nx.drefrrefs(dia.d) == []
    assert dia.rd not in nx.allrrefs()
    # Everything else is as it was (the derivation folder lost an entry: its mtime moved).
    assert _without(store_view(store), dia.rd.dref.key) == _without(before, dia.rd.dref.key)
    assert {k for k in store_view(store) if k.startswith(dia.rd.dref.key)} == {
        k for k in _without(before, gone) if k.startswith(dia.rd.dref.key)
    }
    assert nx.realize(nx.instantiate(_diamond)) == dia.rd


def test_rmref_of_a_derivation(store: nx.Store, dia: Diamond) -> None:
    """rmref of a DRef removes its record and all its realizations at once; others are
    intact."""
    before = store_view(store)
    nx.rmref(str(dia.b))
    assert not nx.dref2path(dia.b).exists()
    assert dia.b not in nx.alldrefs()
    assert dia.rb not in nx.allrrefs()
    assert store_view(store) == _without(before, dia.b.key)
    with pytest.raises(nx.StoreError):
        nx.lsref(dia.b)


def test_drefcfg_of_a_removed_derivation_is_a_store_error(dia: Diamond) -> None:
    """After rmref of a DRef, drefcfg says it is not in the store (as documented) rather
    than answering from a cache of removed records."""
    assert nx.drefcfg(dia.b).name == "b"
    nx.rmref(dia.b)
    with pytest.raises(nx.StoreError):
        nx.drefcfg(dia.b)


def test_rmref_of_an_absent_ref_is_a_store_error(store: nx.Store, dia: Diamond) -> None:
    """Removing what is not there raises StoreError and changes nothing."""
    nx.rmref(dia.rd)
    before = store_view(store)
    with pytest.raises(nx.StoreError):
        nx.rmref(dia.rd)
    with pytest.raises(nx.StoreError):
        nx.rmref(nx.DRef("z" * 32, "absent"))
    with pytest.raises(nx.RefError):
        nx.rmref("../etc")
    assert store_view(store) == before


def _as_ordinary_user(tmp_path: Path, scenario: Callable[[Path], None]) -> None:
    """Run ``scenario(folder)`` as a non-root user: in this process if it is not root,
    else in a forked child that drops to uid/gid 65534 (root ignores file modes, which
    would hide permission bugs)."""
    if os.geteuid() != 0:
        scenario(tmp_path)
        return
    folder = Path(tempfile.mkdtemp(prefix="nixlet-user-", dir="/tmp"))
    os.chown(folder, 65534, 65534)
    read, write = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                os.close(read)
                os.setgid(65534)
                os.setuid(65534)
                scenario(folder)
            except BaseException:
                os.write(write, traceback.format_exc().encode())
                code = 1
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read, "rb") as f:
            report = f.read().decode()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, report
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _rmref_scenario(folder: Path) -> None:
    store = nx.store_initialize(folder / "store")
    rd = nx.realize(nx.instantiate(_diamond, store=store))
    nx.rmref(rd, store=store)
    assert rd not in nx.allrrefs(store=store)
    nx.rmref(rd.dref, store=store)
    assert rd.dref not in nx.alldrefs(store=store)
    assert len(nx.allrrefs(store=store)) == 3


def test_rmref_works_for_an_ordinary_user(tmp_path: Path) -> None:
    """A user who is not root can remove realizations and derivations from their own
    store (published folders are read-only, which root alone would not notice)."""
    _as_ordinary_user(tmp_path, _rmref_scenario)


# ---------------------------------------------------------------- du


def test_du_sizes(store: nx.Store, dia: Diamond) -> None:
    """du gives, per derivation, the total bytes and each realization's bytes: its files
    plus its metadata."""
    usage = nx.du()
    assert set(usage) == {dia.a, dia.b, dia.c, dia.d}
    for rref in (dia.ra, dia.rb, dia.rc, dia.rd):
        total, per = usage[rref.dref]
        out = nx.rref2path(rref)
        files = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        meta = (out.parent / "meta.json").stat().st_size
        assert per == {rref: files + meta}
        assert total == files + meta
    assert usage[dia.a][0] > 1000  # the 1000-character value


def test_du_of_a_derivation_without_realizations(store: nx.Store, dia: Diamond) -> None:
    """A derivation with no realization uses no realization bytes."""
    nx.rmref(dia.rd)
    assert nx.du()[dia.d] == (0, {})


# ---------------------------------------------------------------- shellref


@pytest.fixture
def fake_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$SHELL set to a script that writes its working folder to a file and exits 7."""
    record = tmp_path / "cwd.txt"
    script = tmp_path / "shell.sh"
    script.write_text(f'#!/bin/sh\npwd -P > "{record}"\nexit 7\n')
    script.chmod(0o755)
    monkeypatch.setenv("SHELL", str(script))
    return record


def test_shellref_opens_the_shell_in_the_refs_folder(
    store: nx.Store, dia: Diamond, fake_shell: Path
) -> None:
    """shellref runs $SHELL in the realization's files (or the derivation's folder, or
    the store root) and returns its exit status."""
    assert nx.shellref(dia.rd) == 7
    assert fake_shell.read_text().strip() == os.path.realpath(nx.rref2path(dia.rd))
    assert nx.shellref(str(dia.d)) == 7
    assert fake_shell.read_text().strip() == os.path.realpath(nx.dref2path(dia.d))
    assert nx.shellref() == 7
    assert fake_shell.read_text().strip() == os.path.realpath(store.root)


def test_shellref_of_a_bad_ref_is_a_ref_error(store: nx.Store, fake_shell: Path) -> None:
    """shellref refuses a malformed ref before starting anything."""
    with pytest.raises(nx.RefError):
        nx.shellref("../..")
    assert not fake_shell.exists()


# ---------------------------------------------------------------- dirrw


def test_dirrw_makes_a_copy_writable(store: nx.Store, tmp_path: Path) -> None:
    """A copy of a realization keeps the read-only modes; dirrw gives the owner write
    access to every folder and file in it, and the store's copy stays read-only."""

    def build(b: nx.Build) -> None:
        out = nx.build_outpath(b)
        (out / "sub" / "deep").mkdir(parents=True)
        (out / "sub" / "deep" / "f.txt").write_text("x")
        (out / "top.txt").write_text("y")
        (out / "link").symlink_to("top.txt")

    r = nx.realize(
        nx.instantiate(
            lambda m: nx.mkdrv(m, {"name": "rw"}, nx.match_only(), nx.build_wrapper(build))
        )
    )
    copy = tmp_path / "copy"
    shutil.copytree(nx.rref2path(r), copy, symlinks=True)
    items = [copy, *(p for p in walk_files(copy) if not p.is_symlink())]
    assert all(not os.lstat(p).st_mode & stat.S_IWUSR for p in items)
    nx.dirrw(copy)
    assert all(os.lstat(p).st_mode & stat.S_IWUSR for p in items)
    (copy / "sub" / "deep" / "new.txt").write_text("z")
    assert os.readlink(copy / "link") == "top.txt"
    original = [nx.rref2path(r), *walk_files(nx.rref2path(r))]
    assert all(not os.lstat(p).st_mode & stat.S_IWUSR for p in original if not p.is_symlink())
