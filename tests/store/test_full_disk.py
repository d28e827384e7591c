"""A full disk, for real: each test puts its store on a small tmpfs of its own (mounted here;
the suite runs as root) and fills it.

A build whose outputs fill the disk, and a publication whose records do not fit, give a
``StoreError`` naming the store and ENOSPC; nothing of the failed work stays in staging to
hold the space; the store stays valid; and once the user frees space (``rmref``,
``remove_staging_garbage``, deleting their own files) a realize succeeds in the same
process. A build function that itself runs out of space fails like any build: a
``BuildError`` whose staging folder is kept for inspection until
``remove_staging_garbage`` frees it.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import nixlet as nx
from campaign_stages import verify_store
from nixlet.store import layout
from nixlet.store import opening as store_mod

#: The tmpfs's size: a few hundred pages, filled in milliseconds.
DISK = "2m"
#: A tmpfs counts its space in pages; an empty file takes none.
PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh tmpfs of ``DISK`` bytes, unmounted at the end (after this process lets go of
    the store on it: its root descriptor and staging lock)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        store_mod.forget(mount / "store")
        store_mod.reset_default()
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def store(disk: Path) -> nx.Store:
    """A store on the small disk, made the default."""
    return nx.store_initialize(disk / "store")


def _free(path: Path) -> int:
    """Bytes an unprivileged write may still take on the filesystem of ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _fill(disk: Path, name: str = "filler") -> Path:
    """Fill the disk to its last byte with a file of the user's, outside the store."""
    path = disk / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (1 << 16, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    assert _free(disk) == 0
    return path


def _staged(store: nx.Store) -> list[str]:
    """What this store's staging roots hold (the roots, their lock files and the process's
    temporary GC roots aside)."""
    tmp = store.root / layout.TMP
    roots = [p for p in tmp.iterdir() if p.is_dir()]
    found = [p for root in roots for p in root.iterdir() if p.name != "roots"]
    return sorted(str(p.relative_to(tmp)) for p in found)


def _stage(name: str, write: nx.BuildFunction, nouts: int = 1) -> nx.Closure:
    return nx.instantiate(
        lambda m: nx.mkdrv(m, {"name": name}, nx.match_all(), nx.build_wrapper(write, nouts))
    )


def _small(b: nx.Build) -> None:
    (nx.build_outpath(b) / "small.txt").write_text("fits")


def _up_to_the_brim(b: nx.Build) -> None:
    """Outputs that take every byte left, so that sealing (meta.json) finds none."""
    out = nx.build_outpath(b)
    (out / "data.bin").write_bytes(b"d" * _free(out))


def _two_outputs_to_the_brim(b: nx.Build) -> None:
    first, second = nx.build_outpaths(b)
    (first / "small.txt").write_text("fits")
    (second / "data.bin").write_bytes(b"d" * _free(second))


def _linked_big_input(b: nx.Build) -> None:
    """A hardlinked output taking two thirds of the disk: sealing copies it (the build's
    original must not become part of the store), which does not fit."""
    scratch = b.staging / "input.bin"
    scratch.write_bytes(b"i" * (_free(scratch.parent) * 2 // 3))
    os.link(scratch, nx.build_outpath(b) / "input.bin")


def _too_big(b: nx.Build) -> None:
    (nx.build_outpath(b) / "data.bin").write_bytes(b"d" * (4 << 20))


def _assert_full_store_error(error: nx.StoreError, store: nx.Store) -> None:
    assert "ENOSPC" in str(error) and str(store.root) in str(error), str(error)
    assert error.path == store.root


@pytest.mark.parametrize("write", [_up_to_the_brim, _linked_big_input])
def test_build_whose_outputs_fill_the_disk(
    disk: Path, store: nx.Store, write: nx.BuildFunction
) -> None:
    """Outputs that leave no room to seal them (meta.json, or the private copy of a
    hardlinked file) give a StoreError naming the store and ENOSPC; nothing of the build
    stays in staging, so the space comes back at once; the store is valid; the next
    realize succeeds in the same process."""
    free_before = _free(disk)
    with pytest.raises(nx.StoreError) as e:
        nx.realize(_stage("brim", write))
    _assert_full_store_error(e.value, store)
    assert _staged(store) == []
    assert nx.staging_garbage() == []
    assert _free(disk) == free_before
    assert verify_store(store.root).rrefs == frozenset()
    rref = nx.realize(_stage("after", _small))
    assert nx.catref(rref, "small.txt") == "fits"
    assert verify_store(store.root).rrefs == {rref}


def test_build_of_several_outputs_filling_the_disk_leaves_none_behind(
    disk: Path, store: nx.Store
) -> None:
    """When the first of two outputs cannot be sealed, the second (which holds the space)
    goes too: nothing of the build stays in this live process's staging, where no garbage
    collection would find it."""
    free_before = _free(disk)
    with pytest.raises(nx.StoreError) as e:
        nx.realize_many(_stage("two", _two_outputs_to_the_brim, nouts=2))
    _assert_full_store_error(e.value, store)
    assert _staged(store) == []
    assert _free(disk) == free_before
    assert nx.allrrefs() == []
    assert nx.catref(nx.realize(_stage("after", _small)), "small.txt") == "fits"


def test_publish_whose_records_hit_enospc(disk: Path, store: nx.Store) -> None:
    """A build staged while there was room, published once the disk is full: writing the
    new derivation's records fails. publish raises a StoreError naming the store and
    ENOSPC, removes the staged object (.tmp holds nothing of it), publishes nothing; after
    the user deletes their own file, a realize succeeds in the same process."""
    closure = _stage("late", _small)
    with nx.plan(closure) as p:
        (step,) = p.ready()
        staged = nx.build_step(step)
        (obj,) = staged.objects
        assert obj is not None and os.path.isdir(obj)
        filler = _fill(disk)
        with pytest.raises(nx.StoreError) as e:
            nx.publish(staged)
    _assert_full_store_error(e.value, store)
    assert not os.path.exists(obj)
    assert _staged(store) == []
    assert nx.alldrefs() == []
    verify_store(store.root)
    filler.unlink()
    rref = nx.realize(closure)
    assert rref == staged.rrefs[0]  # the same build, published this time
    assert verify_store(store.root).rrefs == {rref}


def test_realize_whose_records_hit_enospc(disk: Path, store: nx.Store) -> None:
    """The disk one page short of full: the build (an empty file) and its meta.json fit,
    the new derivation's config record does not. realize raises a StoreError naming the
    store and ENOSPC; the page meta.json took is free again (nothing staged is left);
    after the user deletes their file, the same realize succeeds."""
    filler = _fill(disk)
    os.truncate(filler, filler.stat().st_size - PAGE)
    assert _free(disk) == PAGE
    closure = _stage("one-page", _empty)
    with pytest.raises(nx.StoreError) as e:
        nx.realize(closure)
    _assert_full_store_error(e.value, store)
    assert _free(disk) == PAGE
    assert _staged(store) == []
    assert nx.alldrefs() == []
    filler.unlink()
    rref = nx.realize(closure)
    assert verify_store(store.root).rrefs == {rref}


def test_full_disk_freed_by_rmref(disk: Path, store: nx.Store) -> None:
    """A store filled by its own realizations: a realize fails with a full-store error,
    leaves the store as it was, and succeeds after rmref frees a realization."""
    ballast = nx.realize(_stage("ballast", _up_to_the_brim_but_a_few_pages))
    _fill(disk)
    before = verify_store(store.root)
    with pytest.raises(nx.StoreError) as e:
        nx.realize(_stage("after", _empty))
    _assert_full_store_error(e.value, store)
    assert verify_store(store.root) == before
    assert _staged(store) == []
    nx.rmref(ballast)
    rref = nx.realize(_stage("after", _empty))
    assert verify_store(store.root).rrefs == {rref}


def _up_to_the_brim_but_a_few_pages(b: nx.Build) -> None:
    """Outputs leaving room for their own records (meta.json, config.json, code)."""
    out = nx.build_outpath(b)
    (out / "data.bin").write_bytes(b"d" * (_free(out) - 4 * PAGE))


def _empty(b: nx.Build) -> None:
    """An empty file: on a tmpfs it takes no page, so this build runs on a full disk and
    the disk is full when its realization is sealed."""
    (nx.build_outpath(b) / "empty").touch()


def test_build_function_out_of_space_keeps_its_staging(disk: Path, store: nx.Store) -> None:
    """A build function that itself runs out of space fails as a build: BuildError whose
    cause is the ENOSPC OSError, its staging folder kept (renamed failed.*) for
    inspection; remove_staging_garbage frees it from the same process, and a realize
    then succeeds."""
    with pytest.raises(nx.BuildError) as e:
        nx.realize(_stage("huge", _too_big))
    error = e.value
    assert isinstance(error.cause, OSError) and error.cause.errno == errno.ENOSPC
    kept = error.staging
    assert kept is not None and kept.is_dir() and kept.name.startswith("failed.")
    assert _free(disk) < 64 << 10  # what the build wrote is still there, for inspection
    assert nx.staging_garbage() == [kept]
    assert nx.remove_staging_garbage() == 1
    assert not kept.exists() and _free(disk) > 1 << 20
    assert nx.catref(nx.realize(_stage("after", _small)), "small.txt") == "fits"
    verify_store(store.root)
