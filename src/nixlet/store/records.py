"""Reading a store's records: derivation configs, realization metadata, build times, the
listings of derivations and realizations, their sizes, and the files of a realization (for
``lsref`` and ``catref``). Nothing here writes: every
mutation is in the store layer's other modules. docs/store-format.md is the specification of
what is read here.

What goes wrong while reading is a ``StoreError`` naming the file: a ref that is not in the
store, a record that cannot be read or is corrupted. Listings tolerate what is not theirs
(stray files, unknown folders) and what another process removes while they run.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nixlet.store.layout import (
    CONFIG_FILE,
    HASH_NAME,
    META_FILE,
    REALIZATION_FORMAT,
    dref_dir,
    has_derivation,
    rref_dir,
    rref_out,
)
from nixlet.values.config import Config, mkconfig
from nixlet.values.context import decode_context
from nixlet.values.errors import ConfigError, RefError, StoreError, UsageError
from nixlet.values.hashing import HASH_CHARS, canonical_json
from nixlet.values.model import Store
from nixlet.values.refs import DRef, RRef

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"

_configs: dict[tuple[Path, DRef], Config] = {}


def read_config(store: Store, dref: DRef, *, check: bool = False) -> Config:
    """The config of a published derivation. Records never change, so it is cached;
    ``check=True`` first makes sure the record is still there (another process may have
    removed the derivation).

    Raises:
        StoreError: the derivation is not in the store, or its record cannot be read or is
            corrupted (``path`` names the file).
    """
    key = (store.root, dref)
    cached = _configs.get(key)
    if cached is not None and check and not has_derivation(store, dref):
        _configs.pop(key, None)
        cached = None
    if cached is not None:
        return cached
    path = dref_dir(store, dref) / CONFIG_FILE
    data = _read_record(store, path, dref)
    try:
        config = mkconfig(json.loads(data))
    except (ValueError, ConfigError) as e:
        raise StoreError(f"{path} is corrupted: {e}", path=path, ref=dref) from None
    _configs[key] = config
    return config


def forget_config(store: Store, dref: DRef) -> None:
    """Drop a removed derivation's config from the cache."""
    _configs.pop((store.root, dref), None)


def read_meta(store: Store, rref: RRef) -> dict[str, Any]:
    """The parsed ``meta.json`` of a realization: its context, manifest and build times.

    Raises:
        StoreError: the realization is not in the store, or its record is corrupted.
    """
    path = rref_dir(store, rref) / META_FILE
    data = _read_record(store, path, rref)
    try:
        meta = json.loads(data)
        if meta["format"] != REALIZATION_FORMAT:
            raise ValueError(f"unknown format {meta['format']!r}")
        return {k: meta[k] for k in ("context", "manifest", "build")}
    except (ValueError, KeyError, TypeError) as e:
        raise StoreError(f"{path} is corrupted: {e}", path=path, ref=rref) from None


def read_context(store: Store, rref: RRef) -> bytes:
    """The canonical context record of a realization (the bytes its hash covers).

    Raises:
        StoreError: the realization is not in the store, or its record is corrupted.
    """
    context = read_meta(store, rref)["context"]
    try:
        return canonical_json(context)
    except ValueError as e:  # JSON's NaN or Infinity, which canonical JSON refuses
        path = rref_dir(store, rref) / META_FILE
        raise StoreError(f"{path} is corrupted: {e}", path=path, ref=rref) from None


def read_context_refs(store: Store, rref: RRef) -> dict[DRef, tuple[RRef, ...]]:
    """The context of a realization, decoded: the RRefs chosen for each direct dependency.

    Raises:
        StoreError: the realization is not in the store, or its record is corrupted.
    """
    path = rref_dir(store, rref) / META_FILE
    try:
        return decode_context(read_context(store, rref), str(path))
    except StoreError as e:
        raise StoreError(e.message, path=path, ref=rref) from None


_build_times: dict[tuple[Path, RRef], tuple[float, float]] = {}


def read_build_times(store: Store, rref: RRef) -> tuple[float, float]:
    """(start, finish) of the build of a realization, as POSIX times. Cached: a published
    realization never changes, and match_latest asks for every candidate on each call."""
    key = (store.root, rref)
    cached = _build_times.get(key)
    if cached is not None:
        return cached
    build = read_meta(store, rref)["build"]
    try:
        times = parse_time(build["started"]), parse_time(build["finished"])
    except (ValueError, KeyError, TypeError) as e:
        path = rref_dir(store, rref) / META_FILE
        raise StoreError(
            f"build record of {rref} in {path} is corrupted: {e}", path=path, ref=rref
        ) from None
    _build_times[key] = times
    return times


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """A file's bytes, with bare system calls: ``Path.read_bytes`` builds a file object
    first, which is most of the cost for the small files matchers and queries read by
    the hundred."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_record(store: Store, path: Path, ref: DRef | RRef) -> bytes:
    """A record's bytes; a missing record means the ref is not in the store.

    Raises:
        StoreError: the record is missing (the ref is not in the store: never published,
            or removed), or cannot be read (``path`` names the file either way).
    """
    try:
        return read_bytes(path)
    except (FileNotFoundError, NotADirectoryError):
        # NotADirectoryError: a stray file stands where the ref's folder would be.
        if os.path.isdir(path.parent):
            raise StoreError(
                f"{path} is missing: the store is corrupted ({ref} is there without its "
                "record); remove the ref with rmref and build it again",
                path=path,
                ref=ref,
            ) from None
        raise StoreError(
            f"{ref} is not in the store {store.root} (no {path})", path=path, ref=ref
        ) from None
    except OSError as e:
        raise StoreError(
            f"cannot read {path}, a record of {ref}: {e.strerror or e}. Check its permissions "
            "(a store shared between users must be readable by all of them)",
            path=path,
            ref=ref,
        ) from None


def list_drefs(store: Store) -> list[DRef]:
    """Every derivation folder in the store, sorted. Entries that are not derivation
    folders (stray files, unknown folders, ``.tmp``, ``.locks``) are left out.

    Raises:
        StoreError: the store's folder cannot be listed.
    """
    try:
        entries = _entries(store.root)
    except OSError as e:
        raise _unlistable(store, store.root, e) from None
    out = []
    for entry in entries:
        name = entry.name
        if len(name) > HASH_CHARS + 1 and name[HASH_CHARS] == "-" and _is_folder(entry):
            try:
                out.append(DRef(name[:HASH_CHARS], name[HASH_CHARS + 1 :]))
            except RefError:
                continue  # not ours; listing is no place to fail
    return sorted(out)


def list_rrefs(store: Store, dref: DRef, prefix: str = "") -> list[RRef]:
    """The realizations of ``dref`` whose hash starts with ``prefix`` (a context prefix
    selects those built in one context), sorted; none if the derivation is not in the
    store.

    The hot path of ``realize`` (once per derivation): names alone, no stat per entry. A
    stray file named like a realization hash would be listed; ``scan_rrefs`` checks.
    """
    try:
        names = os.listdir(dref_dir(store, dref))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        RRef._trusted(n, dref.dhash, dref.name)
        for n in sorted(names)
        if len(n) == HASH_CHARS and n.startswith(prefix) and HASH_NAME.fullmatch(n)
    ]


def scan_rrefs(store: Store, dref: DRef) -> list[RRef] | None:
    """The realizations of ``dref``, sorted, counting only folders (a stray file named like
    a hash is left out); ``None`` if the derivation is not in the store (never published,
    or removed while the caller was listing).

    Raises:
        StoreError: the derivation's folder cannot be listed (its permissions).
    """
    folder = dref_dir(store, dref)
    try:
        entries = _entries(folder)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise _unlistable(store, folder, e) from None
    return sorted(
        RRef._trusted(e.name, dref.dhash, dref.name)
        for e in entries
        if len(e.name) == HASH_CHARS and HASH_NAME.fullmatch(e.name) and _is_folder(e)
    )


def realization_size(store: Store, rref: RRef) -> int | None:
    """The bytes of a realization: the sizes of every file and symlink in its folder
    (``out/`` and ``meta.json``); ``None`` if it is not in the store (removed meanwhile:
    a removal renames the whole folder away, so any entry vanishing mid-walk means that).

    Raises:
        StoreError: an entry of the realization cannot be read (its permissions, or a
            corrupted store).
    """
    folder = rref_dir(store, rref)
    for _ in range(_SIZE_ATTEMPTS):
        try:
            return tree_size(folder)
        except (FileNotFoundError, NotADirectoryError):
            if not os.path.isdir(folder):
                return None
            # Still there: removed and published again (the same RRef rebuilt) while it
            # was walked; walk the new copy.
        except OSError as e:
            raise StoreError(
                f"cannot read {e.filename or folder}, in {rref}: {e.strerror or e}. Check "
                "its permissions",
                path=e.filename or folder,
                ref=rref,
            ) from None
    raise StoreError(
        f"{rref} kept changing while its size was read: entries vanished from {folder} "
        f"{_SIZE_ATTEMPTS} times although the folder stayed; the store may be corrupted",
        path=folder,
        ref=rref,
    )


#: How many times ``realization_size`` walks a realization that keeps vanishing under it.
_SIZE_ATTEMPTS = 3


def tree_size(folder: str | os.PathLike[str], *, gone_ok: bool = False) -> int:
    """The total ``lstat`` size of every non-folder entry under ``folder``; folders are
    entered, never symlinks. Raises the OSError of the first entry that cannot be read,
    except that with ``gone_ok`` a folder removed meanwhile counts as empty (gc measures
    what it is about to remove, which a concurrent ``rmref`` may take first)."""
    total = 0
    todo = [os.fspath(folder)]
    while todo:
        try:
            with os.scandir(todo.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
                    else:
                        total += entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            if not gone_ok:
                raise
    return total


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as entries:
        return list(entries)


def _unlistable(store: Store, folder: Path, e: OSError) -> StoreError:
    return StoreError(
        f"cannot list {folder}, in the store {store.root}: {e.strerror or e}. Check its "
        "permissions (a store shared between users must be readable by all of them)",
        path=folder,
    )


def _is_folder(entry: os.DirEntry[str]) -> bool:
    """Whether a listed entry is a real folder (never through a symlink). An entry removed
    since it was listed counts as none: its listing is stale."""
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def meta_record(context: bytes, manifest: bytes, started: float, finished: float) -> bytes:
    """Canonical JSON of ``{"build", "context", "format", "manifest"}``, assembled from
    already canonical parts (keys in sorted order) rather than encoded again.

    One file, not three: creating files is the dearest step of a small build. The build
    times are fixed width on purpose: the same realization built in two stores then has a
    meta.json of the same size (and, canonical, the same mtime), so rsync keeps each
    store's own times rather than rewriting a file inside a read-only folder.
    """
    build = canonical_json({"finished": format_time(finished), "started": format_time(started)})
    return b"".join(
        [
            b'{"build":',
            build,
            b',"context":',
            context,
            b',"format":',
            canonical_json(REALIZATION_FORMAT),
            b',"manifest":',
            manifest,
            b"}",
        ]
    )


def format_time(t: float) -> str:
    """A POSIX time as fixed-width UTC ISO 8601 with microseconds (rounded to the nearest,
    so that ``parse_time`` gives back a time that formats the same)."""
    whole, micros = divmod(round(t * 1_000_000), 1_000_000)
    return time.strftime(_TIME_FORMAT, time.gmtime(whole)) + f".{micros:06d}Z"


def parse_time(text: str) -> float:
    """The POSIX time of a ``format_time`` string; ValueError on anything else.

    Parsed by a regex and ``datetime`` (which checks the ranges), not ``time.strptime``:
    strptime's first call in a process costs milliseconds (it imports and compiles its
    locale tables), paid by the first ``match_latest`` of a script.
    """
    m = _TIME.fullmatch(text)
    if m is None:
        raise ValueError(f"not a build time: {text!r}")
    year, month, day, hour, minute, second, micros = (int(g) for g in m.groups())
    moment = datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.UTC)
    return int(moment.timestamp()) + micros / 1e6


_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{6})Z", re.ASCII)


def list_folder(store: Store, ref: DRef | RRef) -> list[str]:
    """The names in a ref's folder, sorted: a realization's ``out/``, or a derivation's
    folder (its record files and realization hashes).

    Raises:
        StoreError: the ref is not in the store, or its folder cannot be listed.
    """
    path = rref_out(store, ref) if isinstance(ref, RRef) else dref_dir(store, ref)
    try:
        return sorted(e.name for e in _entries(path))
    except (FileNotFoundError, NotADirectoryError):
        raise _absent(store, ref) from None
    except OSError as e:
        raise _unlistable(store, path, e) from None


def read_output(store: Store, rref: RRef, parts: Sequence[str]) -> bytes:
    """The bytes of the file ``out/<parts...>`` of a realization (``parts`` are plain
    names, checked by the caller). A symlink is followed, as ``cat`` would.

    Raises:
        StoreError: the realization is not in the store, it holds no file there, or the
            file cannot be read.
        UsageError: the path names a folder of the realization.
    """
    path = rref_out(store, rref).joinpath(*parts)
    shown = "/".join(parts)
    try:
        return read_bytes(path)
    except IsADirectoryError:
        raise UsageError(
            f"{shown} is a folder of {rref}, not a file: name a file inside it, or list it "
            f"with os.listdir(rref2path(rref) / {shown!r})",
            argument="path",
        ) from None
    except (FileNotFoundError, NotADirectoryError):
        if not os.path.isdir(rref_dir(store, rref)):
            raise _absent(store, rref) from None
        raise StoreError(
            f"{rref} has no file {shown} (lsref lists its files)", path=path, ref=rref
        ) from None
    except OSError as e:
        raise StoreError(
            f"cannot read {path}, in {rref}: {e.strerror or e}", path=path, ref=rref
        ) from None


def _absent(store: Store, ref: DRef | RRef) -> StoreError:
    path = rref_dir(store, ref) if isinstance(ref, RRef) else dref_dir(store, ref)
    return StoreError(f"{ref} is not in the store {store.root}", path=path, ref=ref)
