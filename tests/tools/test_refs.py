"""Abbreviated refs: ``resolve_ref`` finds the one ref a start of a key names, refuses what
is ambiguous, too short or absent; ``short_refs`` gives the shortest start that resolves
back, computed over whole keys (realizations of one context share half their hash)."""

from __future__ import annotations

import pytest

import nixlet as nx
from cli_pipeline import realize_pipeline
from nixlet.tools.refs import MIN_ABBREV


def test_full_refs_and_values_pass_through(store: nx.Store) -> None:
    """A DRef or RRef, or its full text, is returned without looking at the store."""
    d = nx.DRef("a" * 32, "x")
    r = nx.RRef("b" * 32, "a" * 32, "x")
    assert nx.resolve_ref(d) is d and nx.resolve_ref(str(d)) == d
    assert nx.resolve_ref(r) is r and nx.resolve_ref(str(r)) == r


def test_every_short_form_resolves_back(store: nx.Store) -> None:
    """The short form of every ref of the store resolves to it, with or without its tag;
    shortening one character more does not (it is ambiguous or names another)."""
    b = realize_pipeline(store)
    refs: list[nx.DRef | nx.RRef] = [*nx.alldrefs(), *nx.allrrefs()]
    shorts = nx.short_refs(refs)
    for ref in refs:
        short = shorts[ref]
        assert len(short) >= MIN_ABBREV and str(ref)[5:].startswith(short)
        assert nx.resolve_ref(short) == ref
        assert nx.resolve_ref(f"{str(ref)[:4]}:{short}") == ref
        assert nx.short_ref(ref) == short
        if len(short) > MIN_ABBREV:
            with pytest.raises(nx.RefError, match="ambiguous"):
                nx.resolve_ref(short[:-1])
    # Four realizations share the context half: their short forms reach past it.
    context_half = len(b.runs1[0].rhash) // 2
    assert all(len(shorts[r]) > context_half for r in b.runs1 + b.runs2)
    assert all(len(shorts[d]) == MIN_ABBREV for d in nx.alldrefs())


def test_ambiguity_lists_the_candidates(store: nx.Store) -> None:
    """An ambiguous start names every candidate; the tag narrows the search to a kind."""
    b = realize_pipeline(store)
    with pytest.raises(nx.RefError) as e:
        nx.resolve_ref(b.runs1[0].rhash[:8])
    assert all(str(r) in str(e.value) for r in b.runs1 + b.runs2)
    with pytest.raises(nx.StoreError, match="no derivation"):
        nx.resolve_ref("dref:" + b.runs1[0].rhash[:8])


def test_refusals(store: nx.Store) -> None:
    """Too short, foreign characters, absent, not a string: each its own error."""
    realize_pipeline(store)
    with pytest.raises(nx.RefError, match="too short"):
        nx.resolve_ref("ab")
    with pytest.raises(nx.RefError, match="not a reference"):
        nx.resolve_ref("ab/cd")
    with pytest.raises(nx.StoreError, match="starts with 'zzzzzz'"):
        nx.resolve_ref("zzzzzz")
    with pytest.raises(nx.RefError):
        nx.resolve_ref(42)  # type: ignore[arg-type]
    with pytest.raises(nx.RefError):
        nx.short_ref("not a ref")


def test_a_whole_key_wins_over_longer_keys(store: nx.Store) -> None:
    """A ref's whole key names it, even when the store holds nothing else to compare."""
    b = realize_pipeline(store)
    assert nx.resolve_ref(b.data.key) == b.data
    assert nx.resolve_ref(str(b.data_rref)[5:]) == b.data_rref


def test_refs_not_in_the_store_get_a_short_form_too(store: nx.Store) -> None:
    """short_refs counts a ref it is given even when the store does not hold it."""
    absent = nx.DRef("q" * 32, "gone")
    assert nx.short_refs([absent]) == {absent: "qqqq"}
