"""Closure archives: ``export`` and ``import_`` round trip in all three compressions,
give the same bytes for the same closure, skip what a store holds, and refuse every kind of
hostile archive (built here with tarfile at a low level) with a StoreError naming the
member, leaving the store byte for byte as it was and nothing in ``.tmp`` but this
process's own, empty staging root."""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import zstandard

import nixlet as nx
import strategies as S
from nixlet.store import staging

# ---------------------------------------------------------------- a source store

#: A realization with nested folders, an executable, an empty file, a non-ASCII name and
#: symlinks that stay inside it (one through a folder above its own).
TREE: S.TreeSpec = [
    {"path": "data/x.bin", "file": "x" * 3000},
    {"path": "data/run.sh", "file": "#!/bin/sh\necho hi\n", "exec": True},
    {"path": "data/empty", "file": ""},
    {"path": "latest", "symlink": "data/x.bin"},
    {"path": "data/up", "symlink": "../latest"},
    {"path": "ünï/deep/er", "dir": True},
]


def chain(m: nx.Manager, log: str) -> nx.DRef:
    """a <- b, a <- c, (b, c) <- d, each build logged to ``log``."""
    a = S.stage(m, {"name": "a", "value": "x" * 1000, "log": log})
    b = S.stage(m, {"name": "b", "src": a, "value": 2, "log": log})
    c = S.stage(m, {"name": "c", "src": a, "value": 3, "log": log})
    return S.stage(m, {"name": "d", "left": b, "right": c, "value": 4, "log": log})


def leaf(m: nx.Manager, log: str) -> nx.DRef:
    """The first stage of ``chain`` alone: the same derivation as its ``a``."""
    return S.stage(m, {"name": "a", "value": "x" * 1000, "log": log})


def randoms(m: nx.Manager) -> nx.DRef:
    """A non-deterministic stage with two realizations."""
    return S.stage(m, {"name": "r", "random": True}, nx.match_some(2))


@attrs.frozen
class Source:
    """A store holding ``chain``, a ``tree_stage`` realization of ``TREE`` and two
    realizations of ``randoms``; and where its builds are logged."""

    store: nx.Store
    tmp: Path
    log: str
    d: nx.RRef
    tree: nx.RRef
    closure: frozenset[nx.RRef]


@pytest.fixture
def source(tmp_path: Path) -> Source:
    store = nx.store_initialize(tmp_path / "source")
    log = str(tmp_path / "log")
    d = nx.realize(nx.instantiate(chain, log, store=store))
    tree = nx.realize(nx.instantiate(S.tree_stage, tmp_path, [TREE], store=store))
    nx.realize_many(nx.instantiate(randoms, store=store))
    closure = frozenset([d, *nx.rrefdeps(d, store=store), tree])
    return Source(store, tmp_path, log, d, tree, closure)


def content(store: nx.Store) -> dict[str, tuple[Any, ...]]:
    """What a store shows its readers, without folder mtimes (which no store makes
    canonical; files and symlinks have theirs)."""
    return {
        path: (kind, mode, size, None if kind == 0o040000 else mtime, data)
        for path, (kind, mode, size, mtime, data) in S.store_view(store).items()
    }


def view_of(store: nx.Store, rrefs: frozenset[nx.RRef]) -> dict[str, tuple[Any, ...]]:
    """``content`` restricted to some realizations and their derivation folders' records."""
    keys = {r.dref.key for r in rrefs} | {"format"}
    allowed = {f"{r.dref.key}/{r.rhash}" for r in rrefs}

    def kept(path: str) -> bool:
        parts = path.split("/")
        return parts[0] in keys and (
            len(parts) == 1 or parts[1] in ("code", "config.json") or "/".join(parts[:2]) in allowed
        )

    return {p: v for p, v in content(store).items() if kept(p)}


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", ["tar", "tar.gz", "tgz", "tar.zst"])
def test_round_trip_into_an_empty_store(source: Source, tmp_path: Path, suffix: str) -> None:
    """The closure arrives whole: same refs, same files, modes and mtimes; the archive
    starts with its head, in the compression its name asks for; a realize of the same
    stages in the new store builds nothing."""
    archive = tmp_path / f"closure.{suffix}"
    report = nx.export([source.d, str(source.tree)], archive, store=source.store)
    assert report.archive == archive and report.size == archive.stat().st_size
    assert set(report.realizations) == source.closure
    assert set(report.derivations) == {r.dref for r in source.closure}
    assert report.refs == tuple(sorted([source.d, source.tree], key=str))
    magic = {"tar": b"nixlet-archive.json", "tar.gz": b"\x1f\x8b", "tgz": b"\x1f\x8b"}
    assert archive.read_bytes().startswith(magic.get(suffix, b"\x28\xb5\x2f\xfd"))
    assert os.listdir(tmp_path).count(archive.name) == 1
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".partial")]

    target = nx.store_initialize(tmp_path / "target")
    imported = nx.import_(archive, store=target)
    assert set(imported.added) == source.closure and imported.skipped == ()
    assert set(imported.refs) == {source.d, source.tree}
    assert set(nx.allrrefs(store=target)) == source.closure
    assert content(target) == view_of(source.store, source.closure)
    out = nx.rref2path(source.tree, store=target)
    assert os.readlink(out / "data" / "up") == "../latest"
    assert os.access(out / "data" / "run.sh", os.X_OK)
    assert nx.catref(source.tree, "latest", store=target) == "x" * 3000

    builds = S.builds(Path(source.log))
    assert nx.realize(nx.instantiate(chain, source.log, store=target)) == source.d
    assert nx.realize(nx.instantiate(S.tree_stage, tmp_path, [TREE], store=target)) == source.tree
    assert S.builds(Path(source.log)) == builds  # nothing was built again
    assert _tmp_is_clean(target)


@pytest.mark.parametrize("suffix", ["tar", "tar.gz", "tar.zst"])
def test_the_same_closure_gives_the_same_bytes(source: Source, tmp_path: Path, suffix: str) -> None:
    """Two exports of one closure, its refs given in another order or as strings, are the
    same bytes; an export replaces the file it is given."""
    one, two = tmp_path / f"one.{suffix}", tmp_path / f"two.{suffix}"
    nx.export([source.tree, source.d], one, store=source.store)
    two.write_bytes(b"an older archive")
    nx.export([str(source.d), str(source.tree), source.d], two, store=source.store)
    assert one.read_bytes() == two.read_bytes()


def test_members_are_canonical_and_in_order(source: Source, tmp_path: Path) -> None:
    """The head comes first and lists the refs and objects; every member has mtime 1, no
    owner and the store's mode; parents come before their contents."""
    archive = tmp_path / "a.tar"
    nx.export(source.tree, archive, store=source.store)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        head = json.loads(tar.extractfile(members[0]).read())  # type: ignore[union-attr]
    assert members[0].name == "nixlet-archive.json"
    assert head == {
        "format": "nixlet/archive/v1",
        "objects": sorted([str(source.tree.dref), str(source.tree)]),
        "refs": [str(source.tree)],
    }
    seen = {""}
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (1, 0, 0, "", "")
        assert m.name.rsplit("/", 1)[0] in seen or "/" not in m.name
        seen.add(m.name)
    modes = {m.name.split("/", 1)[-1]: (m.type, m.mode) for m in members[1:]}
    rhash = source.tree.rhash
    assert modes[f"{rhash}/out/data/run.sh"] == (tarfile.REGTYPE, 0o555)
    assert modes[f"{rhash}/out/data/x.bin"] == (tarfile.REGTYPE, 0o444)
    assert modes[f"{rhash}/out/data"] == (tarfile.DIRTYPE, 0o555)
    assert modes[f"{rhash}/out/latest"][0] == tarfile.SYMTYPE


def test_a_dref_exports_all_its_realizations(source: Source, tmp_path: Path) -> None:
    """A DRef's closure is every realization of it."""
    (r,) = {x.dref for x in nx.allrrefs(store=source.store) if x.name == "r"}
    both = set(nx.drefrrefs(r, store=source.store))
    assert len(both) == 2
    report = nx.export(r, tmp_path / "r.tgz", store=source.store)
    assert set(report.realizations) == both and report.derivations == (r,)
    target = nx.store_initialize(tmp_path / "target")
    assert set(nx.import_(tmp_path / "r.tgz", store=target).added) == both


def test_importing_into_a_store_holding_part_of_it(source: Source, tmp_path: Path) -> None:
    """What the store holds is skipped and left as it is (same inode, same bytes); the rest
    is added; importing again adds nothing."""
    archive = tmp_path / "a.tar.zst"
    nx.export(source.d, archive, store=source.store)
    target = nx.store_initialize(tmp_path / "target")
    held = nx.realize(nx.instantiate(leaf, source.log, store=target))
    path = nx.rref2path(held, store=target) / "value.txt"
    inode, before = path.stat().st_ino, content(target)
    report = nx.import_(archive, store=target)
    assert report.skipped == (held,)
    assert set(report.added) == set(nx.rrefdeps(source.d, store=source.store)) - {held} | {source.d}
    assert path.stat().st_ino == inode
    assert {k: v for k, v in content(target).items() if k in before} == before
    again = nx.import_(archive, store=target)
    assert again.added == () and len(again.skipped) == 4
    assert _tmp_is_clean(target)


# ---------------------------------------------------------------- export refuses


def test_export_refuses_bad_arguments(source: Source, tmp_path: Path) -> None:
    """An unknown suffix, no refs, an archive inside the store, a ref not in the store or a
    malformed one: refused, and no file is left behind."""
    with pytest.raises(nx.UsageError, match=r"\.tar") as e:
        nx.export(source.d, tmp_path / "a.zip", store=source.store)
    assert e.value.argument == "archive"
    with pytest.raises(nx.UsageError, match="at least one") as e:
        nx.export([], tmp_path / "a.tar", store=source.store)
    assert e.value.argument == "refs"
    with pytest.raises(nx.UsageError, match="outside the store"):
        nx.export(source.d, source.store.root / "a.tar", store=source.store)
    gone = nx.RRef("a" * 32, source.d.dhash, source.d.name)
    with pytest.raises(nx.StoreError, match="not in the store") as err:
        nx.export([source.d, gone], tmp_path / "a.tar", store=source.store)
    assert err.value.ref == gone
    with pytest.raises(nx.RefError):
        nx.export("rref:nonsense", tmp_path / "a.tar", store=source.store)
    assert sorted(os.listdir(tmp_path)) == ["log", "queue.json", "source", "xdg"] or not [
        n for n in os.listdir(tmp_path) if n.startswith((".a.", "a."))
    ]


def test_zstd_needs_its_package(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without zstandard, a .tar.zst is refused with the command that installs it, before
    anything is written; gzip and plain tar still work."""
    nx.export(source.tree, tmp_path / "z.tar.zst", store=source.store)
    monkeypatch.setitem(sys.modules, "zstandard", None)  # what a missing package looks like
    with pytest.raises(nx.UsageError, match=r"pip install 'nixlet\[zstd\]'"):
        nx.export(source.tree, tmp_path / "y.tar.zst", store=source.store)
    target = nx.store_initialize(tmp_path / "target")
    with pytest.raises(nx.UsageError, match=r"nixlet\[zstd\]"):
        nx.import_(tmp_path / "z.tar.zst", store=target)
    assert not (tmp_path / "y.tar.zst").exists()
    nx.export(source.tree, tmp_path / "y.tgz", store=source.store)
    assert nx.import_(tmp_path / "y.tgz", store=target).added == (source.tree,)


def _escaping_build(b: nx.Build) -> None:
    out = nx.build_outpath(b)
    (out / "sub").mkdir()
    os.symlink("..", out / "sub" / "up")
    os.symlink(nx.build_cattrs(b).target, out / "link")


@pytest.mark.parametrize("target", ["/etc/passwd", "../meta.json", "sub/up/../x"])
def test_export_refuses_a_symlink_leading_outside(tmp_path: Path, target: str) -> None:
    """A realization whose symlink leads outside its out/ (absolute, climbing, or climbing
    through another symlink) is refused by export, which import_ would refuse anyway."""
    store = nx.store_initialize(tmp_path / "s")
    rref = nx.realize(
        nx.instantiate(
            lambda m: nx.mkdrv(
                m,
                {"name": "esc", "target": target},
                nx.match_only(),
                nx.build_wrapper(_escaping_build),
            ),
            store=store,
        )
    )
    with pytest.raises(nx.StoreError, match="leads outside") as e:
        nx.export(rref, tmp_path / "a.tar", store=store)
    assert e.value.ref == rref
    assert not [n for n in os.listdir(tmp_path) if "a.tar" in n]


def test_export_refuses_a_corrupted_store(source: Source, tmp_path: Path) -> None:
    """A file whose bytes changed in the store is not copied into an archive."""
    path = nx.rref2path(source.tree, store=source.store) / "data" / "x.bin"
    os.chmod(path, 0o644)
    path.write_text("y" * 3000)
    with pytest.raises(nx.StoreError, match="corrupted") as e:
        nx.export(source.tree, tmp_path / "a.tar", store=source.store)
    assert e.value.ref == source.tree
    assert not [n for n in os.listdir(tmp_path) if "a.tar" in n]


# ---------------------------------------------------------------- hostile archives

Member = tuple[tarfile.TarInfo, bytes]


def read_members(archive: Path) -> list[Member]:
    """Every member of a genuine archive, with its data."""
    out = []
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isreg() else None
            out.append((m, f.read() if f else b""))
    return out


def write_members(archive: Path, members: list[Member]) -> None:
    """A tar holding exactly ``members``, in order, written header by header."""
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT, errors="surrogateescape") as tar:
        for info, data in members:
            info.size = len(data) if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
            tar.addfile(info, io.BytesIO(data) if info.size else None)


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, 0o444, link
    return info, data


def find(members: list[Member], suffix: str) -> int:
    """The index of the member whose name ends with ``suffix``."""
    return next(i for i, (m, _) in enumerate(members) if m.name.endswith(suffix))


def _out(members: list[Member]) -> str:
    """The name of the tree realization's out/ folder."""
    return members[find(members, "/out/data")][0].name.rsplit("/", 1)[0]


def _put(members: list[Member], after: str, *new: Member) -> list[Member]:
    i = find(members, after) + 1
    return members[:i] + list(new) + members[i:]


def _replace(members: list[Member], suffix: str, data: bytes) -> list[Member]:
    i = find(members, suffix)
    return members[:i] + [(members[i][0], data)] + members[i + 1 :]


def _edit_json(members: list[Member], suffix: str, edit: Callable[[Any], None]) -> list[Member]:
    value = json.loads(members[find(members, suffix)][1])
    edit(value)
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _replace(members, suffix, data.encode())


def _set_manifest_file(value: dict[str, Any]) -> None:
    """A meta.json whose manifest agrees with a changed x.bin, the RRef left as it was."""
    for e in value["manifest"]["entries"]:
        if e["path"] == "data/x.bin":
            e["xxh3_128"] = __import__("xxhash").xxh3_128_hexdigest(b"y" * 3000)


OUTSIDE = "/tmp/nixlet-archive-test-outside"

#: name -> (how the members are made hostile, what the refusal says)
HOSTILE: dict[str, tuple[Callable[[list[Member]], list[Member]], str]] = {
    "absolute name": (lambda ms: ms + [entry(OUTSIDE + "/evil", data=b"x")], "absolute"),
    "dot-dot name": (
        lambda ms: ms + [entry(f"{_out(ms)}/../../../../../../evil", data=b"x")],
        "'..' part",
    ),
    "absolute symlink": (
        lambda ms: _put(
            ms, "/out/data", entry(f"{_out(ms)}/data/pw", tarfile.SYMTYPE, link="/etc/passwd")
        ),
        "leads outside",
    ),
    "climbing symlink": (
        lambda ms: _put(
            ms, "/out/data", entry(f"{_out(ms)}/data/m", tarfile.SYMTYPE, link="../../meta.json")
        ),
        "leads outside",
    ),
    "symlink climbing through a symlink": (
        lambda ms: _put(
            ms,
            "/out/data",
            entry(f"{_out(ms)}/data/a", tarfile.SYMTYPE, link=".."),
            entry(f"{_out(ms)}/esc", tarfile.SYMTYPE, link="data/a/../x"),
        ),
        "through another symlink",
    ),
    "write through a symlink": (
        lambda ms: _put(
            ms,
            "/out/data",
            entry(f"{_out(ms)}/lnk", tarfile.SYMTYPE, link="data"),
            entry(f"{_out(ms)}/lnk/new", data=b"x"),
        ),
        "parent is not a folder",
    ),
    "hard link": (
        lambda ms: ms + [entry(f"{_out(ms)}/hard", tarfile.LNKTYPE, link=f"{_out(ms)}/latest")],
        "hard link",
    ),
    "character device": (
        lambda ms: ms + [entry(f"{_out(ms)}/null", tarfile.CHRTYPE)],
        "character device",
    ),
    "block device": (lambda ms: ms + [entry(f"{_out(ms)}/sda", tarfile.BLKTYPE)], "block device"),
    "fifo": (lambda ms: ms + [entry(f"{_out(ms)}/pipe", tarfile.FIFOTYPE)], "FIFO"),
    "member twice": (lambda ms: ms + [ms[find(ms, "/data/x.bin")]], "appears twice"),
    "member before its folder": (
        lambda ms: [ms[0], ms[find(ms, "/data/x.bin")]] + ms[1:],
        "parent is not a folder",
    ),
    "member of no listed object": (
        lambda ms: ms + [entry(f"{'a' * 32}-stray", tarfile.DIRTYPE)],
        "not one of the archive's listed objects",
    ),
    "realization not listed": (
        lambda ms: _put(
            ms,
            "/config.json",
            entry(ms[find(ms, "/out")][0].name.split("/")[0] + "/" + "b" * 32, tarfile.DIRTYPE),
        ),
        "not one of the archive's listed objects",
    ),
    "name that is not a ref": (
        lambda ms: ms + [entry("README", data=b"hello")],
        "not a derivation's folder name",
    ),
    "head naming a bad ref": (
        lambda ms: _edit_json(ms, "nixlet-archive.json", lambda h: h["refs"].append("rref:../x")),
        "not a nixlet archive head",
    ),
    "no head": (lambda ms: ms[1:], "not a nixlet archive"),
    "name that is not UTF-8": (
        lambda ms: ms + [entry(f"{_out(ms)}/bad\udcff", data=b"x")],
        "not valid UTF-8",
    ),
    "corrupted file": (
        lambda ms: _replace(ms, "/data/x.bin", b"y" * 3000),
        "differ from its manifest",
    ),
    "missing file": (
        lambda ms: ms[: find(ms, "/data/x.bin")] + ms[find(ms, "/data/x.bin") + 1 :],
        "differ from its manifest",
    ),
    "realization hash mismatch": (
        lambda ms: _edit_json(
            _replace(ms, "/data/x.bin", b"y" * 3000), "meta.json", _set_manifest_file
        ),
        "hash mismatch",
    ),
    "derivation hash mismatch": (
        lambda ms: _edit_json(ms, "config.json", lambda c: c.update(extra=1)),
        "hash mismatch",
    ),
    "realization missing": (
        lambda ms: [
            m
            for m in ms
            if "/" not in m[0].name or m[0].name.split("/")[1] in ("code", "config.json")
        ],
        "incomplete",
    ),
}


@pytest.fixture
def genuine(source: Source, tmp_path: Path) -> list[Member]:
    """The members of a genuine plain-tar export of the tree realization."""
    nx.export(source.tree, tmp_path / "genuine.tar", store=source.store)
    return read_members(tmp_path / "genuine.tar")


@pytest.fixture
def target(source: Source, tmp_path: Path) -> nx.Store:
    """A store that already holds work of its own (``chain``'s first stage)."""
    store = nx.store_initialize(tmp_path / "target")
    nx.realize(nx.instantiate(leaf, source.log, store=store))
    return store


def _tmp_is_clean(store: nx.Store, held: frozenset[str] = frozenset()) -> bool:
    """Nothing in .tmp but this process's own staging root (and its lock), holding only
    what it held before (``held``) and nothing of an import."""
    root = staging.staging_root(store)
    names = set(os.listdir(store.root / ".tmp"))
    inside = set(os.listdir(root))
    return (
        names <= {root.name, f"{root.name}.lock"}
        and inside <= held | {"roots"}
        and not [n for n in inside if n.startswith("import.")]
    )


def _refused(store: nx.Store, archive: Path, match: str) -> nx.StoreError:
    """Import ``archive``, expect a refusal saying ``match``; check the store did not
    change and nothing was left in .tmp or written outside."""
    before = S.snapshot(store.root, skip=(".tmp",))
    held = frozenset(os.listdir(staging.staging_root(store)))
    with pytest.raises(nx.StoreError, match=match) as e:
        nx.import_(archive, store=store)
    assert S.snapshot(store.root, skip=(".tmp",)) == before
    assert _tmp_is_clean(store, held)
    assert not os.path.lexists(OUTSIDE)
    assert str(archive) in str(e.value) and e.value.path == archive
    return e.value


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused(
    genuine: list[Member], target: nx.Store, tmp_path: Path, case: str
) -> None:
    """Each hostile archive is refused with a StoreError naming the member; the store is
    unchanged and nothing was extracted anywhere else."""
    make, match = HOSTILE[case]
    archive = tmp_path / "hostile.tar"
    write_members(archive, make(genuine))
    outside = sorted(os.listdir(tmp_path))
    error = _refused(target, archive, match)
    assert "member" in str(error) or case in ("realization missing",)
    assert sorted(os.listdir(tmp_path)) == outside


def test_the_genuine_archive_passes(
    genuine: list[Member], target: nx.Store, tmp_path: Path
) -> None:
    """The hostile cases' starting point, rewritten member by member, imports: the
    refusals above are about what each case changed."""
    write_members(tmp_path / "same.tar", genuine)
    assert len(nx.import_(tmp_path / "same.tar", store=target).added) == 1


def _content_offsets(archive: Path) -> tuple[list[int], int]:
    """Offsets of a plain tar's meaningful bytes: each member header's first name byte and
    size field, and the first and last byte of its data; and where the last data ends.
    (Zero padding, and the checksum field's terminator, which tarfile does not read, carry
    nothing: flipping them changes no content.)"""
    offsets, end = [], 0
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            offsets += [m.offset, m.offset + 124]
            if m.size:
                offsets += [m.offset_data, m.offset_data + m.size - 1]
            end = max(end, m.offset_data + m.size)
    return offsets, end


@pytest.mark.parametrize("suffix", ["tar", "tar.gz", "tar.zst"])
def test_truncated_archives_are_refused(
    source: Source, target: nx.Store, tmp_path: Path, suffix: str
) -> None:
    """An archive cut anywhere before its last byte of content (in a member's data,
    between members, in a compressed stream or its trailer) is refused."""
    archive = tmp_path / f"a.{suffix}"
    nx.export([source.d, source.tree], archive, store=source.store)
    data = archive.read_bytes()
    end = len(data)
    if suffix == "tar":
        nx.export([source.d, source.tree], tmp_path / "plain.tar", store=source.store)
        end = _content_offsets(tmp_path / "plain.tar")[1]
    cut = tmp_path / f"cut.{suffix}"
    for size in sorted({0, 100, end // 3, end // 2, end - 600, end - 1}):
        cut.write_bytes(data[:size])
        _refused(target, cut, "truncated|corrupted|incomplete|differ|not a nixlet archive")


def _decompressed(data: bytes, suffix: str) -> bytes | None:
    """What gzip or zstd make of ``data``, by the libraries directly (None: nothing)."""
    try:
        if suffix == "tar.gz":
            return gzip.decompress(data)
        unzstd = zstandard.ZstdDecompressor().decompressobj()
        out: bytes = unzstd.decompress(data)
        return out if unzstd.eof else None
    except Exception:
        return None


@pytest.mark.parametrize("suffix", ["tar", "tar.gz", "tar.zst"])
def test_corrupted_bytes_are_refused(source: Source, tmp_path: Path, suffix: str) -> None:
    """One flipped byte is refused: in a plain tar, in any member's header or data; in a
    compressed archive, anywhere it changes the decompressed bytes. (Some flips in a
    compressed stream decompress to the very same bytes, an unused code in a table, say:
    nothing changed, and the import may go on. The target is empty: the data of an object
    the store holds already is skipped unread, the store's copy being the one that counts.)
    """
    target = nx.store_initialize(tmp_path / "empty")
    archive = tmp_path / f"a.{suffix}"
    nx.export([source.d, source.tree], archive, store=source.store)
    data = archive.read_bytes()
    if suffix == "tar":
        offsets = _content_offsets(archive)[0]
    else:
        offsets = list(range(0, len(data), max(1, len(data) // 40)))
    bad = tmp_path / f"bad.{suffix}"
    refused = 0
    for offset in offsets:
        flipped = bytearray(data)
        flipped[offset] ^= 0x20
        if suffix != "tar" and _decompressed(bytes(flipped), suffix) == _decompressed(data, suffix):
            continue
        bad.write_bytes(bytes(flipped))
        _refused(target, bad, ".")
        refused += 1
    assert refused >= len(offsets) * 2 // 3


def test_not_an_archive(target: nx.Store, tmp_path: Path) -> None:
    """Random bytes, an empty file or a missing file are refused with a StoreError."""
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(5000))
    _refused(target, junk, "not a nixlet archive|corrupted")
    junk.write_bytes(b"")
    _refused(target, junk, "corrupted|empty")
    with pytest.raises(nx.StoreError, match="cannot read the archive"):
        nx.import_(tmp_path / "missing.tar", store=target)
