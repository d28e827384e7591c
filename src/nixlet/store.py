"""The store: its layout, and every filesystem mutation nixlet makes.

Layout (docs/store-format.md has it whole)::

    <root>/format                           store format record
    <root>/<dhash>-<name>/config.json       derivation record: canonical config ...
    <root>/<dhash>-<name>/code              ... and code identity (fingerprint or version)
    <root>/<dhash>-<name>/<rhash>/out/      a realization's files, as the build wrote them
    <root>/<dhash>-<name>/<rhash>/meta.json its context, manifest and build times
    <root>/.tmp/<host>-<pid>-<rand>/        one process's staging (nixlet.staging)
    <root>/.locks/build.lock                per-derivation build locks (nixlet.locks)

Every object (a realization, with its derivation's record the first time) is staged under
``.tmp`` on the same filesystem, made durable, and published by one ``rename``: readers
see all of it or none. Only the store layer (this module, ``nixlet.durability``,
``nixlet.staging`` and ``nixlet.locks``) renames, removes, changes modes or takes locks.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

from nixlet import durability, locks, staging
from nixlet import manifest as manifest_mod
from nixlet.context import realization_hash
from nixlet.errors import BuildError, StoreError
from nixlet.layout import (
    CANONICAL_MTIME,
    CODE_FILE,
    CONFIG_FILE,
    FORMAT,
    FORMAT_BYTES,
    LOCKS,
    META_FILE,
    OUT,
    TMP,
    default_location,
    dref_dir,
    forget_config,
    has_derivation,
    meta_record,
    rref_dir,
    rref_dir_str,
)
from nixlet.types import Derivation, DRef, RRef, Store

_default: Store | None = None
_opened: dict[Path, Store] = {}


# ---------------------------------------------------------------- opening a store


def initialize(path: str | os.PathLike[str] | None = None) -> Store:
    """Create the store if missing (idempotent), check its format, make it the default."""
    global _default
    root = Path(path).expanduser() if path is not None else default_location()
    root = Path(os.path.abspath(root))
    if root.exists() and not root.is_dir():
        raise StoreError(f"{root} exists and is not a folder; choose another store path", path=root)
    root.mkdir(parents=True, exist_ok=True)
    fmt = root / "format"
    if not fmt.exists():
        leftovers = [n for n in os.listdir(root) if n not in (TMP, LOCKS)]
        if leftovers:
            raise StoreError(
                f"{root} is not empty and holds no nixlet 'format' file, so it is not a "
                f"nixlet store (found {sorted(leftovers)[:5]}); it was left untouched. "
                "Choose an empty or new folder.",
                path=root,
            )
        _write_format(root)
    store = open_store(root)
    _default = store
    return store


def _write_format(root: Path) -> None:
    for sub in (TMP, LOCKS):
        (root / sub).mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root / TMP)
    with os.fdopen(fd, "wb") as f:
        f.write(FORMAT_BYTES)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o444)
    os.utime(tmp, (CANONICAL_MTIME, CANONICAL_MTIME))  # rsync then leaves it alone
    # A concurrent initializer may win the race; both wrote the same bytes.
    os.replace(tmp, root / "format")
    durability.fsync_path(root)


def open_store(path: str | os.PathLike[str]) -> Store:
    """Open an existing store, checking its format record once per process."""
    root = Path(os.path.abspath(Path(path).expanduser()))
    cached = _opened.get(root)
    if cached is not None:
        return cached
    fmt = root / "format"
    try:
        data = fmt.read_bytes()
    except FileNotFoundError:
        raise StoreError(
            f"no nixlet store at {root} (no 'format' file); create one with store_initialize()",
            path=root,
        ) from None
    except OSError as e:
        raise StoreError(f"cannot read {fmt}: {e}", path=root) from None
    try:
        found = json.loads(data)
    except ValueError:
        found = None
    if found != FORMAT:
        raise StoreError(
            f"{root} holds a store of an unknown format {data[:200]!r}; this nixlet reads "
            f"format {FORMAT['version']} only. Use a matching nixlet or another folder.",
            path=root,
        )
    for sub in (TMP, LOCKS):
        (root / sub).mkdir(exist_ok=True)
    store = Store(root)
    _opened[root] = store
    return store


def resolve(store: Store | str | os.PathLike[str] | None) -> Store:
    """The store a function should use: the given one, else the process default (set by
    ``store_initialize``), else ``$NIXLET_STORE``."""
    if isinstance(store, Store):
        return _opened.get(store.root) or open_store(store.root)
    if store is not None:
        return open_store(store)
    if _default is not None:
        return _default
    env = os.environ.get("NIXLET_STORE")
    if env:
        return open_store(env)
    raise StoreError(
        "no store: call store_initialize(path) or set NIXLET_STORE, or pass store=",
        path=None,
    )


def reset_default() -> None:
    """Forget the process default store (tests use this)."""
    global _default
    _default = None


# ---------------------------------------------------------------- publishing


@attrs.frozen
class Staged:
    """A realization staged for publication: its object folder (``out/`` and ``meta.json``,
    sealed) or ``None`` when the store already holds this RRef (a deterministic rebuild)."""

    rref: RRef
    derivation: Derivation
    obj: str | None
    relpaths: tuple[str, ...] = ()  # files and folders under obj, for the per-path fallback
    nbytes: int = 0  # file data under obj


def stage_realization(
    store: Store,
    derivation: Derivation,
    context_bytes: bytes,
    outdir: Path,
    started: float,
    finished: float,
) -> Staged:
    """Turn a build's output folder (in staging) into a sealed realization object, ready
    for ``publish_staged``.

    Raises:
        BuildError: ``outdir`` is outside the staging area, or holds a special file.
    """
    dref = derivation.dref
    if not staging.is_staging(store, outdir) or not outdir.is_dir():
        raise BuildError(
            f"realizer of {dref} returned {outdir}, which is not a folder in the store's "
            f"staging area {store.root / TMP}; build into the folders build_wrapper gives",
            dref=dref,
            cause=None,
            staging=outdir,
        )
    try:
        manifest = manifest_mod.scan(outdir)
    except manifest_mod.UnsupportedEntry as e:
        raise BuildError(
            f"output of {dref} refused: {e}", dref=dref, cause=str(e), staging=outdir
        ) from None
    manifest_bytes = manifest.canonical()
    rref = RRef(realization_hash(context_bytes, manifest_bytes), dref.dhash, dref.name)
    if os.path.exists(rref_dir_str(store, rref)):
        staging.remove_tree(outdir)
        return Staged(rref, derivation, None)
    obj = _object_folder(store, os.fspath(outdir))
    meta = meta_record(context_bytes, manifest_bytes, started, finished)
    _write_record(os.path.join(obj, META_FILE), meta)
    _seal(obj, manifest)
    relpaths = tuple(f"{OUT}/{e.path}" for e in manifest.entries if e.kind != "symlink")
    return Staged(rref, derivation, obj, (*relpaths, META_FILE, OUT, "."), manifest.total_size)


def publish_staged(store: Store, staged: Sequence[Staged]) -> list[bool]:
    """Publish staged realizations as one batch: one durable flush for all of them, then one
    rename each. The caller holds their derivations' locks.

    A derivation enters the store with its first realization: its record is staged beside
    the batch's objects of that derivation and the whole folder appears by one rename, so
    a build that fails leaves nothing. Returns, for each item, whether it added a new
    realization. Names are not durable until ``flush``.
    """
    fresh = [False] * len(staged)
    moves: list[_Move] = []
    records: dict[DRef, int] = {}
    seen: set[RRef] = set()
    for i, item in enumerate(staged):
        if item.obj is None:
            continue
        dref = item.derivation.dref
        if item.rref in seen:
            staging.remove_tree(item.obj)  # built twice in this batch: same name, same bytes
            continue
        seen.add(item.rref)
        if has_derivation(store, dref):
            moves.append(_Move(item.obj, rref_dir_str(store, item.rref), [i], record=False))
            continue
        if dref not in records:
            records[dref] = len(moves)
            folder = _stage_record(store, item.derivation)
            dest = os.path.join(store.root, dref.key)
            moves.append(_Move(folder, dest, [], record=True))
        move = moves[records[dref]]
        os.rename(item.obj, os.path.join(move.folder, item.rref.rhash))
        move.held.append(i)
    durability.make_durable(
        store, _batch_paths(staged, moves), sum(item.nbytes for item in staged)
    )
    for move in moves:
        for i in _publish_folder(store, staged, move):
            fresh[i] = True
    return fresh


@attrs.frozen
class _Move:
    """One rename of a batch: a staged object to its RRef's folder, or a staged derivation
    folder (record and objects) to its DRef's folder."""

    folder: str
    name: str
    held: list[int]  # indexes of the staged items it publishes
    record: bool


def _publish_folder(store: Store, staged: Sequence[Staged], move: _Move) -> list[int]:
    """Rename one staged folder (an object, or a record holding objects) into place and
    make its realization folders read-only; return the items it published."""
    folder, held = move.folder, move.held
    if _rename_new(folder, move.name):
        published = held
    elif move.record:
        # The derivation was recorded meanwhile (same name, same bytes): publish the
        # objects into it one by one, and drop the staged record.
        published = [
            i
            for i in held
            if _rename_new(
                os.path.join(folder, staged[i].rref.rhash), rref_dir_str(store, staged[i].rref)
            )
        ]
        staging.remove_tree(folder)
    else:
        staging.remove_tree(folder)
        published = []
    # A realization folder stays writable until it is in place: moving a folder to a new
    # parent needs write access to it (its '..' entry changes).
    for i in published:
        os.chmod(rref_dir_str(store, staged[i].rref), 0o555)
    return published


def _batch_paths(staged: Sequence[Staged], moves: list[_Move]) -> Iterator[Path]:
    """Every file and folder of a batch, where it is staged now (for the per-path fallback
    of ``durability.make_durable``; syncfs does not look at them)."""
    for move in moves:
        if move.record:
            yield from _record_paths(move.folder)
            for i in move.held:
                obj = Path(move.folder, staged[i].rref.rhash)
                yield from (obj / rel for rel in staged[i].relpaths)
        else:
            yield from (Path(move.folder, rel) for rel in staged[move.held[0]].relpaths)


def _stage_record(store: Store, derivation: Derivation) -> str:
    """Stage a derivation folder holding its record (its objects are moved in after)."""
    folder = staging.new_staging_path(store, "drv")
    _write_record(os.path.join(folder, CONFIG_FILE), derivation.config.canonical)
    _write_record(os.path.join(folder, CODE_FILE), derivation.code.encode("utf-8"))
    # Staging folders are 0700; a store may be shared by a group (and rsync copies modes).
    os.chmod(folder, 0o755)
    return folder


def _record_paths(folder: str) -> list[Path]:
    return [Path(folder, CONFIG_FILE), Path(folder, CODE_FILE), Path(folder)]


def _object_folder(store: Store, outdir: str) -> str:
    """The staging folder that becomes the realization object, with ``outdir`` as its
    ``out/``. build_wrapper already builds into ``<staging>/out`` alone in its folder, so
    that folder is used as it is (saving a mkdir and a rename per build)."""
    parent, name = os.path.split(outdir.rstrip(os.sep))
    if name == OUT and os.listdir(parent) == [OUT]:
        return parent
    obj = staging.new_staging_path(store, "rref")
    os.rename(outdir, os.path.join(obj, OUT))
    return obj


def _rename_new(src: str | Path, dst: str | Path) -> bool:
    """Rename ``src`` to ``dst`` unless ``dst`` exists; False if it did."""
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        raise
    return True


def _write_record(path: str, data: bytes) -> None:
    """Create a published-to-be file: read-only from the start, with the canonical mtime."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        os.write(fd, data)
        os.utime(fd, (CANONICAL_MTIME, CANONICAL_MTIME))
    finally:
        os.close(fd)


def _seal(obj: str, manifest: manifest_mod.Manifest) -> None:
    """Make a staged object read-only and canonical before it is published."""
    out = os.path.join(obj, OUT)
    canonical = (CANONICAL_MTIME, CANONICAL_MTIME)
    for e in manifest.entries:
        path = os.path.join(out, e.path)
        if e.kind == "file":
            os.chmod(path, 0o555 if e.executable else 0o444)
            os.utime(path, canonical)
        elif e.kind == "symlink":
            os.utime(path, canonical, follow_symlinks=False)
    # Children before parents: a read-only folder cannot have its entries changed.
    for e in reversed(manifest.entries):
        if e.kind == "dir":
            os.chmod(os.path.join(out, e.path), 0o555)
    os.chmod(out, 0o555)


# ---------------------------------------------------------------- locks and removal


def remove_ref(store: Store, ref: DRef | RRef) -> None:
    """Remove a realization, or a derivation with all its realizations: moved into staging
    by one rename (it disappears at once, whole), then deleted."""
    dref = ref.dref if isinstance(ref, RRef) else ref
    path = rref_dir(store, ref) if isinstance(ref, RRef) else dref_dir(store, ref)
    with locks.derivation_lock(store, dref):
        if not path.exists():
            raise StoreError(f"{ref} is not in the store {store.root}", path=path)
        grave = staging.new_staging(store, "removed") / "ref"
        if isinstance(ref, RRef):
            # A realization folder is 0555, and moving a folder to a new parent needs write
            # access to it (its '..' entry changes).
            os.chmod(path, 0o755)
        try:
            os.rename(path, grave)
        except OSError:
            if isinstance(ref, RRef):
                os.chmod(path, 0o555)
            raise
        durability.flush(store, [path.parent])
        if isinstance(ref, DRef):
            forget_config(store, ref)
    staging.remove_tree(grave.parent)
