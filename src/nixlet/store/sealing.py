"""Sealing: turning the output folders a build left in staging into realization objects,
ready to publish. Part of the store layer: it checks where the outputs are, gives every
hardlinked file a private copy, hashes the manifest, writes ``meta.json`` and makes the object
read-only and canonical, all inside staging. Nothing here touches a published object or a
file outside the store's staging area.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs

from nixlet.store import staging, syscalls
from nixlet.store.layout import CANONICAL_MTIME, META_FILE, OUT, TMP, rref_dir_str
from nixlet.store.records import meta_record
from nixlet.values import manifest as manifest_mod
from nixlet.values.context import realization_hash
from nixlet.values.errors import BuildError, StoreError
from nixlet.values.model import Store
from nixlet.values.refs import DRef, RRef

#: errno values that mean "the disk is full": the store cannot take more until space is freed.
FULL = (errno.ENOSPC, errno.EDQUOT)


@attrs.frozen
class Sealed:
    """One realization object in staging: its RRef, its folder (``out/`` and ``meta.json``,
    sealed; ``None`` when the store already holds this RRef, as after a deterministic
    rebuild), the paths under it (for the per-path durability fallback) and its bytes."""

    rref: RRef
    obj: str | None
    relpaths: tuple[str, ...] = ()
    nbytes: int = 0


def check_outputs(store: Store, dref: DRef, outdirs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The output folders a realizer returned, as absolute paths, after checking that each
    is a real folder (not a symlink, not reached through one) inside this store's staging
    area, that none is given twice and that none holds another.

    Sealing makes an object read-only and resets its mtimes: done through a symlink it
    would change the user's files outside the store, so such outputs are refused before
    anything is touched.

    Raises:
        BuildError: an output breaks one of these rules.
    """
    tmp = os.path.join(store.root, TMP)
    found: list[str] = []
    for outdir in outdirs:
        path = os.path.abspath(outdir)
        if not _real_folder_below(tmp, path):
            _refuse(
                store,
                dref,
                outdir,
                f"which is not a folder of a staging root in the store's staging area {tmp} "
                "(a symlink, or a folder outside it); build into the folders build_wrapper "
                "gives",
            )
        if any(_overlap(path, f) for f in found):
            _refuse(store, dref, outdir, "twice, or inside another of its outputs")
        found.append(path)
    return found


def _real_folder_below(tmp: str, path: str) -> bool:
    """Whether ``path`` (normalised) is a folder inside a staging root under ``tmp``,
    reached through folders only: each part below ``tmp`` is checked with lstat, so a
    symlink anywhere on the way is caught (a few system calls, where realpath takes one
    per part of the whole path)."""
    if not path.startswith(tmp + os.sep):
        return False
    parts = path[len(tmp) + 1 :].split(os.sep)
    if len(parts) < 2:  # a staging root itself, or .tmp: never an output
        return False
    current = tmp
    for part in parts:
        current = os.path.join(current, part)
        try:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                return False
        except OSError:
            return False
    return True


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b + os.sep) or b.startswith(a + os.sep)


def _refuse(store: Store, dref: DRef, outdir: str | os.PathLike[str], why: str) -> None:
    """Refuse an output. If it lies in a staging root's folder (a symlink there, a folder
    given twice or nested), that folder is kept as ``failed.*``, which
    ``remove_staging_garbage`` frees; nothing outside staging is touched."""
    path = os.path.abspath(outdir)
    kept = None
    if staging.is_staging(store, Path(path)):  # a rename: it follows no symlink
        kept = staging.mark_failed(store, Path(path))
    raise BuildError(
        f"realizer of {dref} returned {outdir}, {why}", dref=dref, cause=None, staging=kept
    )


def seal(
    store: Store,
    dref: DRef,
    context_bytes: bytes,
    outdir: str,
    started: float,
    finished: float,
) -> Sealed:
    """Turn one checked output folder into a sealed realization object in staging.

    Raises:
        BuildError: the output holds a special file or a name that is not UTF-8, or a file
            the build left unreadable; its build folder is kept for inspection, renamed
            ``failed.*`` (``remove_staging_garbage`` frees it).
        StoreError: the disk is full; what the build left in staging is removed.
    """
    try:
        manifest = manifest_mod.scan(outdir, writeback=syscalls.start_writeback, unshare=_unshare)
    except manifest_mod.UnsupportedEntry as e:
        # Kept for inspection, renamed failed.* so that remove_staging_garbage frees it.
        kept = staging.mark_failed(store, Path(outdir))
        raise BuildError(
            f"output of {dref} refused: {e}", dref=dref, cause=str(e), staging=kept
        ) from None
    except OSError as e:
        if e.errno in FULL:
            _discard_build(store, outdir)
            raise _full(store, e) from None
        kept = staging.mark_failed(store, Path(outdir))
        raise BuildError(
            f"output of {dref} cannot be read: {e}", dref=dref, cause=str(e), staging=kept
        ) from None
    manifest_bytes = manifest.canonical()
    rref = RRef(realization_hash(context_bytes, manifest_bytes), dref.dhash, dref.name)
    if os.path.exists(rref_dir_str(store, rref)):
        staging.remove_tree(outdir)
        return Sealed(rref, None)
    try:
        with removed_on_error(store, outdir):
            obj = _object_folder(store, outdir)
        with removed_on_error(store, obj):
            meta = meta_record(context_bytes, manifest_bytes, started, finished)
            write_record(os.path.join(obj, META_FILE), meta)
            _seal(obj, manifest)
    except StoreError:
        _discard_build(store, outdir)
        raise
    relpaths = tuple(f"{OUT}/{e.path}" for e in manifest.entries if e.kind != "symlink")
    return Sealed(rref, obj, (*relpaths, META_FILE, OUT, "."), manifest.total_size)


def _unshare(path: str, st: os.stat_result) -> None:
    """Give a hardlinked output file a private copy before it is sealed.

    A build may link a large input into its output to avoid a copy; sealing would then
    chmod the user's original and reset its mtime, and a later edit of the original would
    silently change the published realization. The copy is made beside the link and renamed
    over it, so the original is only read.
    """
    tmp = f"{path}.nixlet-unshare"
    shutil.copyfile(path, tmp)  # copy_file_range where the kernel has it: a reflink on btrfs/xfs
    os.chmod(tmp, stat.S_IMODE(st.st_mode))
    os.replace(tmp, path)


def _full(store: Store, e: OSError) -> StoreError:
    return StoreError(
        f"the store {store.root} is full ({errno.errorcode.get(e.errno or 0, e.errno)}: "
        f"{e.strerror}); nothing of this build was published. Free space (rmref, "
        "remove_staging_garbage) and realize again",
        path=store.root,
    )


def _discard_build(store: Store, outdir: str) -> None:
    """Remove what a build left in staging once it cannot be published (a full disk): its
    other outputs and scratch files share its folder, and would hold the space the user has
    to free until the process ends (nothing lists a live process's folders as garbage)."""
    staging.remove_tree(staging.build_folder(store, outdir) or outdir)


@contextmanager
def removed_on_error(store: Store, path: str) -> Iterator[None]:
    """Remove a staged folder if the block fails, and report a full disk as a StoreError:
    a half-written object must not stay behind to hold the space the user has to free."""
    try:
        yield
    except StoreError:
        staging.remove_tree(path)
        raise
    except OSError as e:
        staging.remove_tree(path)
        if e.errno in FULL:
            raise _full(store, e) from None
        raise StoreError(
            f"cannot stage in the store {store.root}: {e.strerror} ({e.filename}); what this "
            "operation staged was removed",
            path=e.filename or store.root,
        ) from None
    except BaseException:
        staging.remove_tree(path)
        raise


def _object_folder(store: Store, outdir: str) -> str:
    """The staging folder that becomes the realization object, with ``outdir`` as its
    ``out/``. build_wrapper already builds into ``<staging>/out`` alone in its folder, so
    that folder is used as it is (saving a mkdir and a rename per build)."""
    parent, name = os.path.split(outdir)
    # The parent must be a build's own folder: never a staging root (an output straight
    # under it), which the object would take with it.
    if (
        name == OUT
        and os.path.dirname(os.path.dirname(parent)) == os.path.join(store.root, TMP)
        and os.listdir(parent) == [OUT]
    ):
        return parent
    obj = staging.new_staging_path(store, "rref")
    os.rename(outdir, os.path.join(obj, OUT))
    return obj


def write_record(path: str, data: bytes) -> None:
    """Create a published-to-be file: read-only from the start, with the canonical mtime."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        view = memoryview(data)
        while view:  # os.write may write less than asked (a full disk, a signal)
            view = view[os.write(fd, view) :]
        os.utime(fd, (CANONICAL_MTIME, CANONICAL_MTIME))
    finally:
        os.close(fd)


def seal_received(obj: str, manifest: manifest_mod.Manifest) -> None:
    """Make a realization object that ``sync`` received canonical, as a build's is: rsync
    keeps the sender's modes and mtimes, which nothing vouches for, so ``meta.json`` and
    the files under ``out/`` get the modes the manifest records and the canonical mtime.
    The object's top folder is left writable until it is published (moving a folder to a
    new parent rewrites its ``..`` entry); publishing makes it read-only."""
    meta = os.path.join(obj, META_FILE)
    os.chmod(meta, 0o444)
    os.utime(meta, (CANONICAL_MTIME, CANONICAL_MTIME), follow_symlinks=False)
    _seal(obj, manifest)
    os.chmod(obj, 0o755)


def _seal(obj: str, manifest: manifest_mod.Manifest) -> None:
    """Make a staged object read-only and canonical before it is published. Symlinks are
    never followed: ``check_outputs`` refused a symlinked output folder, and a symlink inside
    one is recorded as a symlink and only has its own mtime set."""
    out = os.path.join(obj, OUT)
    canonical = (CANONICAL_MTIME, CANONICAL_MTIME)
    for e in manifest.entries:
        path = os.path.join(out, e.path)
        if e.kind == "file":
            os.chmod(path, 0o555 if e.executable else 0o444)
            os.utime(path, canonical, follow_symlinks=False)
        elif e.kind == "symlink":
            os.utime(path, canonical, follow_symlinks=False)
    # Children before parents: a read-only folder cannot have its entries changed.
    for e in reversed(manifest.entries):
        if e.kind == "dir":
            os.chmod(os.path.join(out, e.path), 0o555)
    os.chmod(out, 0o555)
