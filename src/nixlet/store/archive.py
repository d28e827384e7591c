"""Closure archives: ``export`` writes the closure of some refs to one tar file (plain,
gzip or zstd), and ``import_`` publishes an archive's objects into a store.

An archive is untrusted input: ``nixlet.store.unpacking`` reads it into staging and checks
every object in it (names, kinds, links, hashes). Only when all of it checks out are the
objects sealed and published, by ``publish_many``: one durable flush, one rename per object.
Anything wrong is a ``StoreError`` naming the archive and the member, and the store is
unchanged.

Archive layout (members in this order, all with mtime 1, uid and gid 0, no owner names)::

    nixlet-archive.json                    {"format","objects","refs"}, canonical JSON
    <dhash>-<name>/                        0755, then per derivation (sorted by folder):
    <dhash>-<name>/code                    0444
    <dhash>-<name>/config.json             0444
    <dhash>-<name>/<rhash>/                0555, then per realization (sorted by hash):
    <dhash>-<name>/<rhash>/meta.json       0444
    <dhash>-<name>/<rhash>/out/            0555
    <dhash>-<name>/<rhash>/out/<path>      in manifest order; files 0444 or 0555, folders 0555
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import attrs
import xxhash

from nixlet.store import durability, records, staging
from nixlet.store.layout import CODE_FILE, CONFIG_FILE, META_FILE, OUT, rref_dir_str
from nixlet.store.opening import StoreArg, resolve
from nixlet.store.publish import publish_many
from nixlet.store.unpacking import (
    ARCHIVE_FORMAT,
    HEAD,
    Extraction,
    leaves,
    open_archive,
    parse_ref,
    zstd,
)
from nixlet.values import manifest as manifest_mod
from nixlet.values.errors import StoreError, UsageError
from nixlet.values.hashing import canonical_json
from nixlet.values.model import Store
from nixlet.values.refs import DRef, RRef

_SUFFIXES = {".tar": "", ".tar.gz": "gz", ".tgz": "gz", ".tar.zst": "zst", ".tzst": "zst"}


@attrs.frozen
class ExportReport:
    """What ``export`` wrote: the archive, the refs asked for, every derivation record and
    realization of their closure (sorted), and the archive's size in bytes."""

    archive: Path
    refs: tuple[DRef | RRef, ...]
    derivations: tuple[DRef, ...]
    realizations: tuple[RRef, ...]
    size: int


@attrs.frozen
class ImportReport:
    """What ``import_`` did: the archive, the refs it was made for, the realizations it
    published (``added``) and those the store already held (``skipped``), each sorted."""

    archive: Path
    refs: tuple[DRef | RRef, ...]
    added: tuple[RRef, ...]
    skipped: tuple[RRef, ...]


# ---------------------------------------------------------------- export


def export(
    refs: Iterable[DRef | RRef | str] | DRef | RRef | str,
    archive: str | os.PathLike[str],
    *,
    store: StoreArg = None,
) -> ExportReport:
    """Write the closure of ``refs`` to one archive file, and return what it holds.

    An RRef's closure is its derivation's record and the realizations of its context,
    transitively; a DRef's is all its realizations (and theirs). The archive is a ``.tar``,
    ``.tar.gz`` (``.tgz``) or ``.tar.zst`` (``.tzst``, needs ``nixlet[zstd]``), by its
    suffix. Its members have a fixed order and canonical metadata, and gzip and zstd run
    without timestamps or names, so the same closure gives the same bytes. It is written
    beside ``archive`` under a temporary name and renamed over it at the end: a reader
    never sees half an archive.

    Raises:
        RefError: a ref is malformed.
        UsageError: no refs, an unknown suffix, an archive inside the store, or zstd
            without the ``zstandard`` package.
        StoreError: a ref is not in the store; the store is corrupted (a file that differs
            from its manifest); a realization holds a symlink leading outside its ``out/``
            (``import_`` would refuse it); or the archive cannot be written.
    """
    s = resolve(store)
    path = _archive_path(archive)
    compression = _compression(path)
    if path.is_relative_to(os.path.abspath(s.root)):
        raise UsageError(f"write the archive outside the store, not at {path}", argument="archive")
    wanted = _parse_refs(refs)
    derivations, metas = _closure(s, wanted)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.partial")
    try:
        with open(tmp, "xb") as raw:
            with _compressor(raw, compression) as sink:
                _write_members(s, sink, wanted, derivations, metas)
            raw.flush()
            os.fsync(raw.fileno())  # the archive's bytes are on disk before its name
        os.replace(tmp, path)
    except OSError as e:
        with staging.suppress_missing():
            os.unlink(tmp)
        if isinstance(e, StoreError):
            raise
        raise StoreError(f"cannot write the archive {path}: {e.strerror or e}", path=path) from None
    except BaseException:
        with staging.suppress_missing():
            os.unlink(tmp)
        raise
    durability.fsync_path(path.parent)
    return ExportReport(
        path, tuple(wanted), tuple(sorted(derivations)), tuple(sorted(metas)), path.stat().st_size
    )


def _archive_path(archive: object) -> Path:
    if not isinstance(archive, (str, os.PathLike)) or not os.fspath(archive):
        raise UsageError(f"archive must be a file's path, got {archive!r}", argument="archive")
    return Path(os.path.abspath(os.fspath(archive)))


def _compression(path: Path) -> str:
    for suffix, kind in _SUFFIXES.items():
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            if kind == "zst":
                zstd()  # refuse now, before anything is read or written
            return kind
    raise UsageError(
        f"cannot tell the archive format of {path.name!r}: name it .tar, .tar.gz, .tgz, "
        ".tar.zst or .tzst",
        argument="archive",
    )


def _parse_refs(refs: object) -> list[DRef | RRef]:
    items = [refs] if isinstance(refs, (str, DRef, RRef)) else refs
    if not isinstance(items, Iterable):
        raise UsageError(f"refs must be refs or a list of them, got {refs!r}", argument="refs")
    parsed = {parse_ref(r) for r in items}
    if not parsed:
        raise UsageError("export needs at least one ref", argument="refs")
    return sorted(parsed, key=str)


def _closure(
    store: Store, wanted: list[DRef | RRef]
) -> tuple[set[DRef], dict[RRef, dict[str, Any]]]:
    """The derivations and realizations (with their parsed meta.json) ``wanted`` needs."""
    derivations: set[DRef] = set()
    todo: list[RRef] = []
    for ref in wanted:
        if isinstance(ref, RRef):
            todo.append(ref)
            continue
        found = records.scan_rrefs(store, ref)
        if found is None:
            raise StoreError(f"{ref} is not in the store {store.root}", path=store.root, ref=ref)
        derivations.add(ref)
        todo.extend(found)
    metas: dict[RRef, dict[str, Any]] = {}
    while todo:
        rref = todo.pop()
        if rref not in metas:
            metas[rref] = records.read_meta(store, rref)
            derivations.add(rref.dref)
            todo.extend(r for rs in records.read_context_refs(store, rref).values() for r in rs)
    for dref in derivations:  # every record is there and readable: StoreError naming it
        records.read_config(store, dref, check=True)
    return derivations, metas


@contextlib.contextmanager
def _compressor(raw: IO[bytes], kind: str) -> Iterator[IO[bytes]]:
    """A stream compressing into ``raw``. gzip's header gets no name and mtime 0, so that
    the same archive gives the same bytes; zstd (level 3, one thread) writes none."""
    if not kind:
        yield raw
    elif kind == "gz":
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
            yield gz  # type: ignore[misc]  # GzipFile is a binary file object
    else:
        writer = (
            zstd().ZstdCompressor(level=3, write_checksum=True).stream_writer(raw, closefd=False)
        )
        with writer:
            yield writer


def _write_members(
    store: Store,
    sink: IO[bytes],
    wanted: list[DRef | RRef],
    derivations: set[DRef],
    metas: dict[RRef, dict[str, Any]],
) -> None:
    objects = sorted([str(d) for d in derivations] + [str(r) for r in metas])
    head = {"format": ARCHIVE_FORMAT, "objects": objects, "refs": [str(r) for r in wanted]}
    by_dref: dict[DRef, list[RRef]] = {d: [] for d in derivations}
    for rref in metas:
        by_dref[rref.dref].append(rref)
    # PAX: names of any length and any UTF-8; "w|" streams, so nothing asks the sink to seek.
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        _add_bytes(tar, HEAD, canonical_json(head) + b"\n")
        for dref in sorted(derivations, key=lambda d: d.key):
            folder = os.path.join(store.root, dref.key)
            tar.addfile(_info(dref.key, tarfile.DIRTYPE, 0o755))
            for record in (CODE_FILE, CONFIG_FILE):
                data = records.read_bytes(os.path.join(folder, record))
                _add_bytes(tar, f"{dref.key}/{record}", data)
            for rref in sorted(by_dref[dref], key=lambda r: r.rhash):
                _add_realization(store, tar, rref, metas[rref])


def _add_realization(store: Store, tar: tarfile.TarFile, rref: RRef, meta: dict[str, Any]) -> None:
    """The members of one realization, driven by its manifest: exactly what its RRef
    covers, each file checked against its hash on the way (a corrupted store is refused,
    never copied into an archive that ``import_`` would refuse)."""
    base = f"{rref.dref.key}/{rref.rhash}"
    obj = rref_dir_str(store, rref)
    out = os.path.join(obj, OUT)
    manifest = manifest_mod.parse(canonical_json(meta["manifest"]))
    tar.addfile(_info(base, tarfile.DIRTYPE, 0o555))
    _add_bytes(tar, f"{base}/{META_FILE}", records.read_bytes(os.path.join(obj, META_FILE)))
    tar.addfile(_info(f"{base}/{OUT}", tarfile.DIRTYPE, 0o555))
    for e in manifest.entries:
        name, path = f"{base}/{OUT}/{e.path}", os.path.join(out, e.path)
        try:
            if e.kind == "dir":
                tar.addfile(_info(name, tarfile.DIRTYPE, 0o555))
            elif e.kind == "symlink":
                if leaves(out, e.path):
                    raise StoreError(
                        f"cannot export {rref}: its symlink out/{e.path} -> "
                        f"{os.readlink(path)!r} leads outside the realization, which an "
                        "archive may not hold",
                        path=path,
                        ref=rref,
                    )
                target = os.readlink(path)
                _check_digest(rref, path, xxhash.xxh3_128_hexdigest(os.fsencode(target)), e)
                tar.addfile(_info(name, tarfile.SYMTYPE, 0o777, linkname=target))
            else:
                _add_file(tar, rref, name, path, e)
        except OSError as err:
            if isinstance(err, StoreError):
                raise
            raise StoreError(
                f"cannot read {path}, in {rref}: {err.strerror or err} (is the store "
                "corrupted? verify it, or rmref and build it again)",
                path=path,
                ref=rref,
            ) from None


def _add_file(
    tar: tarfile.TarFile, rref: RRef, name: str, path: str, e: manifest_mod.Entry
) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != e.size:
            _corrupted(rref, path, f"not a file of {e.size} bytes")
        reader = _HashingReader(fd)
        tar.addfile(_info(name, tarfile.REGTYPE, 0o555 if e.executable else 0o444, e.size), reader)
        _check_digest(rref, path, reader.hash.hexdigest(), e)
    finally:
        os.close(fd)


class _HashingReader:
    """Reads a file for tarfile, hashing what it hands over."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.hash = xxhash.xxh3_128()

    def read(self, n: int = -1, /) -> bytes:
        # tarfile always asks for a length; -1 (all of it) is there for the protocol.
        data = os.read(self.fd, n if n >= 0 else os.fstat(self.fd).st_size)
        self.hash.update(data)
        return data


def _check_digest(rref: RRef, path: str, digest: str, e: manifest_mod.Entry) -> None:
    if digest != e.digest:
        _corrupted(rref, path, "its content differs from the manifest's hash")


def _corrupted(rref: RRef, path: str, why: str) -> None:
    raise StoreError(
        f"cannot export {rref}: {path} is corrupted ({why}); rmref it and build it again",
        path=path,
        ref=rref,
    )


def _info(name: str, kind: bytes, mode: int, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    """A member header with canonical metadata: what the store's own objects have (mtime
    1, the store's modes), and no owner, so that any store gives the same bytes."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, linkname
    info.mtime, info.uid, info.gid, info.uname, info.gname = 1, 0, 0, "", ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, tarfile.REGTYPE, 0o444, len(data)), io.BytesIO(data))


# ---------------------------------------------------------------- import


def import_(archive: str | os.PathLike[str], *, store: StoreArg = None) -> ImportReport:
    """Publish the objects of an archive that ``export`` wrote (here or elsewhere) into the
    store, after checking every one of them; objects the store holds already are skipped.

    The archive is untrusted: it is extracted into this process's staging area only, never
    through a symlink, and each object's identity is recomputed from what was received
    (the DRef from config and code, the manifest by scanning the files, the RRef from
    context and manifest). All objects are published together (one durable flush, one
    rename each), or none. The compression (none, gzip, zstd) is read from the file's first
    bytes, whatever its name.

    Raises:
        StoreError: the archive cannot be read, is not a nixlet archive, is truncated or
            corrupted, or holds anything ``export`` does not write (an absolute or ``..``
            name, a hard link, a device or FIFO, a symlink leading outside its
            realization's ``out/``, a member twice or out of order, a member of no listed
            object, a name that is not a ref, an object missing from it, a hash that does
            not match); the message names the member. Also a full or unwritable store. The
            store is unchanged either way.
        UsageError: a zstd archive without the ``zstandard`` package.
    """
    s = resolve(store)
    path = _archive_path(archive)
    folder = staging.new_staging_path(s, "import")
    try:
        reader = Extraction(s, path, folder)
        with open_archive(path) as source:
            reader.read(source)
        staged = reader.verify()
        publish_many(staged)
    finally:
        # Published objects have left it; a refused archive leaves nothing behind.
        staging.remove_tree(folder)
    added = tuple(sorted(r for st in staged for r in st.rrefs))
    return ImportReport(path, reader.refs, added, tuple(sorted(reader.present)))
