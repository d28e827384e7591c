"""Shell-like helpers for looking around the store from a script or a REPL, as in
pylightnix: ``lsref``, ``catref``, ``rmref``, ``du``, ``shellref``, ``dirrw``. They call the
library; they never reach around it into the store's files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from nixlet.store import layout, records, staging
from nixlet.store import opening as store_mod
from nixlet.store.opening import StoreArg
from nixlet.store.remove import remove_ref
from nixlet.values.config import plain_parts
from nixlet.values.errors import RefError, StoreError
from nixlet.values.refs import DRef, RRef, is_dref, is_rref


def _parse_ref(ref: DRef | RRef | str) -> DRef | RRef:
    if is_rref(ref):
        return RRef.parse(ref)
    if is_dref(ref):
        return DRef.parse(ref)
    raise RefError(f"not a dref: or rref: reference: {ref!r}")


def _ref_path(ref: DRef | RRef | str, store: StoreArg) -> Path:
    s, r = store_mod.resolve(store), _parse_ref(ref)
    return layout.rref_out(s, r) if isinstance(r, RRef) else layout.dref_dir(s, r)


def lsref(ref: DRef | RRef | str, *, store: StoreArg = None) -> list[str]:
    """The names in a ref's folder: a realization's files, or a derivation's record files
    and realization hashes; sorted.

    Raises:
        StoreError: the ref is not in the store.
    """
    path = _ref_path(ref, store)
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        raise StoreError(f"{ref} is not in the store", path=path) from None


def catref(rref: RRef | str, *path: str, store: StoreArg = None) -> str:
    """The text of a file inside a realization: ``catref(rref, "sub", "log.txt")``."""
    if not path or not plain_parts(path):
        raise RefError(f"catref needs plain path parts inside the realization, got {path!r}")
    return _ref_path(RRef.parse(rref), store).joinpath(*path).read_text()


def rmref(ref: DRef | RRef | str, *, store: StoreArg = None) -> None:
    """Remove a realization, or a derivation with all its realizations. The removal is
    atomic: the object disappears whole. Nothing checks whether other realizations depend
    on it (that is what GC roots, a later feature, are for)."""
    remove_ref(store_mod.resolve(store), _parse_ref(ref))


def du(*, store: StoreArg = None) -> dict[DRef, tuple[int, dict[RRef, int]]]:
    """Disk usage: for each derivation, its total bytes and the bytes of each realization
    (file sizes, as recorded in the manifests' folders)."""
    s = store_mod.resolve(store)
    usage: dict[DRef, tuple[int, dict[RRef, int]]] = {}
    for dref in records.list_drefs(s):
        per = {r: _folder_size(layout.rref_dir(s, r)) for r in records.list_rrefs(s, dref)}
        usage[dref] = (sum(per.values()), per)
    return usage


def _folder_size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(folder, name)).st_size
    return total


def shellref(ref: DRef | RRef | str | None = None, *, store: StoreArg = None) -> int:
    """Open ``$SHELL`` (else ``/bin/sh``) in a ref's folder (the store root without a ref)
    and wait for it; return its exit status."""
    path = _ref_path(ref, store) if ref is not None else store_mod.resolve(store).root
    shell = os.environ.get("SHELL") or "/bin/sh"
    return subprocess.call([shell], cwd=path)


def staging_garbage(*, store: StoreArg = None) -> list[Path]:
    """Staging folders that no live process holds: what crashed or finished processes left
    in ``<store>/.tmp``. Safe to delete at any time."""
    return staging.staging_garbage(store_mod.resolve(store))


def remove_staging_garbage(*, store: StoreArg = None) -> int:
    """Delete what ``staging_garbage`` lists; return how many folders went."""
    return staging.remove_staging_garbage(store_mod.resolve(store))


def dirrw(path: str | os.PathLike[str]) -> None:
    """Make a folder and everything in it writable by its owner: a copy of a realization
    keeps the store's read-only modes, so a build that copies inputs calls this on the
    copy before changing it."""
    staging.make_writable(path)
