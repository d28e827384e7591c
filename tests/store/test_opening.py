"""Opening a store: ``store_initialize``, ``open_store`` (through ``store=``) and the default
store, with the paths users really pass (empty, under a file, unwritable, a store with a
broken ``.tmp`` or ``.locks``, none at all), and realizing in a store the user cannot
write (another user's, or a read-only mount). Each failure is a nixlet error that names the
path and says what to do, and leaves the folder as it was.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import nixlet as nx
from campaign_stages import verify_store
from nixlet.store import layout
from nixlet.store import opening as store_mod
from strategies import snapshot, stage, store_view
from unprivileged import NOBODY, as_nobody, public_folder

# ---------------------------------------------------------------- the path argument


def test_an_empty_path_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """store_initialize("") would make the current folder a store: UsageError, and the
    current folder (empty or not) is untouched. The same for store=""."""
    for name, content in (("empty", False), ("project", True)):
        cwd = tmp_path / name
        cwd.mkdir()
        if content:
            (cwd / "notes.txt").write_text("mine")
        monkeypatch.chdir(cwd)
        before = snapshot(cwd)
        with pytest.raises(nx.UsageError) as e:
            nx.store_initialize("")
        assert e.value.argument == "path"
        assert "store_initialize()" in str(e.value)
        with pytest.raises(nx.UsageError) as e:
            nx.alldrefs(store="")
        assert e.value.argument == "store"
        assert snapshot(cwd) == before


@pytest.mark.parametrize("path", [b"/tmp/store", 3, "/tmp/a\0b"])
def test_a_path_that_is_not_one_is_a_usage_error(path: object) -> None:
    """Bytes, numbers and paths with a NUL character are refused as arguments, not left to
    fail deep inside os."""
    with pytest.raises(nx.UsageError) as e:
        nx.store_initialize(path)  # type: ignore[arg-type]
    assert e.value.argument == "path"


def test_a_path_under_a_regular_file(tmp_path: Path) -> None:
    """A store path whose parent is a file: StoreError naming that file; the file is
    untouched."""
    file = tmp_path / "results.csv"
    file.write_text("a,b\n")
    with pytest.raises(nx.StoreError) as e:
        nx.store_initialize(file / "deeper" / "store")
    assert e.value.path == file
    assert str(file) in str(e.value) and "is a file" in str(e.value)
    assert file.read_text() == "a,b\n"


def test_a_path_that_is_a_regular_file(tmp_path: Path) -> None:
    """A store path that is a file: StoreError naming it."""
    file = tmp_path / "store"
    file.write_text("x")
    with pytest.raises(nx.StoreError) as e:
        nx.store_initialize(file)
    assert e.value.path == file and "not a folder" in str(e.value)


def test_a_store_in_an_unwritable_folder() -> None:
    """nobody asking for a store inside root's folder: StoreError naming the store path
    and what to do; nothing is created."""
    with public_folder() as folder:
        target = folder / "sub" / "store"

        def scenario() -> None:
            with pytest.raises(nx.StoreError) as e:
                nx.store_initialize(target)
            assert e.value.path == target
            assert str(target) in str(e.value) and "choose a folder you can write" in str(e.value)

        as_nobody(scenario)
        assert os.listdir(folder) == []


def test_an_empty_unwritable_folder() -> None:
    """An existing empty folder nobody cannot write: making the store's format record
    fails; StoreError naming it; the folder stays empty."""
    with public_folder() as folder:

        def scenario() -> None:
            with pytest.raises(nx.StoreError) as e:
                nx.store_initialize(folder)
            assert e.value.path == folder and str(folder) in str(e.value)
            assert "Permission denied" in str(e.value), str(e.value)

        as_nobody(scenario)
        assert os.listdir(folder) == []


# ---------------------------------------------------------------- .tmp and .locks


@pytest.mark.parametrize("name", [layout.TMP, layout.LOCKS])
def test_a_work_folder_that_is_a_file(store: nx.Store, name: str) -> None:
    """A file where .tmp or .locks should be: store_initialize raises StoreError naming it
    and saying to remove it; the store is unchanged; reading the store still works; once
    the file is removed, store_initialize and a realize work."""
    rref = nx.realize(nx.instantiate(stage, {"name": "before", "value": "before"}))
    broken = store.root / name
    subprocess.run(["rm", "-rf", str(broken)], check=True)
    broken.write_text("not a folder")
    store_mod.forget(store.root)  # as a new process would see it
    before = snapshot(store.root)
    with pytest.raises(nx.StoreError) as e:
        nx.store_initialize(store.root)
    assert e.value.path == broken and "remove it" in str(e.value)
    assert snapshot(store.root) == before
    assert nx.allrrefs(store=store.root) == [rref]
    assert nx.catref(rref, "value.txt", store=store.root) == '"before"'
    broken.unlink()
    nx.store_initialize(store.root)
    other = nx.realize(nx.instantiate(stage, {"name": "after", "value": "after"}))
    assert verify_store(store.root).rrefs == {rref, other}


def test_a_new_store_with_a_work_folder_that_is_a_file(tmp_path: Path) -> None:
    """An otherwise empty folder holding a file named .tmp: refused before anything is
    written (no format record)."""
    root = tmp_path / "store"
    root.mkdir()
    (root / layout.TMP).write_text("x")
    with pytest.raises(nx.StoreError) as e:
        nx.store_initialize(root)
    assert e.value.path == root / layout.TMP
    assert sorted(os.listdir(root)) == [layout.TMP]


@pytest.mark.parametrize("name", [layout.TMP, layout.LOCKS])
def test_a_missing_work_folder_is_made_again(store: nx.Store, name: str) -> None:
    """.tmp and .locks hold no object: removed by hand, they are made again by the next
    build, in this process, which then succeeds."""
    nx.realize(nx.instantiate(stage, {"name": "first", "value": "first"}))
    subprocess.run(["rm", "-rf", str(store.root / name)], check=True)
    rref = nx.realize(nx.instantiate(stage, {"name": "second", "value": "second"}))
    assert (store.root / name).is_dir()
    assert nx.catref(rref, "value.txt") == '"second"'


def test_a_locks_file_stops_a_build_with_a_store_error(store: nx.Store) -> None:
    """A file where .locks should be, found by a build: StoreError naming .locks and
    saying to remove it, not NotADirectoryError; the store is unchanged."""
    subprocess.run(["rm", "-rf", str(store.root / layout.LOCKS)], check=True)
    (store.root / layout.LOCKS).write_text("x")
    before = store_view(store)
    with pytest.raises(nx.StoreError) as e:
        nx.realize(nx.instantiate(stage, {"name": "x", "value": "x"}))
    assert layout.LOCKS in str(e.value) and "remove it" in str(e.value)
    assert store_view(store) == before


# ---------------------------------------------------------------- no store chosen


def test_no_store_chosen_says_how_to_choose_one(tmp_path: Path) -> None:
    """Without store_initialize() and without NIXLET_STORE, the error asks for
    store_initialize() (showing the default location) or NIXLET_STORE, not for a path the
    user does not need."""
    with pytest.raises(nx.StoreError) as e:
        nx.alldrefs()
    message = str(e.value)
    assert "nixlet.store_initialize()" in message and "NIXLET_STORE" in message
    assert str(tmp_path / "xdg" / "nixlet" / "store") in message  # conftest's XDG_DATA_HOME
    assert "store_initialize(path)" not in message and "store=" not in message
    nx.store_initialize()
    assert nx.alldrefs() == []


def test_a_store_argument_naming_no_store(tmp_path: Path) -> None:
    """store= naming a folder without a store: StoreError giving the call that makes one."""
    with pytest.raises(nx.StoreError) as e:
        nx.alldrefs(store=tmp_path / "nothing")
    assert f"store_initialize('{tmp_path / 'nothing'}')" in str(e.value)
    assert not (tmp_path / "nothing").exists()


# ---------------------------------------------------------------- a store you cannot write


@pytest.fixture
def roots_store() -> Iterator[nx.Store]:
    """A store owned by root, in a folder nobody can reach, holding one realization of
    ``stage`` named "built"."""
    with public_folder() as folder:
        store = nx.store_initialize(folder / "store")
        nx.realize(nx.instantiate(stage, {"name": "built", "value": "built"}))
        yield store


def _everything(root: Path) -> dict[str, tuple[object, ...]]:
    """Every file of a store, staging and locks included, with owners."""
    view = snapshot(root)
    owners = {rel: os.lstat(root / rel).st_uid for rel in view}
    return {rel: (*view[rel], owners[rel]) for rel in view}


def test_realize_in_another_users_store(roots_store: nx.Store) -> None:
    """nobody, in root's store: what is built is found (no lock needed), a build that is
    needed gives a StoreError naming the store (not PermissionError), rmref too; nothing
    in the store changes, staging and locks included."""
    root = roots_store.root
    built = nx.realize(nx.instantiate(stage, {"name": "built", "value": "built"}))
    store_mod.forget(root)
    before = _everything(root)

    def scenario() -> None:
        store_mod.reset_default()
        nx.store_initialize(root)
        assert nx.realize(nx.instantiate(stage, {"name": "built", "value": "built"})) == built
        with pytest.raises(nx.StoreError) as e:
            nx.realize(nx.instantiate(stage, {"name": "new", "value": "new"}))
        assert str(root) in str(e.value), str(e.value)
        with pytest.raises(nx.StoreError) as e:
            nx.rmref(built)
        assert str(root) in str(e.value), str(e.value)

    as_nobody(scenario)
    assert _everything(root) == before
    assert not any(os.lstat(root / rel).st_uid == NOBODY for rel in snapshot(root))


def test_realize_in_a_read_only_mount(tmp_path: Path) -> None:
    """A store on a filesystem mounted read-only (root, to whom modes mean nothing, is
    refused too): realize finds what is built, a needed build gives a StoreError naming the
    store, and the store is unchanged."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        nx.store_initialize(disk / "store")
        built = nx.realize(nx.instantiate(stage, {"name": "built", "value": "built"}))
        store_mod.forget(disk / "store")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        before = snapshot(disk)
        store = nx.store_initialize(disk / "store")
        assert nx.realize(nx.instantiate(stage, {"name": "built", "value": "built"})) == built
        with pytest.raises(nx.StoreError) as e:
            nx.realize(nx.instantiate(stage, {"name": "new", "value": "new"}))
        assert str(store.root) in str(e.value), str(e.value)
        assert snapshot(disk) == before
    finally:
        store_mod.forget(disk / "store")
        store_mod.reset_default()
        subprocess.run(["umount", str(disk)], check=True)
