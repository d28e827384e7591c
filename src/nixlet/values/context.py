"""Realization identity: the context record and the RRef hash; and the DRef hash rule,
here so that the store layer can check a derivation record it did not make (an archive's).

A realization's hash has two halves. The first names its context (the RRefs chosen for
each direct dependency; each of those names its own context, so a context stays the size of
the direct dependencies however deep the closure is). The second covers the context and the
manifest. Finding the realizations built in one context is then a prefix match on folder
names, with no file to read: this is what keeps a cached realize cheap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from nixlet.values.config import Config
from nixlet.values.errors import StoreError
from nixlet.values.hashing import HASH_CHARS, canonical_json, record_hash
from nixlet.values.refs import DRef, RRef

DERIVATION_TAG = "nixlet/derivation/v1"
CONTEXT_TAG = "nixlet/context/v1"
REALIZATION_TAG = "nixlet/realization/v1"
PREFIX_CHARS = HASH_CHARS // 2


def derivation_hash(config: Config, code: str) -> str:
    """The DRef hash of a config and a code identity (docs/store-format.md, Derivations)."""
    return record_hash(DERIVATION_TAG, config.canonical, code.encode("utf-8"))


def encode_context(context: Mapping[DRef, Sequence[RRef]]) -> bytes:
    """Canonical JSON of a context: ``{"dref:...": ["rref:...", ...]}``, keys sorted,
    each list sorted."""
    return canonical_json({str(d): sorted(str(r) for r in rs) for d, rs in context.items()})


def decode_context(data: bytes, where: str = "context.json") -> dict[DRef, tuple[RRef, ...]]:
    """Parse a ``context.json``; raise ``StoreError`` if it is not one."""
    try:
        raw = json.loads(data)
        return {DRef.parse(d): tuple(RRef.parse(r) for r in rs) for d, rs in raw.items()}
    except (ValueError, AttributeError, TypeError) as e:
        raise StoreError(f"{where} is corrupted: {e}", path=where) from None


def context_prefix(encoded_context: bytes) -> str:
    """The first half of the RRef hash of every realization built in this context."""
    return record_hash(CONTEXT_TAG, encoded_context)[:PREFIX_CHARS]


def realization_hash(encoded_context: bytes, manifest: bytes) -> str:
    """The RRef hash: context prefix, then a hash of the context and the manifest."""
    content = record_hash(REALIZATION_TAG, encoded_context, manifest)
    return context_prefix(encoded_context) + content[: HASH_CHARS - PREFIX_CHARS]


def context_of(context: Mapping[DRef, Sequence[RRef]]) -> tuple[bytes, str]:
    """The encoded context and its realization-hash prefix."""
    encoded = encode_context(context)
    return encoded, context_prefix(encoded)
