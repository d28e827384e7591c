"""Reading a store's records: derivation configs, realization metadata, build times, and
the listings of derivations and realizations. Nothing here writes: every mutation is in the
store layer's other modules. docs/store-format.md is the specification of what is read here.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
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
)
from nixlet.values.config import Config, mkconfig
from nixlet.values.errors import ConfigError, RefError, StoreError
from nixlet.values.hashing import HASH_CHARS, canonical_json
from nixlet.values.model import Store
from nixlet.values.refs import DRef, RRef

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"

_configs: dict[tuple[Path, DRef], Config] = {}


def read_config(store: Store, dref: DRef, *, check: bool = False) -> Config:
    """The config of a published derivation. Records never change, so it is cached;
    ``check=True`` first makes sure the record is still there (another process may have
    removed the derivation)."""
    key = (store.root, dref)
    cached = _configs.get(key)
    if cached is not None and check and not has_derivation(store, dref):
        _configs.pop(key, None)
        cached = None
    if cached is not None:
        return cached
    path = dref_dir(store, dref) / CONFIG_FILE
    try:
        data = read_bytes(path)
    except FileNotFoundError:
        raise StoreError(f"{dref} is not in the store {store.root}", path=path, ref=dref) from None
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
    try:
        meta = json.loads(_read_record(path))
        if meta["format"] != REALIZATION_FORMAT:
            raise ValueError(f"unknown format {meta['format']!r}")
        return {k: meta[k] for k in ("context", "manifest", "build")}
    except (ValueError, KeyError, TypeError) as e:
        raise StoreError(f"{path} is corrupted: {e}", path=path, ref=rref) from None


def read_context(store: Store, rref: RRef) -> bytes:
    """The canonical context record of a realization (the bytes its hash covers)."""
    return canonical_json(read_meta(store, rref)["context"])


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
        raise StoreError(f"build record of {rref} is corrupted: {e}", ref=rref) from None
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


def _read_record(path: Path) -> bytes:
    try:
        return read_bytes(path)
    except FileNotFoundError:
        raise StoreError(f"{path} is missing: the ref is not in this store", path=path) from None


def list_drefs(store: Store) -> list[DRef]:
    """Every published derivation, sorted."""
    out = []
    for name in os.listdir(store.root):
        if len(name) > HASH_CHARS + 1 and name[HASH_CHARS] == "-":
            try:
                out.append(DRef(name[:HASH_CHARS], name[HASH_CHARS + 1 :]))
            except RefError:
                continue  # not ours (a stray file); listing is no place to fail
    return sorted(out)


def list_rrefs(store: Store, dref: DRef, prefix: str = "") -> list[RRef]:
    """The realizations of ``dref`` whose hash starts with ``prefix`` (a context prefix
    selects those built in one context), sorted."""
    try:
        names = os.listdir(dref_dir(store, dref))
    except FileNotFoundError:
        return []
    return [
        RRef._trusted(n, dref.dhash, dref.name)
        for n in sorted(names)
        if len(n) == HASH_CHARS and n.startswith(prefix) and HASH_NAME.fullmatch(n)
    ]


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
