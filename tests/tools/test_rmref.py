"""rmref refuses to remove what others in the store depend on, names them, and removes
it anyway with ``force=True``."""

from __future__ import annotations

import pytest

import nixlet as nx
from strategies import Diamond, realize_diamond, store_view


@pytest.fixture
def dia(store: nx.Store) -> Diamond:
    """The diamond a <- (b, c) <- d, realized in the test's store."""
    return realize_diamond()


def test_rmref_refuses_a_realization_others_were_built_from(store: nx.Store, dia: Diamond) -> None:
    """Removing ``a``'s realization, which ``b``'s and ``c``'s contexts name, is refused
    with a StoreError naming both; the store is unchanged."""
    before = store_view(store)
    with pytest.raises(nx.StoreError) as e:
        nx.rmref(dia.ra)
    assert e.value.ref == dia.ra
    assert str(dia.rb) in str(e.value) and str(dia.rc) in str(e.value)
    assert "force=True" in str(e.value)
    assert store_view(store) == before


def test_rmref_refuses_a_derivation_others_name(store: nx.Store, dia: Diamond) -> None:
    """Removing derivation ``b``, which ``d``'s config names, is refused naming ``d``."""
    before = store_view(store)
    with pytest.raises(nx.StoreError, match=str(dia.d)):
        nx.rmref(str(dia.b))
    assert store_view(store) == before


def test_rmref_removes_from_the_top_down(store: nx.Store, dia: Diamond) -> None:
    """What nothing depends on goes; then what depended only on it goes too."""
    nx.rmref(dia.rd)
    nx.rmref(dia.d)
    nx.rmref(dia.rb)
    assert dia.rb not in nx.allrrefs()
    nx.rmref(dia.b)
    with pytest.raises(nx.StoreError, match=str(dia.rc)):
        nx.rmref(dia.ra)
    nx.rmref(dia.c)
    nx.rmref(dia.a)
    assert nx.alldrefs() == []


def test_rmref_force_removes_what_others_depend_on(store: nx.Store, dia: Diamond) -> None:
    """force=True removes it; its dependents stay, naming an input that is gone."""
    nx.rmref(dia.ra, force=True)
    assert dia.ra not in nx.allrrefs() and dia.rb in nx.allrrefs()
    nx.rmref(dia.b, force=True)
    assert dia.b not in nx.alldrefs() and dia.rd in nx.allrrefs()
