"""The four workloads written against pylightnix 0.3.0, the closest peer.

API notes (read from pylightnix 0.3.0's core.py / build.py):

* a stage is ``stage(*args, r: Registry) -> DRef`` and calls
  ``mkdrv(config, matcher, realizer, r)``;
* a DRef string anywhere inside a config dict is a dependency;
* ``instantiate(stage, *args, S=S)`` returns ``(result, closure)``;
  ``realize1(closure, force_rebuild=True)`` forces a new build of the closure's targets;
* 0.3.0 has no ``match_best``: ``match_some(1, key=...)`` with a key reading ``score.txt``
  sorts realizations by that key (descending) and keeps the top one, which is the same thing.
* the store lives in ``mkSS(root)``: ``root/store-v0`` plus ``root/tmp`` (never ``~/_pylightnix``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from os.path import join
from pathlib import Path
from typing import Any

logging.disable(logging.WARNING)  # import-time "aunpack not found" and collision chatter

from common import (  # noqa: E402
    GC_CHAIN,
    GC_FANIN,
    GC_NONDET,
    OUT_FILE,
    SCORE_FILE,
    file_header,
    fill_in_child,
    timed,
)
from pylightnix import (  # noqa: E402
    Build,
    Closure,
    DRef,
    Registry,
    RRef,
    StorageSettings,
    alldrefs,
    allrrefs,
    build_cattrs,
    build_deref,
    build_outpath,
    build_wrapper,
    du,
    fsinit,
    instantiate,
    match_latest,
    match_some,
    mkconfig,
    mkdrv,
    mkSS,
    realize1,
    rmref,
    rref2path,
    store_gc,
)

Metrics = dict[str, float]


Plan = tuple[DRef, Closure]  # what pylightnix's instantiate returns


def _store(root: Path) -> StorageSettings:
    """A fresh pylightnix storage under ``root`` (``root/store-v0`` and ``root/tmp``)."""
    settings = mkSS(str(root))
    fsinit(settings, check_not_exist=True)
    return settings


def _instantiate(stage: Callable[..., DRef], arg: Any, settings: StorageSettings) -> Plan:
    """``instantiate(stage, arg, S=settings)``: the stage's DRef and the closure."""
    plan: Plan = instantiate(stage, arg, S=settings)
    return plan


def _build_one(b: Build) -> None:
    c = build_cattrs(b)
    with open(join(build_outpath(b), OUT_FILE), "w") as f:
        f.write(str(c.i))


def _chain(n: int, r: Registry) -> DRef:
    prev: DRef | None = None
    for i in range(n):
        cfg: dict[str, Any] = {"name": f"s{i}", "i": i}
        if prev is not None:
            cfg["prev"] = prev
        prev = mkdrv(mkconfig(cfg), match_some(), build_wrapper(_build_one), r)
    assert prev is not None
    return prev


def _read_out(rref: RRef, settings: StorageSettings) -> str:
    with open(join(rref2path(rref, settings), OUT_FILE)) as f:
        return f.read()


def chain(root: Path, n: int) -> Metrics:
    """Workload 1: instantiate, first realize, then (fresh instantiate) cached realize."""
    settings = _store(root)
    t_inst, closure = timed(lambda: _instantiate(_chain, n, settings))
    t_real, rref = timed(lambda: realize1(closure))
    again = _instantiate(_chain, n, settings)
    t_cached, rref2 = timed(lambda: realize1(again))
    assert rref2 == rref and _read_out(rref, settings) == str(n - 1)
    return {"instantiate": t_inst, "realize": t_real, "cached": t_cached}


def _build_sum(b: Build) -> None:
    c = build_cattrs(b)
    total = 0
    for dep in c.deps:
        with open(join(rref2path(build_deref(b, dep), b.S), OUT_FILE)) as f:
            total += int(f.read())
    with open(join(build_outpath(b), OUT_FILE), "w") as f:
        f.write(str(total))


def _fanin(n: int, r: Registry) -> DRef:
    leaves = [
        mkdrv(mkconfig({"name": f"leaf{i}", "i": i}), match_some(), build_wrapper(_build_one), r)
        for i in range(n)
    ]
    root = mkconfig({"name": "root", "deps": leaves})
    return mkdrv(root, match_some(), build_wrapper(_build_sum), r)


def fanin(root: Path, n: int) -> Metrics:
    """Workload 2: ``n`` leaves and one stage reading all of them."""
    settings = _store(root)
    t_inst, closure = timed(lambda: _instantiate(_fanin, n, settings))
    t_real, rref = timed(lambda: realize1(closure))
    assert _read_out(rref, settings) == str(n * (n - 1) // 2)
    return {"instantiate": t_inst, "realize": t_real}


def _build_score(b: Build) -> None:
    with open(join(build_outpath(b), SCORE_FILE), "w") as f:
        f.write(repr(random.random()))


def _score_key(settings: StorageSettings | None, rref: RRef) -> float | None:
    try:
        with open(join(rref2path(rref, settings), SCORE_FILE)) as f:
            return float(f.read())
    except (OSError, ValueError):
        return None


def _nondet(matcher: Any, r: Registry) -> DRef:
    return mkdrv(mkconfig({"name": "nondet"}), matcher, build_wrapper(_build_score), r)


def _force_many(closure: Plan, k: int) -> list[RRef]:
    return [realize1(closure, force_rebuild=True) for _ in range(k)]


def nondet(root: Path, k: int) -> Metrics:
    """Workload 3: ``k`` forced realizations, then one realize picking the best score."""
    settings = _store(root)
    closure = _instantiate(_nondet, match_latest(), settings)
    t_forced, built = timed(lambda: _force_many(closure, k))
    best_closure = _instantiate(_nondet, match_some(1, key=_score_key), settings)
    t_best, best = timed(lambda: realize1(best_closure))
    scores = [_score_key(settings, rref) for rref in set(built)]
    assert len(set(built)) == k and _score_key(settings, best) == max(s for s in scores if s)
    return {"forced": t_forced, "best": t_best}


def big(root: Path, nfiles: int, payload: bytes) -> Metrics:
    """Workload 4: one stage writing ``nfiles`` header+payload files."""
    settings = _store(root)

    def _build_big(b: Build) -> None:
        out = build_outpath(b)
        for k in range(nfiles):
            with open(join(out, f"part{k:02d}.bin"), "wb") as f:
                f.write(file_header(k))
                f.write(payload)

    def _stage(r: Registry) -> DRef:
        return mkdrv(mkconfig({"name": "big"}), match_some(), build_wrapper(_build_big), r)

    closure: Plan = instantiate(_stage, S=settings)
    t_real, rref = timed(lambda: realize1(closure))
    assert len(list(Path(rref2path(rref, settings)).glob("part*.bin"))) == nfiles
    return {"realize": t_real}


# ---------------------------------------------------------------- gc workloads


def fill_gc(root: Path, n: int) -> None:
    """Fill a store (in an earlier process) as lib_nixlet.fill_gc does; write the two RRefs
    to keep to ``root/keep.json`` (pylightnix's gc takes the roots as arguments)."""
    import json

    settings = _store(root)
    chain_rref = realize1(_instantiate(_chain, GC_CHAIN, settings))
    realize1(_instantiate(_fanin, GC_FANIN, settings))
    built = _force_many(_instantiate(_nondet, match_latest(), settings), GC_NONDET)
    best = max(built, key=lambda r: _score_key(settings, r) or 0.0)
    (root / "keep.json").write_text(json.dumps([chain_rref, best]))


def _gc(settings: StorageSettings, keep: list[RRef]) -> tuple[set[DRef], set[RRef]]:
    """pylightnix's gc (``garb.gc`` without its prompt): ``store_gc`` computes what to
    remove, ``rmref`` removes each realization, then each derivation."""
    drefs, rrefs = store_gc(keep_drefs=[], keep_rrefs=keep, S=settings)
    for rref in rrefs:
        rmref(rref, S=settings)
    for dref in drefs:
        rmref(dref, S=settings)
    return drefs, rrefs


def gcstore(root: Path, n: int) -> Metrics:
    """Workload 5: list, du and gc a store of about 3,400 refs filled by an earlier process."""
    import json

    fill_in_child("lib_pylightnix", "fill_gc", root, n)
    settings = mkSS(str(root))
    keep = [RRef(r) for r in json.loads((root / "keep.json").read_text())]
    t_list, (drefs, rrefs) = timed(lambda: (list(alldrefs(settings)), list(allrrefs(settings))))
    t_du, usage = timed(lambda: du(settings))
    t_gc, (gone_d, gone_r) = timed(lambda: _gc(settings, keep))
    assert len(drefs) + len(rrefs) == 2 * GC_CHAIN + 2 * (GC_FANIN + 1) + 1 + GC_NONDET
    assert len(usage) == len(drefs) and len(gone_r) == GC_FANIN + 1 + GC_NONDET - 1
    return {"list": t_list, "du": t_du, "gc": t_gc}
