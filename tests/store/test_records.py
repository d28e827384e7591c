"""Reading records and listing a store (nixlet.store.records) when the store is not as
nixlet left it: corrupted or unreadable records, stray files and folders, refs removed
while they are read. Every failure is a StoreError naming the file and the ref; listings
leave out what is not theirs.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import nixlet as nx
from nixlet.store import layout, records
from strategies import stage
from unprivileged import as_nobody, public_folder


def _two(m: nx.Manager) -> nx.DRef:
    """a <- b: b's context names a's realization."""
    a = stage(m, {"name": "a", "value": 1})
    return stage(m, {"name": "b", "src": a, "value": 2})


@pytest.fixture
def rb(store: nx.Store) -> nx.RRef:
    """b's realization, built on a's, in a fresh store."""
    return nx.realize(nx.instantiate(_two))


def _replace(path: Path, content: bytes | None) -> None:
    """Put ``content`` at ``path`` (a folder where it is None), whatever was there."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)


# ---------------------------------------------------------------- corrupted records

CORRUPTIONS: dict[str, bytes | None] = {
    "not UTF-8": b"\xff\xfe{",
    "not JSON": b"{",
    "a folder": None,
    "empty": b"",
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupted_config_record(store: nx.Store, rb: nx.RRef, corruption: str) -> None:
    """A config.json that is not a config: StoreError whose path is the file and whose
    ref is the derivation, not UnicodeDecodeError, JSONDecodeError or IsADirectoryError."""
    path = layout.dref_dir(store, rb.dref) / layout.CONFIG_FILE
    _replace(path, CORRUPTIONS[corruption])
    records.forget_config(store, rb.dref)
    with pytest.raises(nx.StoreError) as e:
        records.read_config(store, rb.dref)
    assert e.value.path == path and e.value.ref == rb.dref
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    "content",
    [
        b"\xff",
        b"[]",
        b'{"format": "nixlet/realization/v0", "context": {}, "manifest": {}, "build": {}}',
        b'{"format": "nixlet/realization/v1", "context": {"x": NaN}, "manifest": {}, "build": {}}',
        b'{"format": "nixlet/realization/v1", "context": {"x": ["y"]}, "manifest": {}, '
        b'"build": {}}',
        None,
    ],
)
def test_a_corrupted_meta_record(store: nx.Store, rb: nx.RRef, content: bytes | None) -> None:
    """A meta.json that is not a realization record (bad bytes, another format, a context
    that is not one, NaN, a folder): every reader of it raises StoreError naming the file
    and the realization."""
    path = layout.rref_dir(store, rb) / layout.META_FILE
    _replace(path, content)
    readers: list[Callable[[], Any]] = [
        lambda: records.read_context_refs(store, rb),
        lambda: records.read_build_times(store, rb),
        lambda: nx.rrefctx(rb),
        lambda: nx.rrefdeps(rb),
    ]
    for read in readers:
        with pytest.raises(nx.StoreError) as e:
            read()
        assert e.value.path == path and e.value.ref == rb, str(e.value)


def test_corrupted_build_times(store: nx.Store, rb: nx.RRef) -> None:
    """Build times that are not times: read_build_times (which match_latest uses) raises
    StoreError naming the file and the realization."""
    path = layout.rref_dir(store, rb) / layout.META_FILE
    meta = json.loads(path.read_bytes())
    meta["build"]["started"] = "yesterday"
    _replace(path, json.dumps(meta).encode())
    with pytest.raises(nx.StoreError) as e:
        records.read_build_times(store, rb)
    assert e.value.path == path and e.value.ref == rb
    assert nx.rrefctx(rb) == records.read_context_refs(store, rb)  # the context is intact


def test_a_missing_record_in_a_present_folder_is_corruption(store: nx.Store, rb: nx.RRef) -> None:
    """A realization folder without its meta.json is a corrupted store, and the error says
    so (and what to do), rather than that the ref is absent."""
    path = layout.rref_dir(store, rb) / layout.META_FILE
    path.unlink()
    with pytest.raises(nx.StoreError) as e:
        records.read_meta(store, rb)
    assert e.value.path == path and "corrupted" in str(e.value) and "rmref" in str(e.value)


def test_an_absent_ref_names_the_store(store: nx.Store, rb: nx.RRef) -> None:
    """Records of refs that are not in the store: StoreError saying so, with the ref."""
    absent = nx.RRef("z" * 32, rb.dhash, rb.name)
    with pytest.raises(nx.StoreError) as e:
        records.read_meta(store, absent)
    assert e.value.ref == absent and "is not in the store" in str(e.value)
    stray = nx.DRef("z" * 32, "stray")
    (store.root / stray.key).write_text("a file where a derivation folder would be")
    with pytest.raises(nx.StoreError) as e:
        records.read_config(store, stray)
    assert e.value.ref == stray and "is not in the store" in str(e.value)


def test_an_unreadable_record() -> None:
    """Records another user cannot read (mode 0600, owned by root): StoreError naming the
    file, not PermissionError."""
    with public_folder() as folder:
        store = nx.store_initialize(folder / "store")
        rb = nx.realize(nx.instantiate(_two))
        meta = layout.rref_dir(store, rb) / layout.META_FILE
        config = layout.dref_dir(store, rb.dref) / layout.CONFIG_FILE
        meta.chmod(0o600)
        config.chmod(0o600)

        def scenario() -> None:
            records.forget_config(store, rb.dref)
            for read, path in [
                (lambda: records.read_meta(store, rb), meta),
                (lambda: records.read_config(store, rb.dref), config),
            ]:
                with pytest.raises(nx.StoreError) as e:
                    read()
                assert e.value.path == path and "cannot read" in str(e.value), str(e.value)

        as_nobody(scenario)


# ---------------------------------------------------------------- listings


def test_listings_leave_out_stray_entries(store: nx.Store, rb: nx.RRef) -> None:
    """A file named like a derivation folder, a symlink to one, unknown folders and files
    in the root, and stray files in a derivation folder (one named like a realization
    hash): none is listed, and none makes a listing fail."""
    ra = nx.drefrrefs(nx.rref2dref(nx.rrefdeps(rb).pop()))[0]
    (store.root / f"{'a' * 32}-stray").write_text("x")
    (store.root / f"{'b' * 32}-link").symlink_to(layout.dref_dir(store, ra.dref))
    (store.root / "unknown").mkdir()
    (store.root / "notes.txt").write_text("x")
    folder = layout.dref_dir(store, rb.dref)
    (folder / ("c" * 32)).write_text("a file named like a realization")
    (folder / "notes.txt").write_text("x")
    assert records.list_drefs(store) == sorted([ra.dref, rb.dref])
    assert records.scan_rrefs(store, rb.dref) == [rb]
    assert records.scan_rrefs(store, nx.DRef("a" * 32, "stray")) is None
    assert records.list_rrefs(store, nx.DRef("a" * 32, "stray")) == []


def test_an_unlistable_store_is_a_store_error() -> None:
    """A store folder another user cannot list: StoreError naming it."""
    with public_folder() as folder:
        store = nx.store_initialize(folder / "store")
        rb = nx.realize(nx.instantiate(_two))
        layout.dref_dir(store, rb.dref).chmod(0o700)

        def scenario() -> None:
            with pytest.raises(nx.StoreError) as e:
                records.scan_rrefs(store, rb.dref)
            assert e.value.path == layout.dref_dir(store, rb.dref)
            with pytest.raises(nx.StoreError) as e:
                records.realization_size(store, rb)
            assert e.value.ref == rb

        as_nobody(scenario)


def test_realization_size(store: nx.Store, rb: nx.RRef) -> None:
    """A realization's size is the lstat size of every file and symlink in its folder;
    None once it is removed."""
    folder = layout.rref_dir(store, rb)
    expected = sum(
        os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(folder) for f in files
    )
    assert records.realization_size(store, rb) == expected > 0
    nx.rmref(rb)
    assert records.realization_size(store, rb) is None
