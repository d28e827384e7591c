"""The store: creating and opening one, where it lives by default, refusing folders that
are not stores, how every function finds it, and the read-only, canonical state of what
is published."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

import nixlet as nx
from nixlet.store import opening as store_mod
from strategies import make_tree, snapshot, stage, store_view, walk_files


def _pipeline(m: nx.Manager, log: str) -> nx.DRef:
    a = stage(m, {"name": "a", "value": 1, "log": log})
    return stage(m, {"name": "b", "value": 2, "src": a, "log": log})


def _tree_build(b: nx.Build) -> None:
    make_tree(
        nx.build_outpath(b),
        [
            {"path": "a.txt", "file": "hello"},
            {"path": "run.sh", "file": "#!/bin/sh\n", "exec": True},
            {"path": "sub/deep/b.txt", "file": "world"},
            {"path": "empty", "dir": True},
            {"path": "link", "symlink": "a.txt"},
        ],
    )


# ---------------------------------------------------------------- initialize


def test_initialize_creates_a_store(tmp_path: Path) -> None:
    """store_initialize creates the folder and its read-only format record."""
    s = nx.store_initialize(tmp_path / "new" / "store")
    assert s.root == tmp_path / "new" / "store"
    fmt = s.root / "format"
    assert json.loads(fmt.read_bytes())["format"] == "nixlet-store"
    assert json.loads(fmt.read_bytes())["version"] == 1
    assert stat.S_IMODE(fmt.stat().st_mode) == 0o444


def test_initialize_is_idempotent(tmp_path: Path) -> None:
    """Initializing an existing store again changes nothing in it."""
    s = nx.store_initialize(tmp_path / "store")
    nx.realize(nx.instantiate(_pipeline, str(tmp_path / "log")))
    before = snapshot(s.root)
    assert nx.store_initialize(tmp_path / "store") == s
    assert nx.store_initialize(str(tmp_path / "store")) == s
    assert snapshot(s.root) == before


def test_initialize_accepts_an_empty_existing_folder(tmp_path: Path) -> None:
    """An existing empty folder becomes a store."""
    (tmp_path / "empty").mkdir()
    assert (nx.store_initialize(tmp_path / "empty").root / "format").exists()


def test_non_store_folder_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """A non-empty folder without a format record raises StoreError, and is left byte for
    byte as it was: no format file, no .tmp or .locks."""
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("precious")
    (folder / "sub" / "data.bin").write_bytes(b"\x00\x01")
    os.chmod(folder / "sub" / "data.bin", 0o600)
    before = snapshot(folder)
    folder_stat = folder.stat()
    with pytest.raises(nx.StoreError, match="not a nixlet store") as e:
        nx.store_initialize(folder)
    assert isinstance(e.value, OSError)
    assert "Choose an empty or new folder" in str(e.value)
    assert snapshot(folder) == before
    assert folder.stat().st_mtime_ns == folder_stat.st_mtime_ns
    assert sorted(os.listdir(folder)) == ["notes.txt", "sub"]


def test_a_file_is_not_a_store(tmp_path: Path) -> None:
    """A path that is a file raises StoreError and the file is untouched."""
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(nx.StoreError):
        nx.store_initialize(path)
    assert path.read_text() == "x"


@pytest.mark.parametrize(
    "content",
    [
        b'{"format":"nixlet-store","version":2}\n',
        b'{"format":"nixlet-store","version":1}\n',  # fields missing
        b"garbage \xff",
        b"",
    ],
)
def test_unknown_format_is_refused(tmp_path: Path, content: bytes) -> None:
    """A store whose format record is not the one this nixlet reads raises StoreError,
    from store_initialize and from any function given the path; it is left untouched."""
    root = tmp_path / "old"
    root.mkdir()
    (root / "format").write_bytes(content)
    (root / "somedir").mkdir()
    before = snapshot(root)
    with pytest.raises(nx.StoreError, match="unknown format"):
        nx.store_initialize(root)
    with pytest.raises(nx.StoreError, match="unknown format"):
        nx.alldrefs(store=root)
    assert snapshot(root) == before


# ---------------------------------------------------------------- default locations


def test_nixlet_store_env_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a path, store_initialize uses $NIXLET_STORE."""
    monkeypatch.setenv("NIXLET_STORE", str(tmp_path / "env-store"))
    assert nx.store_initialize().root == tmp_path / "env-store"


def test_nixlet_store_env_is_used_without_initialize(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no process default, functions open the store $NIXLET_STORE names."""
    s = nx.store_initialize(tmp_path / "env-store")
    store_mod.reset_default()
    monkeypatch.setenv("NIXLET_STORE", str(s.root))
    c = nx.instantiate(_pipeline, str(tmp_path / "log"))
    assert c.store.root == s.root
    nx.realize(c)
    assert set(nx.alldrefs()) == {d.dref for d in c.derivations}
    assert nx.dref2path(c.result).parent == s.root


def test_xdg_data_home_is_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a path or $NIXLET_STORE: $XDG_DATA_HOME/nixlet/store."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert nx.store_initialize().root == tmp_path / "data" / "nixlet" / "store"


def test_home_local_share_is_the_last_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without $XDG_DATA_HOME either: ~/.local/share/nixlet/store."""
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert nx.store_initialize().root == tmp_path / "home" / ".local" / "share" / "nixlet" / "store"


def _no_store_calls() -> list[Any]:
    r = f"rref:{'a' * 32}-{'b' * 32}-x"
    d = f"dref:{'b' * 32}-x"
    return [
        lambda: nx.alldrefs(),
        lambda: nx.allrrefs(),
        lambda: nx.drefrrefs(d),
        lambda: nx.rref2path(r),
        lambda: nx.dref2path(d),
        lambda: nx.instantiate(_pipeline, "/dev/null"),
        lambda: nx.instantiate_inplace(
            nx.mkdrv, {}, nx.match_only(), nx.build_wrapper(_tree_build)
        ),
        lambda: nx.lsref(r),
        lambda: nx.du(),
    ]


@pytest.mark.parametrize("call", _no_store_calls())
def test_no_store_anywhere_is_a_clear_store_error(call: Any) -> None:
    """With no default store and no $NIXLET_STORE, every function raises StoreError saying
    how to get a store."""
    with pytest.raises(nx.StoreError) as e:
        call()
    assert "store_initialize" in str(e.value) and "NIXLET_STORE" in str(e.value)


def test_missing_store_path_is_a_store_error(tmp_path: Path) -> None:
    """Passing a path where there is no store raises StoreError (nothing is created)."""
    with pytest.raises(nx.StoreError, match="store_initialize"):
        nx.alldrefs(store=tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_functions_accept_a_store_or_a_path(tmp_path: Path) -> None:
    """instantiate, realize and the queries take ``store=`` as a Store, a str or a Path,
    and do not need a process default."""
    s = nx.store_initialize(tmp_path / "store")
    store_mod.reset_default()
    log = str(tmp_path / "log")
    for form in (s, str(s.root), s.root):
        c = nx.instantiate(_pipeline, log, store=form)
        r = nx.realize(c, store=form)
        assert nx.rref2path(r, store=form).is_dir()
        assert nx.allrrefs(store=form) == nx.allrrefs(store=s)
        assert nx.alldrefs(store=form) == sorted(d.dref for d in c.derivations)
        assert nx.drefrrefs(c.result, store=form) == [r]
        assert nx.lsref(r, store=form) == ["value.txt"]
    assert len(nx.allrrefs(store=s)) == 2
    with pytest.raises(nx.StoreError):
        nx.alldrefs()  # no default was set by any of these


# ---------------------------------------------------------------- published state


@pytest.fixture
def tree_rref(store: nx.Store) -> nx.RRef:
    """A realization with files, an executable, nested and empty folders and a symlink."""
    c = nx.instantiate(
        lambda m: nx.mkdrv(m, {"name": "tree"}, nx.match_only(), nx.build_wrapper(_tree_build))
    )
    return nx.realize(c)


def test_realization_folders_are_read_only(tree_rref: nx.RRef) -> None:
    """The realization folder, its out/ and every folder inside are 0o555."""
    out = nx.rref2path(tree_rref)
    folders = [out.parent, out] + [p for p in walk_files(out) if p.is_dir() and not p.is_symlink()]
    assert len(folders) >= 5
    for folder in folders:
        assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o555, folder


def test_published_files_are_read_only(tree_rref: nx.RRef) -> None:
    """Every published file is read-only: 0o444, or 0o555 if executable; no write bit."""
    out = nx.rref2path(tree_rref)
    files = [p for p in walk_files(out.parent) if p.is_file() and not p.is_symlink()]
    assert {p.name for p in files} == {"a.txt", "run.sh", "b.txt", "meta.json"}
    for p in files:
        mode = stat.S_IMODE(os.lstat(p).st_mode)
        assert mode == (0o555 if p.name == "run.sh" else 0o444), p


def test_published_mtimes_are_canonical(tree_rref: nx.RRef) -> None:
    """Every published file and symlink has the canonical mtime (1, as in Nix)."""
    out = nx.rref2path(tree_rref)
    items = [p for p in walk_files(out.parent) if p.is_symlink() or p.is_file()]
    assert any(p.is_symlink() for p in items)
    for p in items:
        assert os.lstat(p).st_mtime == 1, p


def test_derivation_records_are_read_only(store: nx.Store, tree_rref: nx.RRef) -> None:
    """A derivation's published record files (config.json, code) are read-only and have
    the canonical mtime, like every other published file."""
    folder = nx.dref2path(tree_rref.dref)
    for name in ("config.json", "code"):
        st = os.lstat(folder / name)
        assert stat.S_IMODE(st.st_mode) & 0o222 == 0, name
        assert st.st_mtime == 1, name


def test_realization_is_readable_through_its_path(tree_rref: nx.RRef) -> None:
    """rref2path points at the files as the build wrote them."""
    out = nx.rref2path(tree_rref)
    assert (out / "a.txt").read_text() == "hello"
    assert (out / "sub" / "deep" / "b.txt").read_text() == "world"
    assert os.readlink(out / "link") == "a.txt"


# ---------------------------------------------------------------- staging


def test_staging_of_dead_processes_is_garbage(store: nx.Store, tree_rref: nx.RRef) -> None:
    """A staging folder no live process holds is garbage; this process's own is not;
    removing garbage leaves the store's objects alone."""
    assert nx.staging_garbage() == []
    dead = store.root / ".tmp" / "otherhost-1-deadbeef"
    (dead / "half").mkdir(parents=True)
    (dead / "half" / "f").write_text("x")
    os.chmod(dead / "half", 0o555)
    view = store_view(store)
    assert nx.staging_garbage() == [dead]
    assert nx.remove_staging_garbage() == 1
    assert not dead.exists()
    assert nx.staging_garbage() == []
    assert store_view(store) == view


def test_derivation_folders_are_readable_by_everyone(tree_rref: nx.RRef) -> None:
    """A derivation folder is 0o755: readable by a group sharing the store (its
    realizations are 0o555), writable by the owner who publishes into it."""
    assert stat.S_IMODE(os.stat(nx.dref2path(tree_rref.dref)).st_mode) == 0o755
