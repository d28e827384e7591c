"""Shell-like helpers for looking around the store from a script or a REPL, as in
pylightnix: ``lsref``, ``catref``, ``rmref``, ``du``, ``shellref``, ``dirrw``. They call the
library; they never reach around it into the store's files.

What each raises, in one place: ``RefError`` for a malformed ref or path; ``StoreError``
for a ref or file that is not in the store, or that cannot be read; ``UsageError`` for an
argument the helper cannot take (``catref`` of a folder, or of a file that is not text).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from nixlet.store import layout, records, staging
from nixlet.store import opening as store_mod
from nixlet.store.opening import StoreArg
from nixlet.store.remove import remove_ref
from nixlet.values.config import plain_parts
from nixlet.values.errors import RefError, StoreError, UsageError
from nixlet.values.model import Store
from nixlet.values.refs import DRef, RRef, parse_ref


def _ref_path(store: Store, ref: DRef | RRef) -> Path:
    return layout.rref_out(store, ref) if isinstance(ref, RRef) else layout.dref_dir(store, ref)


def lsref(ref: DRef | RRef | str, *, store: StoreArg = None) -> list[str]:
    """The names in a ref's folder: a realization's files, or a derivation's record files
    and realization hashes; sorted.

    Raises:
        RefError: ``ref`` is not a DRef or RRef.
        StoreError: the ref is not in the store, or its folder cannot be listed.
    """
    return records.list_folder(store_mod.resolve(store), parse_ref(ref))


def catref(rref: RRef | str, *path: str, store: StoreArg = None) -> str:
    """The text (UTF-8) of a file inside a realization: ``catref(rref, "sub", "log.txt")``.

    Raises:
        RefError: ``rref`` is not an RRef, or ``path`` is not one or more plain names (none,
            or a part that is empty, ``.``, ``..`` or holds a ``/``: catref reads nothing
            outside the realization's files).
        StoreError: the realization is not in the store, it has no file at ``path``, or
            the file cannot be read.
        UsageError: ``path`` names a folder, or a file that is not UTF-8 text (read its
            bytes from ``rref2path(rref)``).
    """
    r = RRef.parse(rref)
    if not path:
        raise RefError(
            f"catref needs the path of a file inside {r}, one name per part: "
            "catref(rref, 'sub', 'log.txt'); lsref(rref) lists its files"
        )
    if not plain_parts(path):
        raise RefError(
            f"catref reads only inside the realization: each part of the path must be a "
            f"plain name (not empty, '.' or '..', without '/'), got {path!r}"
        )
    data = records.read_output(store_mod.resolve(store), r, path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        shown = "/".join(path)
        raise UsageError(
            f"{shown} in {r} is not UTF-8 text ({e.reason} at byte {e.start}); read its "
            f"bytes with (rref2path(rref) / {shown!r}).read_bytes()",
            argument="path",
        ) from None


def rmref(ref: DRef | RRef | str, *, force: bool = False, store: StoreArg = None) -> None:
    """Remove a realization, or a derivation with all its realizations. The removal is
    atomic: the object disappears whole.

    It refuses to remove what others in the store still depend on (a realization named in
    another's context, a derivation named in another's config), and says which: removing
    it would leave them naming an input that is gone. ``force=True`` removes it anyway.
    ``gc`` removes only what nothing needs.

    Raises:
        RefError: ``ref`` is not a DRef or RRef.
        StoreError: the ref is not in the store, others depend on it (without ``force``),
            or the store cannot be written.
    """
    remove_ref(store_mod.resolve(store), parse_ref(ref), force=force)


def du(*, store: StoreArg = None) -> dict[DRef, tuple[int, dict[RRef, int]]]:
    """Disk usage: for each derivation, its total bytes and the bytes of each realization
    (the sizes of the files in its folder, metadata included).

    Every size is one that was read: a realization or derivation that another process
    removes while ``du`` runs is left out, never reported as 0 bytes. A derivation without
    realizations is ``(0, {})``.

    Raises:
        StoreError: a folder or file of the store cannot be read (its permissions); its
            ``path`` and ``ref`` say which.
    """
    s = store_mod.resolve(store)
    usage: dict[DRef, tuple[int, dict[RRef, int]]] = {}
    for dref in records.list_drefs(s):
        sizes = _realization_sizes(s, dref)
        if sizes is not None:
            usage[dref] = (sum(sizes.values()), sizes)
    return usage


def _realization_sizes(store: Store, dref: DRef) -> dict[RRef, int] | None:
    """The size of each realization of ``dref``; None if the derivation was removed."""
    rrefs = records.scan_rrefs(store, dref)
    if rrefs is None:
        return None
    sizes = {}
    for rref in rrefs:
        size = records.realization_size(store, rref)
        if size is not None:
            sizes[rref] = size
    if not sizes and not layout.has_derivation(store, dref):
        return None  # removed while listed: not a derivation without realizations
    return sizes


def shellref(ref: DRef | RRef | str | None = None, *, store: StoreArg = None) -> int:
    """Open ``$SHELL`` (else ``/bin/sh``) in a ref's folder (the store root without a ref)
    and wait for it; return its exit status.

    Raises:
        RefError: ``ref`` is not a DRef or RRef.
        StoreError: the ref is not in the store.
        UsageError: the shell cannot be started (``$SHELL`` names no program).
    """
    s = store_mod.resolve(store)
    r = parse_ref(ref) if ref is not None else None
    path = _ref_path(s, r) if r is not None else s.root
    shell = os.environ.get("SHELL") or "/bin/sh"
    if r is not None and not path.is_dir():
        raise StoreError(f"{r} is not in the store {s.root}", path=path, ref=r)
    try:
        return subprocess.call([shell], cwd=path)
    except OSError as e:
        if not path.is_dir():  # removed since it was checked
            raise StoreError(f"{path} is gone from the store {s.root}", path=path, ref=r) from None
        raise UsageError(
            f"cannot start the shell {shell!r} (from $SHELL, else /bin/sh): "
            f"{e.strerror or e}; set SHELL to a shell program",
            argument="SHELL",
        ) from None


def staging_garbage(*, store: StoreArg = None) -> list[Path]:
    """Staging folders that no live process holds: what crashed or finished processes left
    in ``<store>/.tmp``, and this process's failed builds kept for inspection. Safe to
    delete at any time.

    Raises:
        StoreError: ``.tmp`` cannot be listed (not a folder, or its permissions).
    """
    return staging.staging_garbage(store_mod.resolve(store))


def remove_staging_garbage(*, store: StoreArg = None) -> int:
    """Delete what ``staging_garbage`` lists; return how many folders went.

    Raises:
        StoreError: ``.tmp`` cannot be listed, or a folder in it cannot be removed (it
            belongs to another user).
    """
    s = store_mod.resolve(store)
    try:
        return staging.remove_staging_garbage(s)
    except StoreError:
        raise
    except OSError as e:
        raise StoreError(
            f"cannot remove staging garbage {e.filename or ''} in {s.root}: {e.strerror or e} "
            "(left by another user? remove it as that user)",
            path=e.filename or s.root,
        ) from None


def dirrw(path: str | os.PathLike[str]) -> None:
    """Make a folder and everything in it writable by its owner: a copy of a realization
    keeps the store's read-only modes, so a build that copies inputs calls this on the
    copy before changing it.

    Raises:
        UsageError: ``path`` is not a folder, or something in it cannot be changed (it
            belongs to another user).
    """
    if not os.path.isdir(path):
        raise UsageError(f"dirrw needs a folder, got {os.fspath(path)!r}", argument="path")
    try:
        staging.make_writable(path)
    except OSError as e:
        raise UsageError(
            f"dirrw cannot make {e.filename or path} writable: {e.strerror or e} (not its owner?)",
            argument="path",
        ) from None
