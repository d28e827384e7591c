"""Reading an untrusted closure archive into staging, and checking everything in it:
the part of ``import_`` (``nixlet.store.archive``) that never trusts a byte.

It extracts only into this process's staging area and creates each entry itself: files
with ``O_EXCL | O_NOFOLLOW``, and every parent must be a folder member it created from an
earlier member, so no symlink is ever followed and nothing lands outside staging (tarfile's
``extractall`` is not used: it trusts names and links unless told otherwise, and its
filters differ between Python versions). Then it recomputes every identity from the bytes
received: each derivation's DRef from its config and code, each realization's manifest by
scanning what was extracted and its RRef from its context and that manifest. Anything
wrong is a ``StoreError`` naming the archive and the member, raised before anything is
published.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import attrs
import xxhash

from nixlet.store import records, syscalls
from nixlet.store.layout import (
    CODE_FILE,
    CONFIG_FILE,
    META_FILE,
    OUT,
    REALIZATION_FORMAT,
    rref_dir_str,
)
from nixlet.store.publish import Staged
from nixlet.store.sealing import FULL, seal_received
from nixlet.values import manifest as manifest_mod
from nixlet.values.config import Config, mkconfig
from nixlet.values.context import decode_context, derivation_hash, realization_hash
from nixlet.values.errors import ConfigError, RefError, StoreError, UsageError
from nixlet.values.hashing import CHUNK, canonical_json
from nixlet.values.model import Store
from nixlet.values.refs import DRef, RRef

ARCHIVE_FORMAT = "nixlet/archive/v1"
#: The archive's first member: its format, the refs it was made for, the objects it holds.
HEAD = "nixlet-archive.json"
#: The largest record (the archive's head, a config, a code identity) read into memory:
#: far above any real one, low enough that a hostile archive cannot exhaust memory.
RECORD_MAX = 64 << 20
#: Symlinks followed while checking where a symlink leads (Linux's own limit is 40).
MAX_HOPS = 40
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"


def zstd() -> Any:
    """The ``zstandard`` module, imported only when a zstd archive is written or read.

    Raises:
        UsageError: it is not installed.
    """
    try:
        import zstandard
    except ImportError:
        raise UsageError(
            "zstd archives need the zstandard package: pip install 'nixlet[zstd]'",
            argument="archive",
        ) from None
    return zstandard


def parse_ref(ref: object) -> DRef | RRef:
    """A DRef or RRef, or its string form; ``RefError`` for anything else."""
    if isinstance(ref, (DRef, RRef)):
        return ref
    if isinstance(ref, str) and ref.startswith("dref:"):
        return DRef.parse(ref)
    return RRef.parse(ref)


def leaves(out: str, rel: str) -> bool:
    """Whether the symlink ``out/<rel>`` leads outside ``out/`` when followed: its target
    (and the targets of symlinks met on the way, as the kernel resolves them, up to
    ``MAX_HOPS``) is absolute or climbs above ``out/``. A component that does not exist
    stops the kernel; here the rest is taken literally, which can only refuse more."""
    stack = rel.split("/")[:-1]
    todo = list(reversed(os.readlink(os.path.join(out, rel)).split("/")))
    hops = 1
    if not todo[-1]:  # an absolute target ("" before the first "/"), or an empty one
        return True
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return True
            stack.pop()
            continue
        stack.append(part)
        try:
            st = os.lstat(os.path.join(out, *stack))
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            target = os.readlink(os.path.join(out, *stack))
            if hops > MAX_HOPS or not target or target.startswith("/"):
                return True
            stack.pop()
            todo.extend(reversed(target.split("/")))
    return False


class _Corrupt(tarfile.ReadError):
    """The archive's bytes could not be read or decompressed."""


class _Source:
    """The decompressed archive, read by tarfile; every failure of reading becomes
    ``_Corrupt`` (gzip raises OSError and EOFError, zstandard its own errors), so that an
    OSError later is always about writing into staging.

    zstandard's streaming reader stops silently where a truncated frame ends, so for a
    zstd frame that carries a content checksum (``export`` writes one), what was read is
    hashed and ``finish`` compares it with the checksum that ends the file."""

    def __init__(self, stream: Any, zstd_raw: IO[bytes] | None = None) -> None:
        self.stream = stream
        self.raw = zstd_raw
        self.hash = xxhash.xxh64() if zstd_raw is not None else None

    def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = self.stream.read(n)
        except MemoryError:
            raise
        except Exception as e:
            raise _Corrupt(f"{type(e).__name__}: {e}") from None
        if self.hash is not None:
            self.hash.update(data)
        return data

    def finish(self) -> None:
        """Called once everything was read: refuse a zstd frame cut short."""
        if self.raw is None or self.hash is None:
            return
        self.raw.seek(4)
        descriptor = self.raw.read(1)
        if descriptor and descriptor[0] & 0x04:  # Content_Checksum_flag (RFC 8878)
            self.raw.seek(-4, os.SEEK_END)
            if int.from_bytes(self.raw.read(4), "little") != self.hash.intdigest() & 0xFFFFFFFF:
                raise _Corrupt("the zstd stream is truncated or corrupted (checksum mismatch)")


@contextlib.contextmanager
def open_archive(path: Path) -> Iterator[_Source]:
    """The decompressed bytes of an archive, whose compression its first bytes tell.

    Raises:
        StoreError: it cannot be opened.
        UsageError: it is zstd and the zstandard package is missing.
    """
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise StoreError(f"cannot read the archive {path}: {e.strerror or e}", path=path) from None
    with raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic.startswith(_GZIP_MAGIC):
            yield _Source(gzip.GzipFile(filename="", mode="rb", fileobj=raw))
        elif magic == _ZSTD_MAGIC:
            # One frame (what export writes): a second one would escape the checksum check.
            reader = zstd().ZstdDecompressor().stream_reader(raw, read_across_frames=False)
            yield _Source(reader, raw)
        else:
            yield _Source(raw)


@attrs.define
class Extraction:
    """One import's reading of an archive into staging: what it listed, what it held."""

    store: Store
    archive: Path
    folder: str  # the staging folder it extracts into (the archive's layout, mirrored)
    refs: tuple[DRef | RRef, ...] = ()
    drefs: set[DRef] = attrs.field(factory=set)
    rrefs: set[RRef] = attrs.field(factory=set)
    present: set[RRef] = attrs.field(factory=set)  # listed, and in the store already
    names: set[str] = attrs.field(factory=set)  # every member seen
    folders: set[str] = attrs.field(factory=lambda: {""})  # folder members: parents
    records: dict[tuple[DRef, str], bytes] = attrs.field(factory=dict)
    member: str = ""  # the member being read, for messages

    def refuse(self, why: str, ref: DRef | RRef | None = None) -> StoreError:
        where = f", member {self.member!r}" if self.member else ""
        return StoreError(
            f"refused the archive {self.archive}{where}: {why}; nothing was imported",
            path=self.archive,
            ref=ref,
        )

    def read(self, source: _Source) -> None:
        """Read every member, checking each and extracting what the store lacks."""
        try:
            # "r|": a stream, read once in order (zstd's reader cannot seek back).
            stream = cast(IO[bytes], source)  # it has the one method tarfile calls, read
            with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8") as tar:
                first = tar.next()
                if first is None or first.name != HEAD:
                    raise self.refuse(f"not a nixlet archive (its first member is not {HEAD})")
                self.member = HEAD
                self.head(self.small(tar, first))
                # next(), not iteration: iterating a TarFile starts again from its first member.
                while (info := tar.next()) is not None:
                    self.member = info.name
                    self.extract(tar, info)
                self.member = ""
                # After the end marker, only zeros: a corrupted header ends a tar early
                # (tarfile stops there silently), and reading to the end makes gzip and
                # zstd check their trailers.
                while chunk := tar.fileobj.read(CHUNK):
                    if chunk.strip(b"\0"):
                        raise self.refuse("data after the end of the archive (corrupted?)")
                source.finish()
        except tarfile.TarError as e:
            raise self.refuse(f"truncated or corrupted ({e})") from None
        except EOFError as e:
            raise self.refuse(f"truncated ({e})") from None
        except StoreError:
            raise
        except OSError as e:
            full = " (the store is full)" if e.errno in FULL else ""
            raise StoreError(
                f"cannot extract the archive {self.archive}, member {self.member!r}, into "
                f"{self.folder}: {e.strerror or e}{full}; nothing was imported",
                path=self.folder,
            ) from None

    def small(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
        """A record member's bytes (bounded: it is read into memory)."""
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or info.sparse is not None:
            raise self.refuse("a record must be a regular file")
        if info.size > RECORD_MAX:
            raise self.refuse(f"{info.size} bytes is too large for a record")
        f = tar.extractfile(info)
        data = f.read() if f is not None else b""
        if len(data) != info.size:
            raise tarfile.ReadError("unexpected end of data")
        return data

    def head(self, data: bytes) -> None:
        """Parse the archive's head: its format, refs and objects, which must be closed
        (each realization's derivation listed, each ref listed)."""
        try:
            head = json.loads(data)
            if not isinstance(head, dict) or head.get("format") != ARCHIVE_FORMAT:
                raise ValueError(f"format is not {ARCHIVE_FORMAT!r}")
            objects = [parse_ref(o) for o in head["objects"]]
            self.refs = tuple(parse_ref(r) for r in head["refs"])
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise self.refuse(f"not a nixlet archive head ({e})") from None
        if len(set(objects)) != len(objects):
            raise self.refuse("an object is listed twice")
        self.drefs = {o for o in objects if isinstance(o, DRef)}
        self.rrefs = {o for o in objects if isinstance(o, RRef)}
        for ref in [*self.refs, *(r.dref for r in self.rrefs)]:
            if ref not in self.drefs and ref not in self.rrefs:
                raise self.refuse(f"{ref} is needed but not listed as an object", ref)
        self.present = {r for r in self.rrefs if os.path.isdir(rref_dir_str(self.store, r))}

    def extract(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        """Check one member's name and type; extract it unless its object is present."""
        name = info.name
        parts = self.check_name(name)
        if name in self.names:
            raise self.refuse("it appears twice")
        self.names.add(name)
        if "/".join(parts[:-1]) not in self.folders:
            raise self.refuse("its parent is not a folder member that comes before it")
        dref = self.dref_of(parts[0])
        if len(parts) == 2 and parts[1] in (CODE_FILE, CONFIG_FILE):
            self.records[dref, parts[1]] = self.small(tar, info)
            return
        rref = self.rref_of(dref, parts[1]) if len(parts) > 1 else None
        write = rref not in self.present
        target = os.path.join(self.folder, name)
        if len(parts) == 3 and parts[2] == META_FILE:
            self.expect(info, tarfile.REGTYPE)
            if write:
                self.copy(tar, info, target, executable=False)
        elif len(parts) <= 3:
            if len(parts) == 3 and parts[2] != OUT:
                raise self.refuse("a realization holds only meta.json and out/", rref)
            self.expect(info, tarfile.DIRTYPE)
            self.folders.add(name)
            if write:
                os.mkdir(target, 0o700)
        elif info.type == tarfile.DIRTYPE:
            self.folders.add(name)
            if write:
                os.mkdir(target, 0o700)
        elif info.type == tarfile.SYMTYPE:
            self.check_link("/".join(parts[3:]), info.linkname)
            if write:
                os.symlink(info.linkname, target)
        else:
            self.expect(info, tarfile.REGTYPE)
            if write:
                self.copy(tar, info, target, executable=bool(info.mode & stat.S_IXUSR))

    def check_name(self, name: str) -> list[str]:
        """A member name's parts: relative, no empty, ``.`` or ``..`` part, valid UTF-8."""
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise self.refuse("its name is not valid UTF-8") from None
        if name.startswith("/") or "\0" in name:
            raise self.refuse("an absolute name, or one holding a NUL")
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise self.refuse("a name with an empty, '.' or '..' part")
        return parts

    def dref_of(self, key: str) -> DRef:
        try:
            dref = DRef.parse(f"dref:{key}")
        except RefError:
            raise self.refuse(f"{key!r} is not a derivation's folder name") from None
        if dref not in self.drefs:
            raise self.refuse(f"{dref} is not one of the archive's listed objects", dref)
        return dref

    def rref_of(self, dref: DRef, rhash: str) -> RRef:
        if rhash in (CODE_FILE, CONFIG_FILE):
            raise self.refuse("a derivation record must be a regular file", dref)
        try:
            rref = RRef(rhash, dref.dhash, dref.name)
        except RefError:
            raise self.refuse(f"{rhash!r} is neither a record nor a realization hash") from None
        if rref not in self.rrefs:
            raise self.refuse(f"{rref} is not one of the archive's listed objects", rref)
        return rref

    def expect(self, info: tarfile.TarInfo, kind: bytes) -> None:
        kinds = (tarfile.REGTYPE, tarfile.AREGTYPE) if kind == tarfile.REGTYPE else (kind,)
        if info.type not in kinds or info.sparse is not None:
            what = {tarfile.REGTYPE: "a regular file", tarfile.DIRTYPE: "a folder"}[kind]
            found = _KINDS.get(info.type, f"type {info.type!r}")
            raise self.refuse(f"it must be {what}, not {found}")

    def check_link(self, rel: str, target: str) -> None:
        """Refuse a symlink whose target is absolute or climbs above ``out/`` as written;
        ``verify`` follows chains of symlinks once all of them are extracted."""
        depth = rel.count("/")
        for part in target.split("/"):
            depth += -1 if part == ".." else 0 if part in ("", ".") else 1
            if depth < 0:
                break
        if not target or target.startswith("/") or depth < 0 or "\0" in target:
            raise self.refuse(f"its symlink target {target!r} leads outside the realization")

    def copy(
        self, tar: tarfile.TarFile, info: tarfile.TarInfo, target: str, *, executable: bool
    ) -> None:
        """Create ``target`` (never through a symlink, never over anything) with the
        member's bytes."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(target, flags, 0o700 if executable else 0o600)
        try:
            src = tar.extractfile(info)
            left = info.size
            while left and src is not None:
                chunk = src.read(min(CHUNK, left))
                if not chunk:
                    raise tarfile.ReadError("unexpected end of data")
                left -= len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def verify(self) -> list[Staged]:
        """Check every listed object the store lacks, seal it, and return what to publish."""
        self.member = ""
        configs = {d: self.check_record(d) for d in sorted(self.drefs)}
        staged = []
        for dref, (config, code) in configs.items():
            rrefs = sorted(r for r in self.rrefs - self.present if r.dref == dref)
            objects, paths, nbytes = [], [], 0
            for rref in rrefs:
                obj, manifest = self.sealed(rref, config)
                relpaths = [f"{OUT}/{e.path}" for e in manifest.entries if e.kind != "symlink"]
                objects.append(obj)
                paths.append((*relpaths, META_FILE, OUT, "."))
                nbytes += manifest.total_size
            if rrefs:
                staged.append(
                    Staged(
                        self.store,
                        dref,
                        config,
                        code,
                        tuple(rrefs),
                        tuple(objects),
                        tuple(paths),
                        nbytes,
                    )
                )
        return staged

    def sealed(self, rref: RRef, config: Config) -> tuple[str, manifest_mod.Manifest]:
        """A checked realization, sealed in staging (read-only, canonical)."""
        try:
            obj, manifest = self.check_realization(rref, config)
            seal_received(obj, manifest)
        except StoreError:
            raise
        except OSError as e:  # reading or sealing what this import extracted
            full = " (the store is full)" if e.errno in FULL else ""
            raise StoreError(
                f"cannot check {rref} of the archive {self.archive} in {self.folder}: "
                f"{e.strerror or e}{full}; nothing was imported",
                path=e.filename or self.folder,
                ref=rref,
            ) from None
        return obj, manifest

    def check_record(self, dref: DRef) -> tuple[Config, str]:
        """A derivation's config and code, after checking they hash to its DRef."""
        self.member = f"{dref.key}/{CONFIG_FILE}"
        data, code_bytes = (
            self.records.get((dref, CONFIG_FILE)),
            self.records.get((dref, CODE_FILE)),
        )
        if data is None or code_bytes is None:
            raise self.refuse(f"the record of {dref} is missing (truncated?)", dref)
        try:
            config = mkconfig(json.loads(data))
            code = code_bytes.decode("utf-8")
        except (ValueError, ConfigError, RecursionError) as e:
            raise self.refuse(f"the record of {dref} is corrupted ({e})", dref) from None
        if config.canonical != data:
            raise self.refuse(f"the config of {dref} is not canonical JSON", dref)
        if config.name != dref.name or derivation_hash(config, code) != dref.dhash:
            found = DRef(derivation_hash(config, code), config.name)
            raise self.refuse(f"hash mismatch: the record of {dref} is that of {found}", dref)
        return config, code

    def check_realization(self, rref: RRef, config: Config) -> tuple[str, manifest_mod.Manifest]:
        """A realization's staged folder and scanned manifest, after checking its record,
        its context (every RRef of it in the archive), its files and its hash."""
        base = f"{rref.dref.key}/{rref.rhash}"
        obj = os.path.join(self.folder, base)
        self.member = f"{base}/{META_FILE}"
        if self.member not in self.names or f"{base}/{OUT}" not in self.folders:
            raise self.refuse(f"{rref} is incomplete (truncated?)", rref)
        meta_bytes = records.read_bytes(os.path.join(obj, META_FILE))
        try:
            meta = json.loads(meta_bytes)
            if set(meta) != {"build", "context", "format", "manifest"}:
                raise ValueError("not the fields of a meta.json")
            if meta["format"] != REALIZATION_FORMAT or canonical_json(meta) != meta_bytes:
                raise ValueError("not a canonical realization record")
            records.parse_time(meta["build"]["started"])
            records.parse_time(meta["build"]["finished"])
            context_bytes = canonical_json(meta["context"])
            context = decode_context(context_bytes, self.member)
            expected = canonical_json(meta["manifest"])
            listed = manifest_mod.parse(expected)
            if listed.canonical() != expected:
                raise ValueError("its manifest is not one nixlet writes")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise self.refuse(f"the record of {rref} is corrupted ({e})", rref) from None
        for dep, chosen in context.items():
            if dep not in config.deps or any(r.dref != dep or r not in self.rrefs for r in chosen):
                raise self.refuse(
                    f"the context of {rref} names {dep} wrongly, or a "
                    "realization the archive does not hold",
                    rref,
                )
        out = os.path.join(obj, OUT)
        manifest = manifest_mod.scan(Path(out), writeback=syscalls.start_writeback)
        for entry in manifest.entries:
            if entry.kind == "symlink" and leaves(out, entry.path):
                self.member = f"{base}/{OUT}/{entry.path}"
                raise self.refuse(
                    "its symlink leads outside the realization (through another symlink)", rref
                )
        if manifest.canonical() != expected:
            self.member = f"{base}/{OUT}/{_first_difference(manifest, listed)}"
            raise self.refuse(f"the files of {rref} differ from its manifest (corrupted?)", rref)
        if realization_hash(context_bytes, expected) != rref.rhash:
            raise self.refuse(f"hash mismatch: {rref} does not name its content", rref)
        return obj, manifest


_KINDS = {
    tarfile.LNKTYPE: "a hard link",
    tarfile.SYMTYPE: "a symlink",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.DIRTYPE: "a folder",
    tarfile.REGTYPE: "a regular file",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}


def _first_difference(found: manifest_mod.Manifest, expected: manifest_mod.Manifest) -> str:
    """The first output path where what was extracted and the manifest disagree."""
    listed = {e.path: e for e in expected.entries}
    mine = {e.path: e for e in found.entries}
    for path in sorted(set(listed) | set(mine)):
        if listed.get(path) != mine.get(path):
            return path
    return ""
