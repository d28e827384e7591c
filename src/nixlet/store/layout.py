"""Where things are in a store: the format record, the names of its folders and files, and
the path of every derivation and realization. Nothing here reads or writes a file;
``nixlet.store.records`` reads, the rest of the store layer writes. docs/store-format.md is
the specification.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from nixlet.values.hashing import canonical_json
from nixlet.values.model import Store
from nixlet.values.refs import HASH_RE, DRef, RRef, folder_name

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


def rref_dir_str(store: Store, rref: RRef) -> str:
    """``rref_dir`` as a plain string, for the publishing hot path."""
    return os.path.join(store.root, folder_name(rref.dhash, rref.name), rref.rhash)
