"""The four workloads written against nixlet's public API (``import nixlet as nx``).

A stage is ``stage(m: nx.Manager, *args) -> nx.DRef`` calling ``nx.mkdrv(m, config, matcher,
realizer)``; a DRef inside a config is a dependency; ``nx.instantiate(stage, *args, store=...)``
returns a closure and ``nx.realize(closure, force_rebuild=..., store=...)`` an RRef. The matcher
is not part of a derivation's identity, so the non-deterministic stage instantiated again with
``nx.match_best("score.txt")`` sees the realizations built under ``nx.match_latest()``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from common import (
    GC_CHAIN,
    GC_FANIN,
    GC_NONDET,
    OUT_FILE,
    SCORE_FILE,
    file_header,
    fill_in_child,
    timed,
)

import nixlet as nx

Metrics = dict[str, float]


class _Payload:
    """Holds the big workload's bytes.

    nixlet fingerprints the constants a build function reads (``bytes`` by value, through
    ``repr``); an object is fingerprinted by its type only, so the 64 MiB buffer is kept in one.
    """

    data: bytes = b""
    files: int = 0


_PAYLOAD = _Payload()


def _store(root: Path) -> nx.Store:
    return nx.store_initialize(root / "store")


def _build_one(b: nx.Build) -> None:
    c = nx.build_cattrs(b)
    (nx.build_outpath(b) / OUT_FILE).write_text(str(c.i))


def _chain(m: nx.Manager, n: int) -> nx.DRef:
    prev: nx.DRef | None = None
    for i in range(n):
        cfg: dict[str, Any] = {"name": f"s{i}", "i": i}
        if prev is not None:
            cfg["prev"] = prev
        prev = nx.mkdrv(m, nx.mkconfig(cfg), nx.match_some(), nx.build_wrapper(_build_one))
    assert prev is not None
    return prev


def _read_out(rref: nx.RRef, store: nx.Store) -> str:
    return (nx.rref2path(rref, store=store) / OUT_FILE).read_text()


def chain(root: Path, n: int) -> Metrics:
    """Workload 1: instantiate, first realize, then (fresh instantiate) cached realize."""
    store = _store(root)
    t_inst, closure = timed(lambda: nx.instantiate(_chain, n, store=store))
    t_real, rref = timed(lambda: nx.realize(closure, store=store))
    again = nx.instantiate(_chain, n, store=store)
    t_cached, rref2 = timed(lambda: nx.realize(again, store=store))
    assert rref2 == rref and _read_out(rref, store) == str(n - 1)
    return {"instantiate": t_inst, "realize": t_real, "cached": t_cached}


def _build_sum(b: nx.Build) -> None:
    deps = nx.build_cattrs(b).deps
    total = sum(int(nx.build_path(b, [dep, OUT_FILE]).read_text()) for dep in deps)
    (nx.build_outpath(b) / OUT_FILE).write_text(str(total))


def _fanin(m: nx.Manager, n: int) -> nx.DRef:
    leaves = [
        nx.mkdrv(m, nx.mkconfig({"name": f"leaf{i}", "i": i}), nx.match_some(),
                 nx.build_wrapper(_build_one))
        for i in range(n)
    ]
    return nx.mkdrv(m, nx.mkconfig({"name": "root", "deps": leaves}), nx.match_some(),
                    nx.build_wrapper(_build_sum))


def fanin(root: Path, n: int) -> Metrics:
    """Workload 2: ``n`` leaves and one stage reading all of them."""
    store = _store(root)
    t_inst, closure = timed(lambda: nx.instantiate(_fanin, n, store=store))
    t_real, rref = timed(lambda: nx.realize(closure, store=store))
    assert _read_out(rref, store) == str(n * (n - 1) // 2)
    return {"instantiate": t_inst, "realize": t_real}


def _build_score(b: nx.Build) -> None:
    (nx.build_outpath(b) / SCORE_FILE).write_text(repr(random.random()))


def _nondet(m: nx.Manager, matcher: nx.Matcher) -> nx.DRef:
    return nx.mkdrv(m, nx.mkconfig({"name": "nondet"}), matcher, nx.build_wrapper(_build_score))


def _force_many(closure: nx.Closure, k: int, store: nx.Store) -> list[nx.RRef]:
    return [nx.realize(closure, force_rebuild=True, store=store) for _ in range(k)]


def _score(rref: nx.RRef, store: nx.Store) -> float:
    return float((nx.rref2path(rref, store=store) / SCORE_FILE).read_text())


def nondet(root: Path, k: int) -> Metrics:
    """Workload 3: ``k`` forced realizations, then one realize picking the best score."""
    store = _store(root)
    closure = nx.instantiate(_nondet, nx.match_latest(), store=store)
    t_forced, built = timed(lambda: _force_many(closure, k, store))
    best_closure = nx.instantiate(_nondet, nx.match_best(SCORE_FILE), store=store)
    t_best, best = timed(lambda: nx.realize(best_closure, store=store))
    assert len(set(built)) == k, f"{len(set(built))} distinct realizations out of {k} forced"
    assert _score(best, store) == max(_score(r, store) for r in built)
    return {"forced": t_forced, "best": t_best}


def _build_big(b: nx.Build) -> None:
    out = nx.build_outpath(b)
    for k in range(_PAYLOAD.files):
        with open(out / f"part{k:02d}.bin", "wb") as f:
            f.write(file_header(k))
            f.write(_PAYLOAD.data)


def _big(m: nx.Manager) -> nx.DRef:
    return nx.mkdrv(m, nx.mkconfig({"name": "big"}), nx.match_some(), nx.build_wrapper(_build_big))


def big(root: Path, nfiles: int, payload: bytes) -> Metrics:
    """Workload 4: one stage writing ``nfiles`` header+payload files."""
    store = _store(root)
    _PAYLOAD.data, _PAYLOAD.files = payload, nfiles
    closure = nx.instantiate(_big, store=store)
    t_real, rref = timed(lambda: nx.realize(closure, store=store))
    assert len(list(nx.rref2path(rref, store=store).glob("part*.bin"))) == nfiles
    return {"realize": t_real}


def sync(root: Path, n: int) -> Metrics:
    """Workload 5: ``nx.sync`` of an N-realization chain into an empty store, locally and
    into a store reached over ssh on 127.0.0.1 (the receiver runs there)."""
    import sys

    from sync_setup import loopback_sshd, source_store

    src = source_store(root, n)
    local, far = nx.store_initialize(root / "local"), nx.store_initialize(root / "far")
    t_local, report = timed(lambda: nx.sync(src, local))
    assert len(report.published) == n
    with loopback_sshd(root) as sshd:
        t_ssh, report = timed(
            lambda: nx.sync(src, sshd.location(far.root), remote_python=sys.executable,
                            ssh=sshd.ssh)
        )
    assert len(report.published) == n and len(nx.allrrefs(store=far)) == n
    return {"local": t_local, "ssh": t_ssh}


# ---------------------------------------------------------------- gc workloads


def fill_gc(root: Path, n: int) -> None:
    """Fill a store (in an earlier process): a chain, a fan-in and ``GC_NONDET`` forced
    builds; link the chain's result and the best build (the roots gc keeps)."""
    store = _store(root)
    chain_rref = nx.realize(nx.instantiate(_chain, GC_CHAIN, store=store), store=store)
    nx.realize(nx.instantiate(_fanin, GC_FANIN, store=store), store=store)
    closure = nx.instantiate(_nondet, nx.match_latest(), store=store)
    built = _force_many(closure, GC_NONDET, store)
    best = max(built, key=lambda r: _score(r, store))
    nx.linkrrefs([chain_rref, best], root / "links", store=store)


def fill_leaves(root: Path, n: int) -> None:
    """Fill a store (in an earlier process) with a fan-in of ``n`` leaves: ``n + 1``
    realizations, none of them rooted."""
    store = _store(root)
    nx.realize(nx.instantiate(_fanin, n, store=store), store=store)


def gcstore(root: Path, n: int) -> Metrics:
    """Workload 5: list, du and gc a store of about 3,400 refs filled by an earlier
    process; gc keeps the two linked results (the chain, the best build) and their inputs."""
    fill_in_child("lib_nixlet", "fill_gc", root, n)
    nx.store_initialize(root / "store")
    t_list, (drefs, rrefs) = timed(lambda: (nx.alldrefs(), nx.allrrefs()))
    t_du, usage = timed(nx.du)
    t_gc, report = timed(nx.gc)
    assert len(drefs) + len(rrefs) == 2 * GC_CHAIN + 2 * (GC_FANIN + 1) + 1 + GC_NONDET
    assert len(usage) == len(drefs)
    assert len(report.rrefs) == GC_FANIN + 1 + GC_NONDET - 1
    assert len(nx.allrrefs()) == GC_CHAIN + 1
    return {"list": t_list, "du": t_du, "gc": t_gc}


def gc10k(root: Path, n: int) -> Metrics:
    """Workload 6: du and gc of ``n`` + 1 realizations (a fan-in filled by an earlier
    process, no roots: gc removes everything)."""
    fill_in_child("lib_nixlet", "fill_leaves", root, n)
    nx.store_initialize(root / "store")
    t_du, usage = timed(nx.du)
    t_gc, report = timed(nx.gc)
    assert len(usage) == n + 1 and len(report.rrefs) == n + 1 and nx.alldrefs() == []
    return {"du": t_du, "gc": t_gc}
