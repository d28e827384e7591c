"""How two refs differ: two derivations' configs, or two realizations' configs, contexts and
files. Reading only; ``nixlet diff`` prints what ``diff`` returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from nixlet.store import opening as store_mod
from nixlet.store import records
from nixlet.store.opening import StoreArg
from nixlet.tools.describe import manifest_entries
from nixlet.values.errors import UsageError
from nixlet.values.model import Store
from nixlet.values.refs import DRef, RRef, parse_ref


@attrs.frozen
class Changes:
    """What differs between two mappings, by path: ``added`` (only in the second, with
    its value there), ``removed`` (only in the first, with its value there) and
    ``changed`` (in both, with ``(first, second)`` values). True when anything differs."""

    added: dict[str, object] = attrs.field(factory=dict)
    removed: dict[str, object] = attrs.field(factory=dict)
    changed: dict[str, tuple[object, object]] = attrs.field(factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def to_json(self) -> dict[str, object]:
        """The changes as JSON-able data: ``{"added": {...}, "removed": {...}, "changed":
        {path: [first, second]}}`` (what ``nixlet diff --json`` prints)."""
        return {
            "added": dict(self.added),
            "removed": dict(self.removed),
            "changed": {k: list(v) for k, v in self.changed.items()},
        }


@attrs.frozen
class Diff:
    """How ``b`` differs from ``a`` (see ``diff``): ``config``, by JSON-pointer path into
    the configs (``/opts/lr``, ``/layers/1``); ``context``, by dependency DRef, each
    value the sorted RRef texts chosen for it; ``files``, by path inside the realizations,
    each value the manifest entry (``type``, ``size``, ``executable``, ``xxh3_128``).
    The last two are empty for derivations. True when anything differs."""

    a: DRef | RRef
    b: DRef | RRef
    config: Changes
    context: Changes
    files: Changes

    def __bool__(self) -> bool:
        return bool(self.config or self.context or self.files)


def diff(a: DRef | RRef | str, b: DRef | RRef | str, *, store: StoreArg = None) -> Diff:
    """How two derivations, or two realizations, differ.

    Two derivations: their configs, compared recursively (a key or list item added,
    removed or changed; ``1``, ``1.0`` and ``true`` differ, as they do in the DRef). Two
    derivations whose configs are equal differ in their build code only, and their
    ``Diff`` is empty. Two realizations: their derivations' configs, as above (empty when
    both realize one derivation), their contexts, and their files, compared by content
    hash, size, kind and executable bit; folders count as entries too.

    Raises:
        RefError: ``a`` or ``b`` is not a DRef or RRef.
        UsageError: one is a derivation and the other a realization.
        StoreError: one of them is not in the store, or a record cannot be read or is
            corrupted.
    """
    ra, rb = parse_ref(a), parse_ref(b)
    s = store_mod.resolve(store)
    if isinstance(ra, DRef) != isinstance(rb, DRef):
        raise UsageError(
            f"diff compares two derivations or two realizations, got {ra} and {rb}; "
            "compare a realization's derivation with rref2dref(rref)",
            argument="b",
        )
    da = ra if isinstance(ra, DRef) else ra.dref
    db = rb if isinstance(rb, DRef) else rb.dref
    config = _config_changes(s, da, db)
    if isinstance(ra, DRef) or isinstance(rb, DRef):
        return Diff(ra, rb, config, Changes(), Changes())
    context = _mapping_changes(_context(s, ra), _context(s, rb))
    files = _mapping_changes(_files(s, ra), _files(s, rb))
    return Diff(ra, rb, config, context, files)


def _config_changes(store: Store, a: DRef, b: DRef) -> Changes:
    ca = records.read_config(store, a, check=True).to_dict()
    cb = records.read_config(store, b, check=True).to_dict()
    changes = Changes()
    _walk(ca, cb, "", changes)
    return changes


def _walk(a: object, b: object, path: str, out: Changes) -> None:
    """Record in ``out`` how ``b`` differs from ``a`` below ``path``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            _step(a, b, key, f"{path}/{_escape(key)}", out)
    elif isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            _step(dict(enumerate(a)), dict(enumerate(b)), i, f"{path}/{i}", out)
    elif type(a) is not type(b) or a != b:
        # The type too: 1 == 1.0 == True in Python, but not in canonical JSON nor the DRef.
        out.changed[path] = (a, b)


def _step(
    a: Mapping[Any, object], b: Mapping[Any, object], key: Any, path: str, out: Changes
) -> None:
    if key not in b:
        out.removed[path] = a[key]
    elif key not in a:
        out.added[path] = b[key]
    else:
        _walk(a[key], b[key], path, out)


def _escape(key: str) -> str:
    """A key as a JSON pointer (RFC 6901) writes it: ``~`` and ``/`` escaped."""
    return key.replace("~", "~0").replace("/", "~1")


def _mapping_changes(a: Mapping[str, object], b: Mapping[str, object]) -> Changes:
    out = Changes()
    for key in sorted(a.keys() | b.keys()):
        if key not in b:
            out.removed[key] = a[key]
        elif key not in a:
            out.added[key] = b[key]
        elif a[key] != b[key]:
            out.changed[key] = (a[key], b[key])
    return out


def _context(store: Store, rref: RRef) -> dict[str, object]:
    return {
        str(d): sorted(str(r) for r in rs)
        for d, rs in records.read_context_refs(store, rref).items()
    }


def _files(store: Store, rref: RRef) -> dict[str, object]:
    return {
        e.path: {k: v for k, v in e.to_json().items() if k != "path"}
        for e in manifest_entries(store, rref)
    }
