"""``rreftimes``, ``rreffiles`` and ``refsize``: what a realization's record says, and the
bytes a ref takes alone and with its closure."""

from __future__ import annotations

import time

import pytest

import nixlet as nx
from cli_pipeline import realize_pipeline


def test_build_times(store: nx.Store) -> None:
    """Build times are this run's, start before finish."""
    before = time.time()
    b = realize_pipeline(store)
    started, finished = nx.rreftimes(b.runs1[0])
    assert before - 1 <= started <= finished <= time.time() + 1
    with pytest.raises(nx.StoreError):
        nx.rreftimes(nx.RRef("z" * 32, b.data.dhash, "data"))


def test_files_are_every_file_at_every_depth(store: nx.Store) -> None:
    """rreffiles lists files (not folders) from the manifest, as the folder holds them."""
    b = realize_pipeline(store)
    assert nx.rreffiles(b.data_rref) == ["data/numbers.json"]
    assert nx.rreffiles(str(b.runs1[0])) == ["score.txt", "seed.txt"]


def test_sizes_agree_with_du(store: nx.Store) -> None:
    """refsize of a realization is du's; of a derivation, the sum of its realizations';
    with closure=True, the realizations it was built from count, each once."""
    b = realize_pipeline(store)
    usage = nx.du()
    for d, (total, per) in usage.items():
        assert nx.refsize(d) == total
        for r, n in per.items():
            assert nx.refsize(r) == n
    data = usage[b.data][0]
    assert nx.refsize(b.runs1[0], closure=True) == usage[b.train1][1][b.runs1[0]] + data
    # Both realizations of train1 were built from one data realization: counted once.
    assert nx.refsize(b.train1, closure=True) == usage[b.train1][0] + data
    assert nx.refsize(b.data, closure=True) == data


def test_a_closure_with_a_hole_has_no_size(store: nx.Store) -> None:
    """After rmref of a dependency, the closure size is refused, naming what is gone;
    the ref's own size still reads."""
    b = realize_pipeline(store)
    nx.rmref(b.data_rref, force=True)
    with pytest.raises(nx.StoreError, match="closure") as e:
        nx.refsize(b.runs2[0], closure=True)
    assert e.value.ref == b.data_rref
    assert nx.refsize(b.runs2[0]) > 0
    with pytest.raises(nx.StoreError):
        nx.refsize(nx.DRef("z" * 32, "gone"))
