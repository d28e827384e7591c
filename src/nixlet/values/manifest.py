"""The manifest of a realization: every file's relative path, kind, size, executable bit
and content hash. It is what a realization's hash covers, so renaming a file or moving bytes
from one file to another gives another RRef. Reading only: nothing here writes.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from typing import Any

import attrs

from nixlet.values.errors import NixletError
from nixlet.values.hashing import bytes_hash, canonical_json, file_hash

MANIFEST_FORMAT = "nixlet/manifest/v1"


class UnsupportedEntry(NixletError, ValueError):
    """Raised for a special file or an undecodable name; publishing turns it into a
    ``BuildError`` naming the derivation. Field: ``path`` (the offending entry)."""

    path: str | None = None


@attrs.frozen
class Entry:
    """One item of an output folder. ``path`` is relative, with ``/`` separators."""

    path: str
    kind: str  # "dir", "file" or "symlink"
    size: int = 0
    executable: bool = False
    digest: str = ""  # xxh3-128 hex of the bytes (of the target text, for a symlink)

    def to_json(self) -> dict[str, Any]:
        """The entry as it is written in ``manifest.json``."""
        if self.kind == "dir":
            return {"path": self.path, "type": "dir"}
        if self.kind == "symlink":
            return {"path": self.path, "type": "symlink", "xxh3_128": self.digest}
        return {
            "path": self.path,
            "type": "file",
            "size": self.size,
            "executable": self.executable,
            "xxh3_128": self.digest,
        }


@attrs.frozen
class Manifest:
    """The entries of an output folder, sorted by path."""

    entries: tuple[Entry, ...]

    def canonical(self) -> bytes:
        """The bytes hashed into the RRef and stored as ``manifest.json``."""
        return canonical_json(
            {"format": MANIFEST_FORMAT, "entries": [e.to_json() for e in self.entries]}
        )

    @property
    def total_size(self) -> int:
        """The sum of the file sizes."""
        return sum(e.size for e in self.entries)


#: Called for a regular file with other hard links before it is hashed (see ``scan``).
Unshare = Callable[[str, os.stat_result], None]


def scan(
    root: str | os.PathLike[str],
    writeback: Callable[[int], None] | None = None,
    unshare: Unshare | None = None,
) -> Manifest:
    """Walk ``root`` and hash every file, streamed. Symlinks are recorded, never followed.

    ``writeback`` is passed to ``file_hash``; ``unshare(path, stat)`` is called for each
    regular file that has other hard links, before it is hashed (the store layer gives it a
    private copy there: this module only reads).

    Raises:
        UnsupportedEntry: for a FIFO, socket or device, or a name that is not UTF-8 (the
            manifest is JSON, and such a name could not be written down faithfully).
    """
    entries: list[Entry] = []
    _scan_dir(os.fspath(root), "", entries, writeback, unshare)
    entries.sort(key=lambda e: e.path)
    return Manifest(tuple(entries))


def _scan_dir(
    folder: str,
    prefix: str,
    entries: list[Entry],
    writeback: Callable[[int], None] | None,
    unshare: Unshare | None,
) -> None:
    with os.scandir(folder) as it:
        items = list(it)
    for item in items:
        rel = prefix + _utf8_name(item.name, folder)
        st = item.stat(follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            target = os.readlink(item.path)
            entries.append(Entry(rel, "symlink", digest=bytes_hash(os.fsencode(target))))
        elif stat.S_ISDIR(mode):
            entries.append(Entry(rel, "dir"))
            _scan_dir(item.path, rel + "/", entries, writeback, unshare)
        elif stat.S_ISREG(mode):
            if st.st_nlink > 1 and unshare is not None:
                unshare(item.path, st)
            executable = bool(mode & stat.S_IXUSR)
            digest = file_hash(item.path, st.st_size, writeback)
            entries.append(Entry(rel, "file", st.st_size, executable, digest))
        else:
            raise UnsupportedEntry(
                f"{item.path}: only files, folders and symlinks can be outputs", path=item.path
            )


def _utf8_name(name: str, folder: str) -> str:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsupportedEntry(
            f"{folder}: a file name is not valid UTF-8: {name!r}", path=folder
        ) from None
    return name


def parse(data: bytes) -> Manifest:
    """Read a ``manifest.json`` back (for queries and, later, verify)."""
    raw = json.loads(data)
    entries = []
    for e in raw["entries"]:
        entries.append(
            Entry(
                e["path"],
                e["type"],
                e.get("size", 0),
                e.get("executable", False),
                e.get("xxh3_128", ""),
            )
        )
    return Manifest(tuple(entries))
