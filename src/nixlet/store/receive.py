"""Receiving a sync: the destination's side of ``nixlet.sync``. Part of the store layer.

A ``Receiver`` works in one store, on the machine that holds it: it says which of the
realizations a sync offers the store lacks (and which of their derivations' records), gives
a staging folder of its own process for rsync to fill, then checks every received object
against its records, seals it and publishes it. Locally ``sync`` drives a ``Receiver`` in
its own process; for a remote destination it drives one over ssh, in a process on that
machine (``nixlet.store.remote``), so the checks and renames run where the store is.

What a receiver trusts: nothing it received. A derivation's record must hash to its DRef;
a realization's folder must hold exactly ``out/`` and ``meta.json``, its files must match
the manifest (rescanned and rehashed here), and context and manifest must hash to its
RRef. One failure refuses the whole batch: nothing is published, the staging folder is
removed, and ``StoreError`` names the object.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import attrs

from nixlet.store import staging, syscalls
from nixlet.store.layout import (
    CANONICAL_MTIME,
    CODE_FILE,
    CONFIG_FILE,
    META_FILE,
    OUT,
    REALIZATION_FORMAT,
    has_derivation,
)
from nixlet.store.publish import Received, publish_received
from nixlet.store.records import read_bytes
from nixlet.store.sealing import removed_on_error, seal_received
from nixlet.values import manifest as manifest_mod
from nixlet.values.context import DERIVATION_TAG, decode_context, realization_hash
from nixlet.values.errors import StoreError
from nixlet.values.hashing import canonical_json, record_hash
from nixlet.values.model import Store
from nixlet.values.refs import DRef, RRef


@attrs.frozen
class Offer:
    """What a receiver asks for, out of what a sync offered: the realizations the store
    lacks, the derivations among theirs whose record it lacks too, and the staging folder
    to copy them into (laid out as a store: ``<dhash>-<name>/config.json``, ``code`` and
    ``<rhash>/``)."""

    missing: tuple[RRef, ...]
    records: tuple[DRef, ...]
    folder: str


@attrs.define(eq=False)
class Receiver:
    """The receiving side of one sync into ``store`` (see the module's docstring).

    ``offer`` then ``publish`` (or ``discard``); the staging folder belongs to this process,
    so a receiver killed halfway leaves garbage that ``remove_staging_garbage`` frees, and
    never a visible object.
    """

    store: Store
    offer_: Offer | None = attrs.field(default=None, init=False)

    def offer(self, rrefs: Sequence[RRef]) -> Offer:
        """Which of ``rrefs`` the store lacks, with a fresh staging folder to receive them.

        Raises:
            StoreError: the staging area cannot be written.
        """
        # One listing of the root, then one per derivation the store holds: an empty
        # store costs one system call whatever the size of the offer.
        held = set(_listing(self.store.root) or ())
        listed: dict[DRef, set[str]] = {}
        for dref in {r.dref for r in rrefs}:
            if dref.key in held and has_derivation(self.store, dref):
                found = _listing(os.path.join(self.store.root, dref.key))
                if found is not None:  # else removed meanwhile: send it all
                    listed[dref] = set(found)
        missing = tuple(r for r in rrefs if r.rhash not in listed.get(r.dref, ()))
        records = tuple(sorted({r.dref for r in missing} - set(listed)))
        folder = staging.new_staging_path(self.store, "sync") if missing else ""
        self.offer_ = Offer(missing, records, folder)
        return self.offer_

    def discard(self) -> None:
        """Remove what was received: the sync stopped before publishing."""
        if self.offer_ is not None and self.offer_.folder:
            staging.remove_tree(self.offer_.folder)
        self.offer_ = None

    def publish(self) -> list[RRef]:
        """Check, seal and publish everything received; return the RRefs added, durable on
        return (those another writer published meanwhile are left out).

        Raises:
            StoreError: a received object or record is missing or does not match its name
                (nothing is published then), or the store cannot be written.
        """
        offer = self.offer_
        if offer is None or not offer.missing:
            return []
        try:
            with removed_on_error(self.store, offer.folder):
                received, nbytes = _check_all(offer)
                paths = _paths(received)
                return publish_received(self.store, received, paths, nbytes)
        finally:
            self.discard()


def _listing(folder: str | os.PathLike[str]) -> list[str] | None:
    """The names in a folder of the store; None if it is gone.

    Raises:
        StoreError: it cannot be listed (its permissions).
    """
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise StoreError(f"cannot list {folder}: {e.strerror or e}", path=folder) from None


def _check_all(offer: Offer) -> tuple[list[Received], int]:
    """Check every received record and object, seal the objects, and order the
    derivations so that each comes after those its realizations were built from (a reader
    who sees a realization then finds its context in the store, even mid-publication)."""
    by_dref: dict[DRef, list[RRef]] = {}
    for rref in offer.missing:
        by_dref.setdefault(rref.dref, []).append(rref)
    records = set(offer.records)
    deps: dict[DRef, set[DRef]] = {}
    nbytes = 0
    for dref, rrefs in by_dref.items():
        folder = os.path.join(offer.folder, dref.key)
        expected = {r.rhash for r in rrefs}
        if dref in records:
            _check_record(folder, dref)
            expected |= {CONFIG_FILE, CODE_FILE}
        _check_names(folder, expected, dref)
        found: set[DRef] = set()
        for rref in rrefs:
            parents, size = _check_object(os.path.join(folder, rref.rhash), rref)
            found.update(parents)
            nbytes += size
        deps[dref] = found
    ordered = _dependencies_first(deps)
    received = [
        Received(d, os.path.join(offer.folder, d.key), tuple(by_dref[d]), d in records)
        for d in ordered
    ]
    return received, nbytes


def _check_names(folder: str, expected: set[str], ref: DRef | RRef) -> None:
    """The entries of a received folder are exactly ``expected``: anything else would be
    published with it."""
    try:
        names = set(os.listdir(folder))
    except OSError as e:
        raise _refused(ref, folder, f"cannot list it ({e.strerror})") from None
    if names != expected:
        odd = sorted(names ^ expected)[:5]
        raise _refused(ref, folder, f"it holds other entries than expected ({odd})")


def _check_record(folder: str, dref: DRef) -> None:
    """The received record of ``dref`` is canonical and hashes to its name."""
    try:
        config_bytes = read_bytes(os.path.join(folder, CONFIG_FILE))
        code = read_bytes(os.path.join(folder, CODE_FILE))
    except OSError as e:
        raise _refused(dref, folder, f"its record cannot be read ({e.strerror})") from None
    # Canonical JSON naming the DRef's name: the hash below binds these bytes to the
    # DRef, so a full parse of the config (mkconfig) would add nothing but time.
    try:
        config = json.loads(config_bytes)
        canonical = canonical_json(config) == config_bytes
    except ValueError as e:
        raise _refused(dref, folder, f"its config.json is corrupted ({e})") from None
    if not canonical or not isinstance(config, dict) or config.get("name") != dref.name:
        raise _refused(dref, folder, "its config.json is not the canonical config of its name")
    if record_hash(DERIVATION_TAG, config_bytes, code) != dref.dhash:
        raise _refused(dref, folder, "its record does not hash to its DRef")
    # Canonical, as a build's record is (rsync kept the sender's modes and mtimes).
    for name in (CONFIG_FILE, CODE_FILE):
        os.chmod(os.path.join(folder, name), 0o444)
        os.utime(os.path.join(folder, name), (CANONICAL_MTIME, CANONICAL_MTIME))
    os.chmod(folder, 0o755)


def _check_object(obj: str, rref: RRef) -> tuple[set[DRef], int]:
    """Check one received realization object and seal it; return the derivations its
    context names and the bytes of its files."""
    _check_names(obj, {OUT, META_FILE}, rref)
    path = os.path.join(obj, META_FILE)
    try:
        data = read_bytes(path)
        meta = json.loads(data)
        if meta["format"] != REALIZATION_FORMAT or set(meta) != {
            "build",
            "context",
            "format",
            "manifest",
        }:
            raise ValueError("not a realization record")
        context = canonical_json(meta["context"])
        recorded = canonical_json(meta["manifest"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _refused(rref, obj, f"its meta.json is missing or corrupted ({e})") from None
    if realization_hash(context, recorded) != rref.rhash:
        raise _refused(rref, obj, "its context and manifest do not hash to its RRef")
    try:
        scanned = manifest_mod.scan(Path(obj, OUT), writeback=syscalls.start_writeback)
    except (OSError, manifest_mod.UnsupportedEntry) as e:
        raise _refused(rref, obj, f"its files cannot be read ({e})") from None
    if scanned.canonical() != recorded:
        raise _refused(rref, obj, "its files do not match the manifest in its meta.json")
    parents = decode_context(context, path)
    seal_received(obj, scanned)
    return set(parents), scanned.total_size


def _refused(ref: DRef | RRef, path: str, why: str) -> StoreError:
    return StoreError(
        f"refused {ref} from the sync's source: {why}; nothing of this sync was published "
        "(check the source store: the object is corrupted there, or changed in transit)",
        path=path,
        ref=ref,
    )


def _dependencies_first(deps: Mapping[DRef, set[DRef]]) -> list[DRef]:
    """The derivations of ``deps`` ordered so that each follows those it depends on
    (among them). Iterative: a chain of 10,000 stages is deeper than Python's stack."""
    order: list[DRef] = []
    done: set[DRef] = set()
    for start in sorted(deps):
        stack: list[tuple[DRef, Iterator[DRef]]] = [(start, iter(sorted(deps[start])))]
        if start in done:
            continue
        done.add(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                order.append(node)
            elif child in deps and child not in done:
                done.add(child)
                stack.append((child, iter(sorted(deps[child]))))
    return order


def _paths(received: Sequence[Received]) -> Iterator[Path]:
    """Every received file and folder, for the per-path fallback of the durable flush
    (files of large batches are fsynced one by one rather than by one syncfs)."""
    for item in received:
        for folder, _dirs, files in os.walk(item.folder):
            yield Path(folder)
            for name in files:
                path = os.path.join(folder, name)
                if not os.path.islink(path):  # a symlink has no data; its target may be gone
                    yield Path(path)
