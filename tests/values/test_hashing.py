"""Hash stability: the DRef test vectors of ``tests/vectors.json`` (checked against both the
library and a second implementation written here from the spec), the record encoding, and
streamed file hashing."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

import nixlet as nx
from nixlet.values import hashing

VECTORS_FILE = Path(__file__).parent.parent / "vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
PROPERTY = settings(max_examples=40, deadline=None)

# ---------------------------------------------------------------- a second implementation

_B32 = "abcdefghijklmnopqrstuvwxyz234567"


def base32_lower(data: bytes) -> str:
    """RFC 4648 base32, lowercase, no padding: 5 bits per char, written out by hand."""
    bits = "".join(f"{byte:08b}" for byte in data)
    bits += "0" * (-len(bits) % 5)
    return "".join(_B32[int(bits[i : i + 5], 2)] for i in range(0, len(bits), 5))


def spec_dhash(tag: str, canonical: bytes, code: str) -> str:
    """The dhash by the spec: base32(sha256(tag, then each part prefixed by its length as
    an unsigned 64-bit big-endian integer)[:20])."""
    data = tag.encode("ascii")
    for part in (canonical, code.encode("utf-8")):
        data += struct.pack(">Q", len(part)) + part
    return base32_lower(hashlib.sha256(data).digest()[:20])


def _noop(store: nx.Store, dref: nx.DRef, context: nx.Context, /) -> list[Path]:
    raise AssertionError("the vectors are never built")


def _empty(b: nx.Build) -> None:
    """Build nothing: the output is an empty folder."""


def _other_noop(store: nx.Store, dref: nx.DRef, context: nx.Context, /) -> list[Path]:
    return [Path("/nowhere")]


# ---------------------------------------------------------------- the vectors


def test_vectors_file_is_well_formed() -> None:
    """The vectors file names the derivation tag and holds entries with every field."""
    assert VECTORS["derivation_tag"] == "nixlet/derivation/v1"
    assert len(VECTORS["vectors"]) >= 5
    for v in VECTORS["vectors"]:
        assert set(v) == {"config", "version", "code", "canonical", "canonical_hex", "dref"}
        assert v["canonical"].encode("utf-8") == bytes.fromhex(v["canonical_hex"])
        assert v["code"] == f"version:{v['version']}"


def test_vectors_match_the_library(store: nx.Store) -> None:
    """Declaring each vector's config with ``version=`` (one instantiation, in file order)
    gives exactly the canonical bytes and DRef written in the file."""
    m = nx.Manager(store)
    for v in VECTORS["vectors"]:
        config = nx.mkconfig(v["config"])
        assert config.canonical == bytes.fromhex(v["canonical_hex"]), v["config"]
        dref = nx.mkdrv(m, v["config"], nx.match_only(), _noop, version=v["version"])
        assert str(dref) == v["dref"], v["config"]


def test_vectors_match_a_second_implementation() -> None:
    """Each vector's DRef is recomputed from its canonical bytes with hashlib and a
    hand-written base32, independently of nixlet.hashing."""
    tag = VECTORS["derivation_tag"]
    for v in VECTORS["vectors"]:
        canonical = bytes.fromhex(v["canonical_hex"])
        name = v["config"].get("name", "unnamed")
        assert v["dref"] == f"dref:{spec_dhash(tag, canonical, v['code'])}-{name}"


def test_vector_canonical_forms_match_an_independent_encoder() -> None:
    """Each vector's canonical bytes are sorted-key, whitespace-free UTF-8 JSON."""
    for v in VECTORS["vectors"]:
        text = json.dumps(
            v["config"], sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        assert text.encode("utf-8") == bytes.fromhex(v["canonical_hex"])


def test_vectors_are_recorded_in_the_store(store: nx.Store) -> None:
    """A vector realized in a store writes its canonical bytes and code identity as the
    derivation record, under the folder its DRef names."""
    v = VECTORS["vectors"][0]
    c = nx.instantiate(
        lambda m: nx.mkdrv(m, v["config"], nx.match_only(), nx.build_wrapper(_empty), version="1")
    )
    assert str(c.result) == v["dref"]
    nx.realize(c)
    folder = nx.dref2path(c.result)
    assert (folder / "config.json").read_bytes() == bytes.fromhex(v["canonical_hex"])
    assert (folder / "code").read_text() == v["code"]


def test_promise_object_gives_the_promise_vector() -> None:
    """The promise vector, written with ``nixlet.promise``, has the same canonical bytes."""
    (v,) = [v for v in VECTORS["vectors"] if v["config"].get("name") == "model"]
    config = {
        k: ([nx.promise, *x[1:]] if isinstance(x, list) else x) for k, x in v["config"].items()
    }
    assert nx.mkconfig(config).canonical == bytes.fromhex(v["canonical_hex"])


def test_explicit_version_ignores_the_realizer(store: nx.Store) -> None:
    """With ``version=``, two different realizers give the same DRef (no fingerprint)."""
    v = VECTORS["vectors"][0]
    m = nx.Manager(store)
    a = nx.mkdrv(m, v["config"], nx.match_only(), _noop, version="1")
    b = nx.mkdrv(m, v["config"], nx.match_all(), _other_noop, version="1")
    assert a == b
    assert str(a) == v["dref"]


# ---------------------------------------------------------------- encodings


def test_canonical_json_is_sorted_compact_utf8() -> None:
    """canonical_json sorts keys, drops whitespace and keeps non-ASCII as UTF-8."""
    assert hashing.canonical_json({"b": 1, "a": [1.5, None, True], "é": "✓"}) == (
        '{"a":[1.5,null,true],"b":1,"é":"✓"}'.encode()
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [float("-inf")]])
def test_canonical_json_refuses_non_finite(value: Any) -> None:
    """NaN and infinities have no canonical JSON."""
    with pytest.raises(ValueError):
        hashing.canonical_json(value)


@PROPERTY
@given(st.binary(max_size=64))
def test_b32_is_rfc4648_lowercase_unpadded(data: bytes) -> None:
    """b32 agrees with a hand-written base32 and uses only [a-z2-7]."""
    assert hashing.b32(data) == base32_lower(data)
    assert set(hashing.b32(data)) <= set(_B32)


@PROPERTY
@given(st.text(max_size=10), st.lists(st.binary(max_size=8), max_size=4))
def test_record_digest_matches_the_spec(tag: str, parts: list[bytes]) -> None:
    """record_digest is SHA-256 of the tag then each length-prefixed part, and
    record_hash its first 160 bits in base32 (32 chars)."""
    tag = tag.encode("ascii", "ignore").decode()
    data = tag.encode("ascii") + b"".join(struct.pack(">Q", len(p)) + p for p in parts)
    assert hashing.record_digest(tag, *parts) == hashlib.sha256(data).digest()
    h = hashing.record_hash(tag, *parts)
    assert h == base32_lower(hashlib.sha256(data).digest()[:20])
    assert len(h) == 32


@PROPERTY
@given(st.lists(st.binary(max_size=6), max_size=4), st.lists(st.binary(max_size=6), max_size=4))
def test_record_encoding_is_injective(a: list[bytes], b: list[bytes]) -> None:
    """Different sequences of parts never hash alike, even when their concatenations are
    equal (``("ab", "c")`` vs ``("a", "bc")``)."""
    if a != b:
        assert hashing.record_digest("t", *a) != hashing.record_digest("t", *b)


def test_record_parts_boundaries_count() -> None:
    """Moving bytes between parts changes the digest."""
    assert hashing.record_digest("t", b"ab", b"c") != hashing.record_digest("t", b"a", b"bc")
    assert hashing.record_digest("t", b"abc") != hashing.record_digest("t", b"abc", b"")


# ---------------------------------------------------------------- file hashing


def test_file_hash_of_a_file_larger_than_the_chunk(tmp_path: Path) -> None:
    """A file spanning several 1 MiB chunks (and a partial one) hashes like xxh3-128 of
    its whole bytes."""
    data = os.urandom(2 * hashing.CHUNK + 12345)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert hashing.file_hash(path) == xxhash.xxh3_128_hexdigest(data)


def test_file_hash_reads_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """file_hash never asks for more than one chunk at a time (it streams)."""
    data = os.urandom(3 * hashing.CHUNK + 7)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    sizes: list[int] = []
    real_open = open

    class Spy:
        def __init__(self, f: Any) -> None:
            self.f = f

        def __enter__(self) -> Spy:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def readinto(self, buf: Any) -> int:
            sizes.append(len(buf))
            n: int = self.f.readinto(buf)
            return n

        def read(self, n: int = -1) -> bytes:
            sizes.append(n)
            out: bytes = self.f.read(n)
            return out

    monkeypatch.setattr("builtins.open", lambda *a, **k: Spy(real_open(*a, **k)))
    digest = hashing.file_hash(path)
    monkeypatch.undo()
    assert digest == xxhash.xxh3_128_hexdigest(data)
    assert sizes and all(0 < s <= hashing.CHUNK for s in sizes)


@PROPERTY
@given(st.binary(max_size=300), st.integers(1, 64))
def test_file_hash_is_independent_of_the_chunk_size(data: bytes, chunk: int) -> None:
    """Whatever the chunk size, streaming gives the digest of the whole bytes."""
    import tempfile

    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        old = hashing.CHUNK
        hashing.CHUNK = chunk
        try:
            assert hashing.file_hash(f.name) == xxhash.xxh3_128_hexdigest(data)
        finally:
            hashing.CHUNK = old


def test_bytes_hash_is_xxh3_128() -> None:
    """bytes_hash is the xxh3-128 hex digest."""
    assert hashing.bytes_hash(b"target") == xxhash.xxh3_128_hexdigest(b"target")
