"""DRef and RRef: their text forms, parsing (round trip, hostile strings), and the
small value types (promise, Config) they travel with."""

from __future__ import annotations

import copy
import pickle

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nixlet as nx
from strategies import (
    drefs,
    hashes,
    hostile_ref_texts,
    names,
    rrefs,
    valid_dref_text,
    valid_rref_text,
)

H1 = "a" * 32
H2 = "b" * 32

PROPERTY = settings(max_examples=50, deadline=None)


def test_dref_text_form() -> None:
    """A DRef prints as ``dref:<hash>-<name>`` and its folder key is ``<hash>-<name>``."""
    d = nx.DRef(H1, "train")
    assert str(d) == f"dref:{H1}-train"
    assert d.key == f"{H1}-train"


def test_rref_text_form() -> None:
    """An RRef prints as ``rref:<rhash>-<dhash>-<name>``."""
    r = nx.RRef(H2, H1, "train")
    assert str(r) == f"rref:{H2}-{H1}-train"


def test_rref2dref() -> None:
    """rref2dref gives the derivation of a realization, from an RRef or its text."""
    r = nx.RRef(H2, H1, "train")
    assert nx.rref2dref(r) == nx.DRef(H1, "train")
    assert nx.rref2dref(str(r)) == nx.DRef(H1, "train")  # type: ignore[arg-type]
    assert r.dref == nx.DRef(H1, "train")


def test_rref2dref_refuses_a_dref() -> None:
    """rref2dref of a DRef (not a realization) raises RefError."""
    with pytest.raises(nx.RefError):
        nx.rref2dref(nx.DRef(H1, "x"))  # type: ignore[arg-type]


@PROPERTY
@given(drefs)
def test_dref_parse_round_trip(d: nx.DRef) -> None:
    """``DRef.parse(str(d)) == d`` for every DRef."""
    assert nx.DRef.parse(str(d)) == d
    assert valid_dref_text(str(d))


@PROPERTY
@given(rrefs)
def test_rref_parse_round_trip(r: nx.RRef) -> None:
    """``RRef.parse(str(r)) == r`` for every RRef, and its DRef round-trips too."""
    assert nx.RRef.parse(str(r)) == r
    assert nx.DRef.parse(str(r.dref)) == r.dref
    assert valid_rref_text(str(r))


@PROPERTY
@given(st.one_of(hostile_ref_texts(), st.text(max_size=120)))
def test_parse_accepts_exactly_the_grammar(text: str) -> None:
    """DRef.parse and RRef.parse accept a string iff the spec's grammar does (checked by an
    independent regex); anything else raises RefError, never another error."""
    for cls, valid in ((nx.DRef, valid_dref_text), (nx.RRef, valid_rref_text)):
        if valid(text):
            assert str(cls.parse(text)) == text
        else:
            with pytest.raises(nx.RefError):
                cls.parse(text)


HOSTILE_REFS = [
    "",
    "dref:",
    "rref:",
    f"dref:{H1}",
    f"dref:{H1}-",
    f"dref:{H1}-..",
    f"dref:{H1}-a..b",
    f"dref:{H1}-../../etc/passwd",
    f"dref:{H1}-a/b",
    f"dref:{H1}-/abs",
    f"dref:{H1}-a\x00",
    f"dref:{H1}-a\n",
    f"dref:{H1}-caf\u00e9",
    f"dref:{H1}-\u0661",
    f"dref:{H1}-" + "x" * 65,
    f"dref:{H1[:-1]}-x",
    f"dref:{H1}a-x",
    f"dref:{'A' * 32}-x",
    f"dref:{'1' * 32}-x",
    f"dref:{'a' * 31}\u00e9-x",
    f"DREF:{H1}-x",
    f" dref:{H1}-x",
    f"dref:{H1}-x ",
    f"dref:{H1}_x",
    f"rref:{H2}-{H1}-..",
    f"rref:{H2}-{H1}-x/y",
    f"rref:{H2}-{H1}",
    f"rref:{H2}-x",
    f"rref:{H2[:-1]}-{H1}-x",
    f"rref:{H2}-{H1}-x\x00",
    f"rref:{H2}--{H1}-x",
    f"../{H1}-x",
    f"{H1}-x",
]


@pytest.mark.parametrize("text", HOSTILE_REFS)
def test_parse_refuses_hostile_strings(text: str) -> None:
    """Malformed refs (traversal, slashes, empty, wrong hash length or charset, unicode,
    NUL, whitespace) raise RefError from both parsers."""
    with pytest.raises(nx.RefError):
        nx.DRef.parse(text)
    with pytest.raises(nx.RefError):
        nx.RRef.parse(text)


@pytest.mark.parametrize("value", [None, 1, b"dref:" + H1.encode() + b"-x", ["dref:x"], object()])
def test_parse_refuses_non_strings(value: object) -> None:
    """Parsing anything that is not a str (or the ref type itself) raises RefError."""
    with pytest.raises(nx.RefError):
        nx.DRef.parse(value)
    with pytest.raises(nx.RefError):
        nx.RRef.parse(value)


def test_dref_and_rref_strings_are_not_interchangeable() -> None:
    """A dref: string is not an RRef and an rref: string is not a DRef of the same parts."""
    r = nx.RRef(H2, H1, "x")
    with pytest.raises(nx.RefError):
        nx.RRef.parse(str(r.dref))
    with pytest.raises(nx.RefError):
        nx.DRef.parse(str(r))


@pytest.mark.parametrize(
    ("dhash", "name"),
    [("a" * 31, "x"), ("A" * 32, "x"), (H1, ""), (H1, ".."), (H1, "a/b"), (H1, "x" * 65)],
)
def test_constructors_validate(dhash: str, name: str) -> None:
    """Building a DRef or RRef from bad parts raises RefError, not just parsing."""
    with pytest.raises(nx.RefError):
        nx.DRef(dhash, name)
    with pytest.raises(nx.RefError):
        nx.RRef(H2, dhash, name)


@given(hashes, names)
@PROPERTY
def test_parse_returns_refs_unchanged(h: str, name: str) -> None:
    """Parsing an existing DRef/RRef object returns it as it is."""
    d = nx.DRef(h, name)
    r = nx.RRef(h, h, name)
    assert nx.DRef.parse(d) is d
    assert nx.RRef.parse(r) is r


def test_refs_are_frozen_hashable_ordered_and_picklable() -> None:
    """Refs are immutable values: hashable, ordered, equal after pickling."""
    d1, d2 = nx.DRef(H1, "a"), nx.DRef(H2, "a")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        d1.name = "b"  # type: ignore[misc]
    assert sorted([d2, d1]) == [d1, d2]
    assert len({d1, nx.DRef(H1, "a")}) == 1
    r = nx.RRef(H2, H1, "a")
    assert pickle.loads(pickle.dumps(r)) == r
    assert pickle.loads(pickle.dumps(d1)) == d1


def test_promise_is_a_singleton_across_pickle_and_copy() -> None:
    """``nixlet.promise`` stays the same object through pickle and deepcopy, so a config
    shipped to another process still promises."""
    assert pickle.loads(pickle.dumps(nx.promise)) is nx.promise
    assert copy.deepcopy(nx.promise) is nx.promise
    assert repr(nx.promise) == "promise"


def test_config_is_frozen_and_to_dict_is_a_copy() -> None:
    """A Config cannot be changed, and mutating ``to_dict()`` does not touch it."""
    c = nx.mkconfig({"name": "x", "a": [1, 2]})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        c.name = "y"  # type: ignore[misc]
    d = c.to_dict()
    d["a"].append(3)
    assert c.to_dict() == {"name": "x", "a": [1, 2]}


def test_store_prints_as_its_root() -> None:
    """A Store prints as its folder."""
    s = nx.Store("/some/where")
    assert str(s) == "/some/where"
