"""The second pass: walk a closure in dependency order, let each matcher choose among the
realizations built in its context, and build more where it asks.

Deciding what to build (``realize_steps``, a generator) is separate from building it
(``run_step``): ``realize`` drives the two in turn, and other drivers (a REPL that pauses
before a build, an executor that builds elsewhere) can drive the same generator.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Generator, Iterable
from pathlib import Path

import attrs

from nixlet import store as store_mod
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


Steps = Generator[BuildStep, list[RRef], dict[DRef, tuple[RRef, ...]]]


def realize_steps(closure: Closure, force_rebuild: ForceRebuild = (), *, store: Store) -> Steps:
    """Yield each build that the matchers ask for; receive the RRefs it published.

    Returns (as the generator's value) the realizations chosen for every derivation.
    While a derivation's matcher asks for more, builds continue as long as each adds a new
    realization. A build happens under the derivation's lock, and the matcher is asked
    again once the lock is held: another process may have built it meanwhile.
    """
    forced = _forced(closure, force_rebuild)
    chosen: dict[DRef, tuple[RRef, ...]] = {}
    for drv in closure.derivations:
        context = {dep: chosen[dep] for dep in drv.config.deps}
        context_bytes, prefix = store_mod.context_of(context)
        if drv.dref not in forced:
            picked = _match(drv, store, store_mod.list_rrefs(store, drv.dref, prefix))
            if picked is not None:
                chosen[drv.dref] = picked
                continue
        with store_mod.derivation_lock(store, drv.dref):
            existing = store_mod.list_rrefs(store, drv.dref, prefix)
            picked = None if drv.dref in forced else _match(drv, store, existing)
            while picked is None:
                built = yield BuildStep(drv, context, context_bytes)
                # Under the lock only this process publishes realizations of drv, so the
                # store now holds exactly what it held plus what the build published.
                before, known = existing, set(existing)
                existing = existing + [r for r in dict.fromkeys(built) if r not in known]
                picked = _match(drv, store, existing)
                if picked is None and len(existing) == len(before):
                    raise MatcherError(
                        f"{matcher_name(drv.matcher)} still asks for more realizations of "
                        f"{drv.dref}, but its last build added nothing new (a deterministic "
                        "build gives the same RRef again); use a matcher it can satisfy",
                        matcher=matcher_name(drv.matcher),
                        dref=drv.dref,
                    )
        chosen[drv.dref] = picked
    return chosen


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


def run_step(store: Store, step: BuildStep) -> list[RRef]:
    """Run the realizer of one step and publish each output folder it returns.

    Raises:
        BuildError: the realizer raised (nothing is published).
        PromiseError: an output lacks a promised path (nothing is published).
    """
    dref = step.dref
    log.info("build %s", dref)
    started = time.time()
    try:
        outdirs = [Path(p) for p in step.derivation.realizer(store, dref, step.context)]
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
        _check_promises(step.derivation, out)
    published = []
    for out in outdirs:
        drv = step.derivation
        rref, new = store_mod.publish_realization(
            store, (dref, drv.config, drv.code), step.context_bytes, out, started, finished
        )
        log.info("%s %s", "publish" if new else "exists", rref)
        published.append(rref)
    return published


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
        step = next(steps)
        while True:
            rrefs = run_step(target, step)
            # A first realization also adds its derivation's folder to the root.
            touched.update((store_mod.dref_dir(target, step.dref), target.root))
            step = steps.send(rrefs)
    except StopIteration as stop:
        chosen: dict[DRef, tuple[RRef, ...]] = stop.value
    finally:
        steps.close()  # releases a derivation lock held by a step that failed
        if touched:
            store_mod.flush(target, touched)
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
