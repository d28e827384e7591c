"""Where things are in a store, and reading them. Nothing here writes: every mutation
is in ``nixlet.store``. docs/store-format.md is the specification of what is read here.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from nixlet.errors import ConfigError, RefError, StoreError
from nixlet.hashing import HASH_CHARS, canonical_json
from nixlet.types import HASH_RE, Config, DRef, RRef, Store, folder_name, mkconfig

FORMAT = {
    "format": "nixlet-store",
    "version": 1,
    "record_hash": "sha256, first 160 bits, base32",
    "file_hash": "xxh3-128",
}
FORMAT_BYTES = canonical_json(FORMAT) + b"\n"
TMP, LOCKS = ".tmp", ".locks"
CONFIG_FILE, CODE_FILE = "config.json", "code"
OUT, META_FILE = "out", "meta.json"
REALIZATION_FORMAT = "nixlet/realization/v1"
#: Published files get this mtime (as in Nix): identical objects in two stores then look
#: identical to rsync's size-and-mtime check, so a merge skips them instead of rewriting
#: files inside read-only folders.
CANONICAL_MTIME = 1
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"

HASH_NAME = re.compile(HASH_RE)


def default_location() -> Path:
    """``$NIXLET_STORE``, else ``$XDG_DATA_HOME/nixlet/store`` (``~/.local/share/...``)."""
    env = os.environ.get("NIXLET_STORE")
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(data) / "nixlet" / "store"


def dref_dir(store: Store, dref: DRef) -> Path:
    """The folder of a derivation: its record and its realizations."""
    return store.root / dref.key


def rref_dir(store: Store, rref: RRef) -> Path:
    """The folder of a realization object (metadata and ``out/``)."""
    return store.root / folder_name(rref.dhash, rref.name) / rref.rhash


def rref_out(store: Store, rref: RRef) -> Path:
    """The folder holding a realization's files, as the build wrote them."""
    return rref_dir(store, rref) / OUT


def has_derivation(store: Store, dref: DRef) -> bool:
    """Whether the derivation record is published."""
    return os.path.exists(os.path.join(store.root, dref.key, CODE_FILE))


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
        raise StoreError(f"{dref} is not in the store {store.root}", path=path, dref=dref) from None
    try:
        config = mkconfig(json.loads(data))
    except (ValueError, ConfigError) as e:
        raise StoreError(f"{path} is corrupted: {e}", path=path, dref=dref) from None
    _configs[key] = config
    return config


def remember_config(store: Store, dref: DRef, config: Config) -> None:
    """Seed the config cache with a config known to match its record (from instantiate)."""
    _configs[(store.root, dref)] = config


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
        raise StoreError(f"{path} is corrupted: {e}", path=path, rref=rref) from None


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
        raise StoreError(f"build record of {rref} is corrupted: {e}", rref=rref) from None
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


def rref_dir_str(store: Store, rref: RRef) -> str:
    """``rref_dir`` as a plain string, for the publishing hot path."""
    return os.path.join(store.root, folder_name(rref.dhash, rref.name), rref.rhash)


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
