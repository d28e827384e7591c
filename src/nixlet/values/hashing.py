"""Canonical encodings and the two hash functions of store format 1.

Records (configs, contexts, manifests) are small and name things that travel between
machines, so they are hashed with SHA-256: stdlib, stable everywhere, and collision
resistant even against a hostile store merged by rsync. File contents are large and are
hashed with xxh3-128: several GB/s, so hashing never dominates a build, and the manifest
that holds these content hashes is itself covered by SHA-256. docs/store-format.md has the
reasoning and test vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import xxhash

#: Digests are truncated to 160 bits and written in lowercase RFC 4648 base32 (32 chars):
#: short enough for folder names, long enough that collisions are not a practical concern.
DIGEST_BYTES = 20
HASH_CHARS = 32
CHUNK = 1 << 20
SMALL = 1 << 16


# One encoder for the process: json.dumps with options builds a new one on every call.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
#: The base32 alphabet of hashes (RFC 4648, lowercase): character i stands for value i.
B32_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
# Every 10-bit value as two characters.
_B32_PAIRS = [a + b for a in B32_ALPHABET for b in B32_ALPHABET]


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 JSON of a value: sorted keys, no whitespace, shortest
    round-trip floats (Python's ``repr``), no NaN or infinities."""
    return _ENCODER.encode(value).encode("utf-8")


def b32(digest: bytes) -> str:
    """Lowercase RFC 4648 base32 without padding; only ``[a-z2-7]``, safe in file names.

    The same as ``base64.b32encode(digest).decode().rstrip("=").lower()``, which is pure
    Python in 3.11 and three times slower; digests are hashed once per derivation.
    """
    bits = len(digest) * 8
    pad = -bits % 10  # whole 10-bit groups; the padding bits are zero, as in RFC 4648
    n = int.from_bytes(digest, "big") << pad
    text = "".join([_B32_PAIRS[(n >> shift) & 1023] for shift in range(bits + pad - 10, -1, -10)])
    return text[: -(-bits // 5)]


def record_digest(tag: str, *parts: bytes) -> bytes:
    """SHA-256 of a typed record: the tag (``nixlet/<kind>/v<n>``) then each part, each
    preceded by its length so that no two sequences of parts encode alike."""
    h = hashlib.sha256()
    h.update(tag.encode("ascii"))
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


def record_hash(tag: str, *parts: bytes) -> str:
    """``record_digest`` truncated to 160 bits, in base32: the hash parts of refs."""
    return b32(record_digest(tag, *parts)[:DIGEST_BYTES])


def file_hash(
    path: str | os.PathLike[str],
    size: int | None = None,
    writeback: Callable[[int], None] | None = None,
) -> str:
    """xxh3-128 of a file's bytes, in hex, streamed in 1 MiB chunks (never the whole file
    in memory). ``size``, when the caller knows it, lets a small file be read in one
    system call; ``writeback``, called with the descriptor of a large file before it is
    read, lets the store layer start its write-out (this module does no I/O of its own
    beyond reading)."""
    if size is not None and size < SMALL:
        fd = os.open(path, os.O_RDONLY)
        try:
            data = os.read(fd, SMALL)
            if len(data) < SMALL:  # the whole file: it did not grow meanwhile
                return xxhash.xxh3_128_hexdigest(data)
        finally:
            os.close(fd)
    h = xxhash.xxh3_128()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        if writeback is not None and size is not None and size >= WRITEBACK_FROM:
            # A build's large outputs are hashed just before the flush that makes them
            # durable: starting their write-out now lets the disk work while the rest is
            # hashed (a 1 GiB output's fsyncs then found almost nothing left to write).
            writeback(f.fileno())
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


#: Files at least this large start their write-out when they are hashed.
WRITEBACK_FROM = 1 << 20


def bytes_hash(data: bytes) -> str:
    """xxh3-128 of bytes in memory, in hex (symlink targets)."""
    return xxhash.xxh3_128_hexdigest(data)
