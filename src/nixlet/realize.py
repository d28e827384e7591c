"""The second pass: walk a closure in dependency order, let each matcher choose among the
realizations built in its context, and build more where it asks.

Deciding what to build (``realize_steps``, a generator) is separate from building it
(``run_steps``): ``realize`` drives the two in turn, and other drivers (a REPL that pauses
before a build, an executor that builds elsewhere) can drive the same generator.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Generator, Iterable
from pathlib import Path

import attrs

from nixlet import durability, layout, locks
from nixlet import store as store_mod
from nixlet.context import context_of
from nixlet.errors import BuildError, ClosureError, MatcherError, NixletError, PromiseError
from nixlet.matchers import matcher_name
from nixlet.types import Closure, Derivation, DRef, RRef, Store

ForceRebuild = Iterable[DRef | str] | bool
#: "build <dref>" before each build, "publish <rref>" (or "exists <rref>") after it.
log = logging.getLogger("nixlet.realize")


@attrs.frozen
class BuildStep:
    """One build that realize decided on: a derivation and the context to build it in."""

    derivation: Derivation
    context: dict[DRef, tuple[RRef, ...]]
    context_bytes: bytes

    @property
    def dref(self) -> DRef:
        """The derivation to build."""
        return self.derivation.dref


@attrs.frozen
class _Todo:
    """A derivation whose matcher asked for builds, with what its candidates are."""

    step: BuildStep
    prefix: str


#: Derivations built before one durable flush publishes them all; it also bounds the lock
#: files a batch holds open (1000 independent leaves once took 1000 syncs, one each).
BATCH = 256

Steps = Generator[list[BuildStep], list[list[RRef]], dict[DRef, tuple[RRef, ...]]]


def realize_steps(closure: Closure, force_rebuild: ForceRebuild = (), *, store: Store) -> Steps:
    """Yield batches of builds that the matchers ask for; receive, for each step of a
    batch, the RRefs its build published.

    Returns (as the generator's value) the realizations chosen for every derivation.
    The closure is walked level by level (a level: the derivations whose dependencies are
    all chosen), so independent builds share one durable flush. While a derivation's
    matcher asks for more, builds continue as long as each adds a new realization. A build
    happens under the derivation's lock, and the matcher is asked again once the lock is
    held: another process may have built it meanwhile.
    """
    forced = _forced(closure, force_rebuild)
    chosen: dict[DRef, tuple[RRef, ...]] = {}
    for level in _levels(closure):
        todo = []
        for drv in level:
            context = {dep: chosen[dep] for dep in drv.config.deps}
            context_bytes, prefix = context_of(context)
            if drv.dref not in forced:
                picked = _match(drv, store, layout.list_rrefs(store, drv.dref, prefix))
                if picked is not None:
                    chosen[drv.dref] = picked
                    continue
            todo.append(_Todo(BuildStep(drv, context, context_bytes), prefix))
        for start in range(0, len(todo), BATCH):
            yield from _build_batch(todo[start : start + BATCH], forced, store, chosen)
    return chosen


def _levels(closure: Closure) -> list[list[Derivation]]:
    """The closure's derivations grouped by depth: each level depends only on earlier ones."""
    depth: dict[DRef, int] = {}
    levels: list[list[Derivation]] = []
    for drv in closure.derivations:  # dependency order: deps already have their depth
        d = 1 + max((depth[dep] for dep in drv.config.deps), default=-1)
        depth[drv.dref] = d
        if d == len(levels):
            levels.append([])
        levels[d].append(drv)
    return levels


def _build_batch(
    batch: list[_Todo], forced: set[DRef], store: Store, chosen: dict[DRef, tuple[RRef, ...]]
) -> Generator[list[BuildStep], list[list[RRef]], None]:
    """Build what the batch needs under its locks. Derivations whose lock another process
    holds are left for after, one at a time (waiting while holding other locks could
    deadlock two processes that realize overlapping closures)."""
    busy: list[_Todo] = []
    with contextlib.ExitStack() as held:
        mine: list[_Todo] = []
        for todo in batch:
            got = held.enter_context(locks.derivation_lock(store, todo.step.dref, wait=False))
            (mine if got else busy).append(todo)
        yield from _build_locked(mine, forced, store, chosen)
    for todo in busy:
        with locks.derivation_lock(store, todo.step.dref):
            yield from _build_locked([todo], forced, store, chosen)


def _build_locked(
    batch: list[_Todo], forced: set[DRef], store: Store, chosen: dict[DRef, tuple[RRef, ...]]
) -> Generator[list[BuildStep], list[list[RRef]], None]:
    existing: dict[DRef, list[RRef]] = {}
    want = []
    for todo in batch:
        drv = todo.step.derivation
        existing[drv.dref] = layout.list_rrefs(store, drv.dref, todo.prefix)
        picked = None if drv.dref in forced else _match(drv, store, existing[drv.dref])
        if picked is None:
            want.append(todo)
        else:
            chosen[drv.dref] = picked
    while want:
        results = yield [todo.step for todo in want]
        still = []
        for todo, built in zip(want, results, strict=True):
            drv = todo.step.derivation
            # Under the lock only this process publishes realizations of drv, so the
            # store now holds exactly what it held plus what the build published.
            before = existing[drv.dref]
            known = set(before)
            now = existing[drv.dref] = before + [r for r in dict.fromkeys(built) if r not in known]
            picked = _match(drv, store, now)
            if picked is not None:
                chosen[drv.dref] = picked
            elif len(now) == len(before):
                raise MatcherError(
                    f"{matcher_name(drv.matcher)} still asks for more realizations of "
                    f"{drv.dref}, but its last build added nothing new (a deterministic "
                    "build gives the same RRef again); use a matcher it can satisfy",
                    matcher=matcher_name(drv.matcher),
                    dref=drv.dref,
                )
            else:
                still.append(todo)
        want = still


def _forced(closure: Closure, force_rebuild: ForceRebuild) -> set[DRef]:
    if force_rebuild is True:
        return {closure.result}
    if force_rebuild is False:
        return set()
    known = {d.dref for d in closure.derivations}
    forced = {DRef.parse(d) for d in force_rebuild}
    unknown = forced - known
    if unknown:
        raise ClosureError(f"cannot force {sorted(map(str, unknown))}: not in this closure")
    return forced


def _match(drv: Derivation, store: Store, rrefs: list[RRef]) -> tuple[RRef, ...] | None:
    picked = drv.matcher(store, list(rrefs))
    if picked is None:
        return None
    if not isinstance(picked, (list, tuple)) or not set(picked) <= set(rrefs):
        raise MatcherError(
            f"matcher {matcher_name(drv.matcher)} of {drv.dref} returned {picked!r}, which is "
            "not a list of the RRefs it was given",
            matcher=matcher_name(drv.matcher),
            dref=drv.dref,
        )
    return tuple(picked)


def run_steps(store: Store, steps: list[BuildStep]) -> list[list[RRef]]:
    """Run the realizers of a batch and publish every output folder they return, with one
    durable flush for the whole batch. Returns the RRefs of each step, in order.

    Raises:
        BuildError: a realizer raised. The outputs of the steps before it are published
            (they are complete); nothing of the failed build is.
        PromiseError: an output lacks a promised path (nothing of that build is published).
    """
    per_step: list[list[store_mod.Staged]] = []
    failure: NixletError | None = None
    for step in steps:
        try:
            per_step.append(_build(store, step))
        except NixletError as e:
            failure = e
            break
    staged = [item for items in per_step for item in items]
    fresh = store_mod.publish_staged(store, staged)
    for item, new in zip(staged, fresh, strict=True):
        log.info("%s %s", "publish" if new else "exists", item.rref)
    if failure is not None:
        raise failure
    return [[item.rref for item in items] for items in per_step]


def _build(store: Store, step: BuildStep) -> list[store_mod.Staged]:
    """Run one realizer and stage its outputs."""
    dref, drv = step.dref, step.derivation
    log.info("build %s", dref)
    started = time.time()
    try:
        outdirs = [Path(p) for p in drv.realizer(store, dref, step.context)]
    except NixletError:
        raise
    except Exception as e:
        raise BuildError(
            f"realizer of {dref} failed: {type(e).__name__}: {e}", dref=dref, cause=e, staging=None
        ) from e
    finished = time.time()
    if not outdirs:
        raise BuildError(
            f"realizer of {dref} returned no output folder", dref=dref, cause=None, staging=None
        )
    for out in outdirs:
        _check_promises(drv, out)
    return [
        store_mod.stage_realization(store, drv, step.context_bytes, out, started, finished)
        for out in outdirs
    ]


def _check_promises(drv: Derivation, out: Path) -> None:
    missing = ["/".join(p) for p in drv.config.promises if not os.path.lexists(out.joinpath(*p))]
    if missing:
        raise PromiseError(
            f"build of {drv.dref} did not create the promised {missing} in {out}",
            dref=drv.dref,
            missing=missing,
            staging=out,
            cause=None,
        )


def realize_many(
    closure: Closure,
    force_rebuild: ForceRebuild = (),
    *,
    store: Store | str | os.PathLike[str] | None = None,
) -> list[RRef]:
    """Realize the closure and return every realization the target's matcher chose.

    ``force_rebuild`` lists DRefs to build again even if their matcher is satisfied
    (``True``: the target). Returned RRefs are durable when this returns.
    """
    target = store_mod.resolve(store if store is not None else closure.store)
    steps = realize_steps(closure, force_rebuild, store=target)
    touched: set[Path] = set()
    try:
        batch = next(steps)
        while True:
            touched.update(layout.dref_dir(target, step.dref) for step in batch)
            if not all(layout.has_derivation(target, step.dref) for step in batch):
                touched.add(target.root)  # a first realization adds its derivation's folder
            batch = steps.send(run_steps(target, batch))
    except StopIteration as stop:
        chosen: dict[DRef, tuple[RRef, ...]] = stop.value
    finally:
        steps.close()  # releases the derivation locks held by a batch that failed
        if touched:
            durability.flush(target, touched)
    return list(chosen[closure.result])


def realize(
    closure: Closure,
    force_rebuild: ForceRebuild = (),
    *,
    store: Store | str | os.PathLike[str] | None = None,
) -> RRef:
    """Realize the closure and return the one realization chosen for its target.

    Raises:
        MatcherError: the target's matcher chose several; use ``realize_many``.
        BuildError: a build failed; nothing of it is visible in the store.
    """
    rrefs = realize_many(closure, force_rebuild, store=store)
    if len(rrefs) != 1:
        raise MatcherError(
            f"the matcher of {closure.result} chose {len(rrefs)} realizations; "
            "use realize_many to get them all",
            matcher=matcher_name(closure.derivation(closure.result).matcher),
            dref=closure.result,
        )
    return rrefs[0]
