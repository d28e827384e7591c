"""Publishing: what a build step staged becomes part of the store, durably, by one rename
per object. The third part of the plan / build one step / publish protocol.

Layout (docs/store-format.md has it whole)::

    <root>/format                           store format record
    <root>/<dhash>-<name>/config.json       derivation record: canonical config ...
    <root>/<dhash>-<name>/code              ... and code identity (fingerprint or version)
    <root>/<dhash>-<name>/<rhash>/out/      a realization's files, as the build wrote them
    <root>/<dhash>-<name>/<rhash>/meta.json its context, manifest and build times
    <root>/.tmp/<host>-<pid>-<rand>/        one process's staging (nixlet.store.staging)
    <root>/.locks/build.lock                per-derivation build locks (nixlet.store.locks)

Every object (a realization, with its derivation's record the first time) is staged under
``.tmp`` on the same filesystem, sealed (``nixlet.store.sealing``), made durable, and
published by one ``rename``: readers see all of it or none. Publishing needs no lock: a
rename onto a name that exists fails, and the object there has the same name, so the same
bytes. Any process sharing the store can publish what any other staged.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs

from nixlet.store import durability, staging, temproots
from nixlet.store.layout import CODE_FILE, CONFIG_FILE, has_derivation, rref_dir_str
from nixlet.store.sealing import FULL, removed_on_error, write_record
from nixlet.values.config import Config
from nixlet.values.errors import StoreError
from nixlet.values.model import Store
from nixlet.values.refs import DRef, RRef

#: "publish <rref>" for a new realization, "exists <rref>" for one the store already held.
log = logging.getLogger("nixlet.publish")


@attrs.frozen
class Staged:
    """What ``build_step`` returns: the realizations one build left sealed in staging,
    ready for ``publish``. Picklable: any process sharing the store can publish it.

    ``objects[i]`` is the staged folder of ``rrefs[i]``, or ``None`` where the store
    already holds that RRef (a deterministic rebuild); ``paths[i]`` lists the files and
    folders under it. The derivation's record (``config``, ``code``) travels along: it enters
    the store with the derivation's first realization.
    """

    store: Store
    dref: DRef
    config: Config
    code: str
    rrefs: tuple[RRef, ...]
    objects: tuple[str | None, ...]
    paths: tuple[tuple[str, ...], ...]
    nbytes: int


def publish(staged: Staged) -> list[RRef]:
    """Publish what one build step staged; return its RRefs, durable on return.

    Raises:
        StoreError: the staged objects are gone (their staging was removed as garbage) or
            the disk is full; nothing of this step is published and its staging is removed.
    """
    return publish_many([staged])[0]


def publish_many(staged: Sequence[Staged]) -> list[list[RRef]]:
    """Publish several steps' results with one durable flush; return each one's RRefs,
    durable on return."""
    if not staged:
        return []
    with publishing(staged[0].store) as publisher:
        return publisher.publish_many(staged)


@attrs.define(eq=False)
class Publisher:
    """Publishes batches into one store and makes their names durable when its
    ``publishing`` block ends: a driver that publishes step after step (a chain of builds)
    pays one flush of names for the whole run instead of one per step. Each object's data
    is durable before the rename that publishes it, whatever the batch."""

    store: Store
    touched: set[str] = attrs.field(factory=set, init=False)

    def publish_many(self, staged: Sequence[Staged]) -> list[list[RRef]]:
        """Publish several steps' results as one batch (one durable flush of their data);
        return each one's RRefs. Their names are durable when the block ends."""
        for item in staged:
            if item.store.root != self.store.root:
                raise StoreError(
                    f"{item.dref} was staged in {item.store.root}, not in {self.store.root}",
                    path=item.store.root,
                    ref=item.dref,
                )
        items = [_Item(s, i) for s in staged for i in range(len(s.rrefs))]
        if not items:
            # Nothing to publish (a driver's round that built nothing: a cached realize):
            # no lock, and no durable flush of an empty batch (a syncfs: 9 ms here).
            return [list(s.rrefs) for s in staged]
        moves: list[_Move] = []
        try:
            # Under the gc lock (shared): a gc neither removes a derivation folder this
            # batch publishes into, nor the published RRefs before they are temporary roots
            # of this process (until a plan that records them closes, or the process ends).
            with temproots.rooting(self.store, temproots.PUBLISHED) as rooting:
                fresh = _publish_batch(self.store, items, moves, self.touched)
                rooting.add(item.rref for item in items)
        except OSError as e:
            # Whatever is still in staging was not published: remove it, so that a full disk
            # is not kept full by the batch that failed (a published object has left its
            # staging path, so this never touches the store's objects).
            for path in [m.folder for m in moves] + [i.obj for i in items if i.obj]:
                staging.remove_tree(path)
            if isinstance(e, StoreError):
                raise  # it says what happened already (the disk filled while staging records)
            raise _publish_error(self.store, e) from None
        for one, new in zip(items, fresh, strict=True):
            log.info("%s %s", "publish" if new else "exists", one.rref)
        return [list(s.rrefs) for s in staged]

    def flush(self) -> None:
        """Make every name published so far durable (the end of the block does this)."""
        if self.touched:
            durability.flush(self.store, [Path(p) for p in sorted(self.touched)])
            self.touched.clear()


@contextmanager
def publishing(store: Store) -> Iterator[Publisher]:
    """A ``Publisher`` for ``store`` whose published names are durable when the block
    ends, even when it ends by an exception (what was published stays published)."""
    publisher = Publisher(store)
    try:
        yield publisher
    finally:
        publisher.flush()


def _publish_error(store: Store, e: OSError) -> StoreError:
    return StoreError(
        f"cannot publish into {store.root}: {_why(store, e)}; nothing of this batch was published",
        path=store.root,
    )


def _why(store: Store, e: OSError) -> str:
    """What went wrong with a publication, in words."""
    if e.errno in FULL:
        why = f"the store {store.root} is full ({errno.errorcode.get(e.errno or 0)})"
    elif e.errno == errno.ENOENT:
        why = (
            "a staged object is gone: its staging folder was removed (remove_staging_garbage "
            "of a process that built it after it ended?)"
        )
    else:
        why = f"{e.strerror} ({e.filename})"
    return why


@attrs.frozen
class _Item:
    """One realization of a batch: the ``index``-th of a step's results."""

    step: Staged
    index: int

    @property
    def rref(self) -> RRef:
        return self.step.rrefs[self.index]

    @property
    def obj(self) -> str | None:
        return self.step.objects[self.index]

    @property
    def relpaths(self) -> tuple[str, ...]:
        return self.step.paths[self.index]


@attrs.frozen
class _Move:
    """One rename of a batch: a staged object to its RRef's folder, or a staged derivation
    folder (record and objects) to its DRef's folder."""

    folder: str
    name: str
    held: list[int]  # indexes of the items it publishes
    record: bool


def _publish_batch(
    store: Store, items: Sequence[_Item], moves: list[_Move], touched: set[str]
) -> list[bool]:
    """Stage the records the batch needs, make it durable, rename each object into place.

    A derivation enters the store with its first realization: its record is staged beside
    the batch's objects of that derivation and the whole folder appears by one rename, so
    a build that fails leaves nothing. Returns, for each item, whether it added a new
    realization; fills ``moves`` as it goes (for the caller's cleanup) and adds the folders
    whose entries changed to ``touched``.
    """
    fresh = [False] * len(items)
    records: dict[DRef, int] = {}
    seen: dict[RRef, str] = {}  # the object staged for each RRef of the batch
    published = _published_before(store, items)
    for i, item in enumerate(items):
        if item.obj is None or i in published:
            continue
        dref = item.step.dref
        if item.rref in seen:
            # Built twice in this batch (same name, same bytes): drop the second copy, but
            # not the one object of a Staged given twice, which is about to be renamed.
            if seen[item.rref] != item.obj:
                staging.remove_tree(item.obj)
            continue
        seen[item.rref] = item.obj
        if has_derivation(store, dref):
            moves.append(_Move(item.obj, rref_dir_str(store, item.rref), [i], record=False))
            continue
        if dref not in records:
            records[dref] = len(moves)
            folder = _stage_record(store, item.step)
            moves.append(_Move(folder, os.path.join(store.root, dref.key), [], record=True))
        move = moves[records[dref]]
        os.rename(item.obj, os.path.join(move.folder, item.rref.rhash))
        move.held.append(i)
    durability.make_durable(store, _batch_paths(items, moves), sum(s.nbytes for s in _steps(items)))
    for move in moves:
        touched.add(os.path.dirname(move.name))
        if move.record:
            touched.add(move.name)
        for i in _publish_folder(store, items, move):
            fresh[i] = True
    return fresh


def _published_before(store: Store, items: Sequence[_Item]) -> set[int]:
    """The items whose staged object is gone because it is in the store already (the same
    ``Staged`` published again: a retry, or a worker and its planner both publishing).

    Raises:
        FileNotFoundError: an object is gone and its RRef is not in the store (its staging
            was removed as garbage). Checked before any rename: finding it halfway through
            the batch would publish part of a step, which ``publish`` promises not to do.
    """
    published = set()
    for i, item in enumerate(items):
        if item.obj is None or os.path.lexists(item.obj):
            continue
        if not os.path.isdir(rref_dir_str(store, item.rref)):
            raise FileNotFoundError(errno.ENOENT, "a staged object is gone", item.obj)
        published.add(i)
    return published


def _steps(items: Iterable[_Item]) -> list[Staged]:
    return list({id(item.step): item.step for item in items}.values())


def _publish_folder(store: Store, items: Sequence[_Item], move: _Move) -> list[int]:
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
                os.path.join(folder, items[i].rref.rhash), rref_dir_str(store, items[i].rref)
            )
        ]
        staging.remove_tree(folder)
    else:
        staging.remove_tree(folder)
        published = []
    # A realization folder stays writable until it is in place: moving a folder to a new
    # parent needs write access to it (its '..' entry changes).
    for i in published:
        os.chmod(rref_dir_str(store, items[i].rref), 0o555)
    return published


def _batch_paths(items: Sequence[_Item], moves: list[_Move]) -> Iterator[Path]:
    """Every file and folder of a batch, where it is staged now (for the per-path fallback
    of ``durability.make_durable``; syncfs does not look at them)."""
    for move in moves:
        if move.record:
            yield from _record_paths(move.folder)
            for i in move.held:
                obj = Path(move.folder, items[i].rref.rhash)
                yield from (obj / rel for rel in items[i].relpaths)
        else:
            yield from (Path(move.folder, rel) for rel in items[move.held[0]].relpaths)


def _stage_record(store: Store, step: Staged) -> str:
    """Stage a derivation folder holding its record (its objects are moved in after)."""
    folder = staging.new_staging_path(store, "drv")
    with removed_on_error(store, folder):
        write_record(os.path.join(folder, CONFIG_FILE), step.config.canonical)
        write_record(os.path.join(folder, CODE_FILE), step.code.encode("utf-8"))
        # Staging folders are 0700; a store may be shared by a group (and rsync copies modes).
        os.chmod(folder, 0o755)
    return folder


def _record_paths(folder: str) -> list[Path]:
    return [Path(folder, CONFIG_FILE), Path(folder, CODE_FILE), Path(folder)]


def _rename_new(src: str | Path, dst: str | Path) -> bool:
    """Rename ``src`` to ``dst`` unless ``dst`` exists; False if it did."""
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        raise
    return True


@attrs.frozen
class Received:
    """A derivation folder that ``sync`` received into staging and checked: the record
    (``config.json``, ``code``) when ``record`` is true, and the realization objects of
    ``rrefs``, each in the folder named by its hash, sealed but still writable at the top
    (moving a folder to a new parent rewrites its ``..`` entry)."""

    dref: DRef
    folder: str
    rrefs: tuple[RRef, ...]
    record: bool


def publish_received(
    store: Store, received: Sequence[Received], paths: Iterable[Path], nbytes: int
) -> list[RRef]:
    """Publish what ``sync`` received, in the order given (dependencies first), and return
    the RRefs it added; durable on return.

    The received folders are the objects: a derivation the store lacks enters it by one
    rename of its received folder (record and realizations together, as a build's first
    publication does), with no record written again; a realization of a derivation the
    store holds is renamed into it. One durable flush of the data (``paths``, ``nbytes``:
    what the per-path fallback of ``durability.make_durable`` syncs) precedes the renames,
    one flush of the names follows them. A name another writer published meanwhile is left
    as it is (same name, same bytes), and not counted.

    Raises:
        StoreError: a rename failed (a full disk, a derivation removed under the sync);
            what was renamed before stays published and durable.
    """
    durability.make_durable(store, paths, nbytes)
    added: list[RRef] = []
    touched: set[str] = set()
    try:
        # Under the gc lock (shared), as Publisher.publish_many: a gc neither removes a
        # derivation folder this renames into, nor what it adds before it is rooted.
        with temproots.rooting(store, temproots.PROCESS) as rooting:
            _rename_received(store, received, added, touched)
            rooting.add(added)
    except OSError as e:
        raise StoreError(
            f"cannot publish what was received into {store.root}: {_why(store, e)}; what "
            "was published before stays, run the sync again to complete it",
            path=store.root,
        ) from None
    finally:
        durability.flush(store, [Path(p) for p in sorted(touched)])
    return added


def _rename_received(
    store: Store, received: Sequence[Received], added: list[RRef], touched: set[str]
) -> None:
    """The renames of ``publish_received``, in order; fills ``added`` and ``touched``."""
    for item in received:
        target = os.path.join(store.root, item.dref.key)
        if item.record and _rename_new(item.folder, target):
            touched.update((str(store.root), target))
            done = list(item.rrefs)
        else:
            touched.add(target)
            done = [
                r
                for r in item.rrefs
                if _rename_new(os.path.join(item.folder, r.rhash), rref_dir_str(store, r))
            ]
        for rref in done:
            os.chmod(rref_dir_str(store, rref), 0o555)
            log.info("publish %s", rref)
        added.extend(done)
