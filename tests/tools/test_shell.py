"""The shell-like helpers (lsref, catref, rmref, du, shellref, dirrw) on a diamond DAG, and
what they raise when asked for what is not there or cannot be read: refs not in the store,
missing files, folders, binary files, other users' stores, stray entries, and a second
process removing refs while ``du`` and the listings run."""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import nixlet as nx
from campaign_stages import HANG_GUARD, child_env, reaped, wait_for
from conftest import campaign_scale
from nixlet.store import layout
from nixlet.store import opening as store_mod
from strategies import Diamond, diamond, realize_diamond, stage, store_view, walk_files
from unprivileged import NOBODY, as_nobody, public_folder


@pytest.fixture
def dia(store: nx.Store) -> Diamond:
    """A realized diamond in a fresh store."""
    return realize_diamond()


def _absent_rref(dia: Diamond) -> nx.RRef:
    return nx.RRef("z" * 32, dia.a.dhash, "a")


def _files(b: nx.Build) -> None:
    """A text file, a binary file, a folder, a symlink to the text file."""
    out = nx.build_outpath(b)
    (out / "log.txt").write_text("épsilon\n")
    (out / "weights.bin").write_bytes(b"\x80\xff\x00")
    (out / "sub").mkdir()
    (out / "sub" / "deep.txt").write_text("deep")
    (out / "latest").symlink_to("log.txt")


@pytest.fixture
def files(store: nx.Store) -> nx.RRef:
    """A realization of ``_files``."""
    return nx.realize(
        nx.instantiate(
            lambda m: nx.mkdrv(m, {"name": "files"}, nx.match_only(), nx.build_wrapper(_files))
        )
    )


# ---------------------------------------------------------------- lsref, catref


def test_lsref(dia: Diamond) -> None:
    """lsref lists a realization's files, or a derivation's records and realizations."""
    assert nx.lsref(dia.ra) == ["value.txt"]
    assert nx.lsref(str(dia.a)) == sorted(["code", "config.json", dia.ra.rhash])
    with pytest.raises(nx.StoreError):
        nx.lsref(nx.RRef("z" * 32, dia.a.dhash, "a"))
    with pytest.raises(nx.RefError):
        nx.lsref("value.txt")


def test_lsref_of_what_is_not_in_the_store(store: nx.Store, dia: Diamond) -> None:
    """lsref of an absent realization, of a derivation whose folder is a stray file, or of
    a removed derivation: StoreError naming the ref, never FileNotFoundError or
    NotADirectoryError."""
    stray = nx.DRef("a" * 32, "stray")
    (store.root / stray.key).write_text("x")
    nx.rmref(dia.b, force=True)
    for ref in (_absent_rref(dia), stray, dia.b, dia.rb):
        with pytest.raises(nx.StoreError) as e:
            nx.lsref(ref)
        assert e.value.ref == ref and "is not in the store" in str(e.value)


def test_catref(dia: Diamond) -> None:
    """catref reads a file inside a realization."""
    assert nx.catref(dia.rd, "value.txt") == "4"
    assert nx.catref(str(dia.rb), "value.txt") == "2"


def test_catref_reads_utf8_and_follows_symlinks(files: nx.RRef) -> None:
    """catref decodes UTF-8, reads files in sub-folders, and follows a symlink of the
    realization as cat would."""
    assert nx.catref(files, "log.txt") == "épsilon\n"
    assert nx.catref(files, "sub", "deep.txt") == "deep"
    assert nx.catref(files, "latest") == "épsilon\n"


@pytest.mark.parametrize("path", [("missing.txt",), ("sub", "missing"), ("log.txt", "below")])
def test_catref_of_a_missing_file(files: nx.RRef, path: tuple[str, ...]) -> None:
    """A file the realization does not have: StoreError naming the file and the ref, and
    pointing to lsref."""
    with pytest.raises(nx.StoreError) as e:
        nx.catref(files, *path)
    assert e.value.ref == files and e.value.path == nx.rref2path(files).joinpath(*path)
    assert "has no file" in str(e.value) and "lsref" in str(e.value)


def test_catref_of_a_folder_or_a_binary_file(files: nx.RRef) -> None:
    """A folder, or a file that is not UTF-8 text: UsageError on the path argument saying
    what to do instead, not IsADirectoryError or UnicodeDecodeError."""
    with pytest.raises(nx.UsageError) as e:
        nx.catref(files, "sub")
    assert e.value.argument == "path" and "is a folder" in str(e.value)
    with pytest.raises(nx.UsageError) as e:
        nx.catref(files, "weights.bin")
    assert e.value.argument == "path" and "read_bytes()" in str(e.value)


def test_catref_of_an_absent_realization(store: nx.Store, dia: Diamond) -> None:
    """catref of a realization that is not in the store (never built, or removed): a
    StoreError saying so, with the ref."""
    nx.rmref(dia.rb, force=True)
    for rref in (_absent_rref(dia), dia.rb):
        with pytest.raises(nx.StoreError) as e:
            nx.catref(rref, "value.txt")
        assert e.value.ref == rref and "is not in the store" in str(e.value)


def test_catref_without_a_path_says_how_to_call_it(dia: Diamond) -> None:
    """catref(rref) with no path: RefError showing the call and pointing to lsref,
    instead of echoing an empty tuple."""
    with pytest.raises(nx.RefError) as e:
        nx.catref(dia.ra)
    assert "catref(rref, 'sub', 'log.txt')" in str(e.value) and "lsref" in str(e.value)
    assert "()" not in str(e.value)


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


def test_lsref_and_catref_of_unreadable_files() -> None:
    """Files and folders another user cannot read: StoreError naming them, never
    PermissionError."""
    with public_folder() as folder:
        store = nx.store_initialize(folder / "store")
        dia = realize_diamond()
        value = nx.rref2path(dia.ra) / "value.txt"
        value.chmod(0o400)
        nx.rref2path(dia.rb).chmod(0o700)

        def scenario() -> None:
            with pytest.raises(nx.StoreError) as e:
                nx.catref(dia.ra, "value.txt", store=store)
            assert e.value.path == value and "cannot read" in str(e.value)
            with pytest.raises(nx.StoreError) as e:
                nx.lsref(dia.rb, store=store)
            assert e.value.path == nx.rref2path(dia.rb, store=store)

        as_nobody(scenario)


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
    assert nx.realize(nx.instantiate(diamond)) == dia.rd


def test_rmref_of_a_derivation(store: nx.Store, dia: Diamond) -> None:
    """rmref of a DRef removes its record and all its realizations at once; others are
    intact."""
    before = store_view(store)
    nx.rmref(str(dia.b), force=True)
    assert not nx.dref2path(dia.b).exists()
    assert dia.b not in nx.alldrefs()
    assert dia.rb not in nx.allrrefs()
    assert store_view(store) == _without(before, dia.b.key)
    with pytest.raises(nx.StoreError):
        nx.lsref(dia.b)


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


def test_rmref_of_a_stray_file_named_like_a_ref(store: nx.Store, dia: Diamond) -> None:
    """A stray file where a derivation or realization folder would be is not a ref:
    rmref says it is not in the store and leaves the file."""
    stray = nx.DRef("a" * 32, "stray")
    (store.root / stray.key).write_text("x")
    (nx.dref2path(dia.d) / ("c" * 32)).write_text("x")
    for ref in (stray, nx.RRef("c" * 32, dia.d.dhash, "d")):
        with pytest.raises(nx.StoreError) as e:
            nx.rmref(ref)
        assert e.value.ref == ref
    assert (store.root / stray.key).read_text() == "x"


def test_rmref_works_for_an_ordinary_user() -> None:
    """A user who is not root can remove realizations and derivations from their own
    store (published folders are read-only, which root alone would not notice)."""
    with public_folder(owner=NOBODY) as folder:

        def scenario() -> None:
            store = nx.store_initialize(folder / "store")
            rd = nx.realize(nx.instantiate(diamond, store=store))
            nx.rmref(rd, store=store)
            assert rd not in nx.allrrefs(store=store)
            nx.rmref(rd.dref, store=store)
            assert rd.dref not in nx.alldrefs(store=store)
            assert len(nx.allrrefs(store=store)) == 3

        as_nobody(scenario)


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


def test_du_ignores_stray_entries(store: nx.Store, dia: Diamond) -> None:
    """Stray files and folders in the store's root and in derivation folders change
    nothing du reports; in particular a file named like a realization is not one of 0
    bytes."""
    before = nx.du()
    (store.root / f"{'a' * 32}-stray").write_text("x")
    (store.root / "unknown").mkdir()
    (nx.dref2path(dia.d) / ("c" * 32)).write_text("x" * 100)
    (nx.dref2path(dia.d) / "notes.txt").write_text("x")
    assert nx.du() == before


def test_du_of_an_unreadable_realization_is_an_error() -> None:
    """A realization another user cannot read: du raises StoreError naming it rather
    than reporting a size it did not read."""
    with public_folder() as folder:
        store = nx.store_initialize(folder / "store")
        dia = realize_diamond()
        nx.rref2path(dia.rc).chmod(0o700)

        def scenario() -> None:
            with pytest.raises(nx.StoreError) as e:
                nx.du(store=store)
            assert e.value.ref == dia.rc and str(nx.rref2path(dia.rc, store=store)) in str(e.value)

        as_nobody(scenario)


_REMOVER = """
import json, sys
from pathlib import Path
import nixlet as nx
from strategies import stage

def fan(m):
    leaves = [stage(m, {"name": f"leaf{i}", "value": i}, nx.match_all(), nouts=3) for i in range(6)]
    return stage(m, {"name": "top", "leaves": leaves, "value": -1})

store, stop, started = nx.store_initialize(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
removed = 0
while not stop.exists():
    closure = nx.instantiate(fan)
    nx.realize(closure)
    for i, drv in enumerate(closure.derivations):
        # Whole derivations and single realizations, in turn.
        nx.rmref(drv.dref if (removed + i) % 2 else nx.drefrrefs(drv.dref)[0], force=True)
    removed += len(closure.derivations)
    started.touch()
print(json.dumps({"removed": removed}))
"""


def _fan(m: nx.Manager) -> nx.DRef:
    """The remover's closure (the same DRefs as in _REMOVER)."""
    leaves = [stage(m, {"name": f"leaf{i}", "value": i}, nx.match_all(), nouts=3) for i in range(6)]
    return stage(m, {"name": "top", "leaves": leaves, "value": -1})


def test_du_and_listings_while_another_process_removes_refs(
    store: nx.Store, tmp_path: Path
) -> None:
    """A second process realizes a closure and removes its refs in a loop (rmref of
    realizations and of whole derivations) while this one calls du, allrrefs, alldrefs and
    drefrrefs thousands of times. Detectors: (1) no call raises; (2) du reports every
    realization with its one size (an RRef names its content, so its size never changes;
    never 0 for one it could not read), each total is the sum of its parts, and the listings
    hold only refs of the closure's derivations. And the race was real: the remover removed
    refs, and the listings saw the store change."""
    nx.realize(nx.instantiate(_fan))
    sizes = {r: size for _, per in nx.du().values() for r, size in per.items()}
    drefs = sorted({r.dref for r in sizes})
    assert len(sizes) == 6 * 3 + 1 and len(drefs) == 7
    stop, started = tmp_path / "stop", tmp_path / "started"
    remover = subprocess.Popen(
        [sys.executable, "-c", _REMOVER, str(store.root), str(stop), str(started)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    errors: list[str] = []
    seen: set[tuple[int, int]] = set()
    calls = campaign_scale(2400, 24000)
    picker = random.Random(7)
    with reaped([remover]):
        wait_for(lambda: started.exists() or remover.poll() is not None, "the remover to start")
        for i in range(calls):
            try:
                if i % 4 == 0:
                    usage = nx.du()
                    for dref, (total, per) in usage.items():
                        assert dref in drefs and total == sum(per.values())
                        for rref, size in per.items():
                            assert size > 0 and sizes.setdefault(rref, size) == size, rref
                    seen.add((0, sum(len(per) for _, per in usage.values())))
                elif i % 4 == 1:
                    rrefs = nx.allrrefs()
                    assert {r.dref for r in rrefs} <= set(drefs)
                    seen.add((1, len(rrefs)))
                elif i % 4 == 2:
                    assert set(nx.alldrefs()) <= set(drefs)
                else:
                    dref = picker.choice(drefs)
                    assert {r.dref for r in nx.drefrrefs(dref)} <= {dref}
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
        stop.touch()
        out, err = remover.communicate(timeout=HANG_GUARD)
    assert remover.returncode == 0, err
    assert errors == [], f"{len(errors)} of {calls} calls failed: {sorted(set(errors))[:5]}"
    assert json.loads(out.splitlines()[-1])["removed"] >= 14
    assert len({n for kind, n in seen if kind == 0}) >= 2
    assert len({n for kind, n in seen if kind == 1}) >= 2


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


def test_shellref_of_an_absent_ref_is_a_store_error(dia: Diamond, fake_shell: Path) -> None:
    """shellref of a ref that is not in the store: StoreError with the ref, and no shell
    started (not FileNotFoundError from the working folder)."""
    with pytest.raises(nx.StoreError) as e:
        nx.shellref(_absent_rref(dia))
    assert e.value.ref == _absent_rref(dia)
    assert not fake_shell.exists()


def test_shellref_without_a_shell_program(
    dia: Diamond, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$SHELL naming no program: UsageError saying to set SHELL."""
    monkeypatch.setenv("SHELL", str(tmp_path / "no-such-shell"))
    with pytest.raises(nx.UsageError) as e:
        nx.shellref(dia.ra)
    assert "SHELL" in str(e.value)


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


def test_dirrw_of_what_is_not_a_folder(tmp_path: Path) -> None:
    """dirrw of a missing path or of a file: UsageError, rather than silently nothing."""
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "missing", tmp_path / "file"):
        with pytest.raises(nx.UsageError) as e:
            nx.dirrw(path)
        assert e.value.argument == "path"


def test_remove_staging_garbage_after_a_broken_tmp(store: nx.Store) -> None:
    """staging_garbage and remove_staging_garbage of a store whose .tmp is a file: a
    StoreError naming it, not NotADirectoryError."""
    subprocess.run(["rm", "-rf", str(store.root / layout.TMP)], check=True)
    (store.root / layout.TMP).write_text("x")
    store_mod.forget(store.root)
    for call in (nx.staging_garbage, nx.remove_staging_garbage):
        with pytest.raises(nx.StoreError) as e:
            call()
        assert e.value.path == store.root / layout.TMP


def _fifo(b: nx.Build) -> None:
    os.mkfifo(nx.build_outpath(b) / "pipe")


def test_a_refused_output_is_garbage_this_process_can_free(store: nx.Store) -> None:
    """An output sealing refuses (a FIFO) fails the build; its staging folder is kept for
    inspection as failed.*, listed by staging_garbage and freed by remove_staging_garbage
    from the same process, as for any failed build."""
    with pytest.raises(nx.BuildError) as e:
        nx.realize(
            nx.instantiate(
                lambda m: nx.mkdrv(m, {"name": "fifo"}, nx.match_only(), nx.build_wrapper(_fifo))
            )
        )
    kept = e.value.staging
    assert kept is not None and (kept / "pipe").exists()
    (garbage,) = nx.staging_garbage()
    assert garbage.name.startswith("failed.") and kept.is_relative_to(garbage)
    assert nx.remove_staging_garbage() == 1
    assert not garbage.exists() and nx.staging_garbage() == []
