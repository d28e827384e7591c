"""Deciding what to build: the first part of the plan / build one step / publish protocol.

A ``Plan`` walks a closure in dependency order and asks each derivation's matcher to choose
among the realizations built in its context (its dependencies' chosen RRefs). A derivation
whose matcher asks for more becomes a ``BuildStep``, handed out by ``Plan.ready`` once the
plan holds its build lock; the driver builds it (``build_step``, in any process), publishes
the result (``publish``) and gives the RRefs back with ``Plan.record``. The matcher is asked
again, and the step comes back from ``ready`` while it wants more::

    with plan(closure) as p:
        while not p.done:
            for step in p.ready():
                p.record(step, publish(build_step(step)))
        rrefs = p.result()

A derivation is ready as soon as its own dependencies are chosen (there is no level
barrier), so a parallel driver keeps every worker busy. A plan holds a derivation's lock
from handing its step out until the step is recorded (or failed, or the plan closed), and
never waits for a lock while it holds one: two processes realizing overlapping closures
cannot deadlock, and a driver paused before one build blocks only that derivation.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterable

import attrs

from nixlet.engine.matchers import matcher_name
from nixlet.store import layout, locks, records, temproots
from nixlet.store.opening import StoreArg, resolve
from nixlet.values.context import context_of
from nixlet.values.errors import BuildError, ClosureError, MatcherError, UsageError
from nixlet.values.model import BuildStep, Closure, Derivation, Store
from nixlet.values.refs import DRef, RRef

#: What ``force_rebuild`` accepts: DRefs (or their text), one DRef, or True for the target.
ForceRebuild = Iterable[DRef | str] | DRef | str | bool

#: How many builds of one derivation a plan makes at most, by default, while its matcher
#: keeps asking for more: far above any sweep made by one matcher (``match_some(200)``), far
#: below a runaway (a matcher that never finds what it wants once built 7,045 times).
MAX_BUILDS = 1000
#: How many steps ``ready`` hands out at once by default: each holds a lock (a descriptor).
MAX_STEPS = 256


@attrs.define(eq=False)
class _Held:
    """A derivation whose step is out: its lock, the step, and what its context held."""

    step: BuildStep
    drv: Derivation
    lock: contextlib.ExitStack
    prefix: str
    existing: list[RRef]
    builds: int = 0


@attrs.define(eq=False)
class Plan:
    """The state of one realization of a closure: what is chosen, what is being built.
    Make one with ``plan``; see the module documentation for the protocol."""

    closure: Closure
    store: Store
    forced: frozenset[DRef]
    max_builds: int | None
    # The walk's state, private: ``plan`` makes a Plan from the four fields above.
    _chosen: dict[DRef, tuple[RRef, ...]] = attrs.field(factory=dict, init=False)
    _missing: dict[DRef, int] = attrs.field(factory=dict, init=False)
    _dependents: dict[DRef, list[Derivation]] = attrs.field(factory=dict, init=False)
    _candidates: deque[Derivation] = attrs.field(factory=deque, init=False)
    _busy: list[Derivation] = attrs.field(factory=list, init=False)
    _out: dict[DRef, _Held] = attrs.field(factory=dict, init=False)
    _again: deque[DRef] = attrs.field(factory=deque, init=False)
    # What failed, as raised: nixlet's errors, and whatever a user's matcher raised.
    _failed: dict[DRef, Exception] = attrs.field(factory=dict, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    # Set while a batch holds the gc lock: what is chosen or seen becomes a temporary root.
    _rooting: temproots.Rooting | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        for drv in self.closure.derivations:
            deps = set(drv.config.deps)
            self._missing[drv.dref] = len(deps)
            for dep in deps:
                self._dependents.setdefault(dep, []).append(drv)
            if not deps:
                self._candidates.append(drv)

    # ------------------------------------------------------------ the protocol

    @property
    def done(self) -> bool:
        """Whether nothing more can be handed out or is being built: the target is chosen,
        or a failure left nothing else to do."""
        return not (self._candidates or self._busy or self._out or self._again)

    def ready(self, max_steps: int | None = MAX_STEPS) -> list[BuildStep]:
        """The steps that can be built now, at most ``max_steps`` (``None``: all), each
        with its derivation's lock held by this plan.

        Returns at once, with what it found, unless nothing is handed out and nothing can
        start: then it waits for a lock that another process holds (holding none itself).
        An empty list while ``done`` is False means: record the steps that are out.

        Raises:
            UsageError: ``max_steps`` is not a positive int or None (a driver asking for
                nothing would loop for ever).
            MatcherError: a matcher broke its contract (and whatever a matcher raised);
                that derivation is failed, and the steps found before it come back from
                the next call.
        """
        self._check_open()
        if max_steps is not None and (type(max_steps) is not int or max_steps < 1):
            raise UsageError(
                f"max_steps must be a positive int or None, got {max_steps!r}",
                argument="max_steps",
            )
        limit = max_steps if max_steps is not None else len(self.closure.derivations) + 1
        found: list[BuildStep] = []
        with temproots.rooting(self.store, self) as self._rooting:
            try:
                self._find(found, limit)
            finally:
                self._rooting = None
        return found

    def _find(self, found: list[BuildStep], limit: int) -> None:
        """``ready``'s walk, under the gc lock (shared): what it chooses and what the steps
        it hands out may choose among are temporary roots before a ``gc`` can run."""
        try:
            while self._again and len(found) < limit:
                found.append(self._out[self._again.popleft()].step)
            while len(found) < limit:
                if self._candidates:
                    self._guarded(self._candidates.popleft(), found, wait=False)
                elif self._busy and not self._retry_busy(found, limit):
                    if found or self._out:
                        break
                    self._guarded(self._busy.pop(0), found, wait=True)
                else:
                    break
        except BaseException:
            # The steps found so far hold their locks but never reach the caller: hand
            # them out again next time, or a driver that goes on after the error would
            # wait for ever on steps it never got (done stays False while they are out).
            self._again.extendleft(reversed([s.dref for s in found]))
            raise

    def record(self, step: BuildStep, rrefs: Iterable[RRef | str]) -> None:
        """Tell the plan what ``step``'s build published. Its matcher is asked again: if it
        is satisfied, the lock is released; if it wants more, the step comes back from
        ``ready``.

        Raises:
            UsageError: the step is not out (not handed out by this plan, or recorded), or
                an RRef is not one ``publish`` returned for it (another derivation's, one
                built in another context, or one not in the store). The step stays out.
            RefError: an RRef is malformed; the step stays out.
            MatcherError: the matcher still wants more but the build added nothing new (a
                deterministic build gives the same RRef again), or ``max_builds`` builds
                of this derivation did not satisfy it.
        """
        held = self._held(step)
        with temproots.rooting(self.store, self) as self._rooting:
            try:
                self._record(step, held, rrefs, self._rooting)
            finally:
                self._rooting = None

    def _record(
        self, step: BuildStep, held: _Held, rrefs: Iterable[RRef | str], rooting: temproots.Rooting
    ) -> None:
        """``record``, under the gc lock (shared): the published RRefs are checked, rooted
        and matched before a ``gc`` can remove any of them."""
        # Checked before the step leaves ``_out``: a bad argument must not lose the step
        # (its lock would be held by nobody the plan knows, and ``done`` would lie).
        given = self._published(held, rrefs)
        rooting.add(given)
        del self._out[step.dref]
        before = held.existing
        known = set(before)
        new = [r for r in given if r not in known]
        held.existing = before + new
        held.builds += 1
        drv = held.drv
        try:
            picked = _match(drv, self.store, held.existing)
            if picked is None:
                self._check_progress(drv, held, new)
        except BaseException as e:
            held.lock.close()
            if isinstance(e, Exception):
                self._failed[step.dref] = e
            raise
        if picked is None:
            self._out[step.dref] = held
            self._again.append(step.dref)
        else:
            held.lock.close()
            self._choose(drv, picked)

    def fail(self, step: BuildStep, error: Exception) -> None:
        """Tell the plan that ``step``'s build failed: its lock is released, and nothing
        that depends on it will be handed out; independent work goes on. ``error`` is what
        ``result`` raises: the ``BuildError`` of ``build_step``, or whatever the driver
        met (a worker that died).

        Raises:
            UsageError: the step is not out.
        """
        held = self._held(step)
        del self._out[step.dref]
        held.lock.close()
        self._failed[step.dref] = error

    def result(self) -> list[RRef]:
        """The realizations the target's matcher chose: what ``realize_many`` returns.

        Raises:
            BuildError: a build failed (the one failure as it was raised or given to
                ``fail``, or one BuildError listing them all).
            UsageError: the plan is not done.
        """
        target = self.closure.result
        if target in self._chosen:
            return list(self._chosen[target])
        if self._failed:
            errors = list(self._failed.values())
            if len(errors) == 1:
                raise errors[0]
            raise BuildError(
                f"{len(errors)} builds failed: " + "; ".join(str(e) for e in errors),
                dref=None,
                cause=None,
                staging=None,
            )
        raise UsageError("the plan is not done: build and record the steps ready() gives")

    def chosen(self, dref: DRef | str) -> tuple[RRef, ...] | None:
        """The realizations chosen for ``dref`` so far, or None if not yet chosen."""
        return self._chosen.get(DRef.parse(dref))

    def close(self) -> None:
        """Release every lock this plan holds; steps still out can be published, but not
        recorded. The temporary roots of what it chose and built are dropped, but those of
        its result, which this process keeps until it ends (or until ``linkrref`` roots
        them for good)."""
        for held in self._out.values():
            held.lock.close()
        self._out.clear()
        self._again.clear()
        if not self._closed:
            temproots.release(self.store, self, self._chosen.get(self.closure.result, ()))
        self._closed = True

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ deciding

    def _guarded(self, drv: Derivation, found: list[BuildStep], *, wait: bool) -> None:
        """``_examine``, recording a matcher's error as this derivation's failure."""
        try:
            self._examine(drv, found, wait=wait)
        except Exception as e:
            # Any error: a user's matcher may raise anything, and a derivation that is
            # neither chosen nor failed would leave ``result`` saying "not done".
            self._failed[drv.dref] = e
            raise

    def _examine(self, drv: Derivation, found: list[BuildStep], *, wait: bool) -> bool:
        """Choose for ``drv`` if its matcher is satisfied; else take its lock and hand its
        step out. False if another process holds the lock (and ``wait`` is False)."""
        context = {dep: self._chosen[dep] for dep in drv.config.deps}
        prefix = context_of(context)[1]
        forced = drv.dref in self.forced
        if not forced:
            picked = _match(drv, self.store, records.list_rrefs(self.store, drv.dref, prefix))
            if picked is not None:
                self._choose(drv, picked)
                return True
        lock = contextlib.ExitStack()
        # Never wait for a build lock holding the gc lock: a gc waiting for it would wait
        # for a builder that waits for the gc (to publish).
        if wait and self._rooting is not None:
            with self._rooting.suspended():
                got = lock.enter_context(locks.derivation_lock(self.store, drv.dref, wait=True))
        else:
            got = lock.enter_context(locks.derivation_lock(self.store, drv.dref, wait=wait))
        if not got:
            lock.close()
            self._busy.append(drv)
            return False
        try:
            # Another process may have built it while this one waited for the lock.
            existing = records.list_rrefs(self.store, drv.dref, prefix)
            picked = None if forced else _match(drv, self.store, existing)
        except BaseException:
            lock.close()
            raise
        if picked is not None:
            lock.close()
            self._choose(drv, picked)
            return True
        step = BuildStep(self.store, drv.dref, drv.config, drv.code, context, drv.realizer)
        if self._rooting is not None:
            self._rooting.add(existing)  # the matcher may choose among them after the build
        self._out[drv.dref] = _Held(step, drv, lock, prefix, existing)
        found.append(step)
        return True

    def _retry_busy(self, found: list[BuildStep], limit: int) -> bool:
        """Try, without waiting, the derivations whose lock was busy; True if any moved."""
        busy, self._busy = self._busy, []
        moved = False
        for i, drv in enumerate(busy):
            if len(found) >= limit:
                self._busy.extend(busy[i:])
                break
            before = len(self._busy)
            try:
                self._guarded(drv, found, wait=False)
            except BaseException:
                self._busy.extend(busy[i + 1 :])  # the others are still to be examined
                raise
            moved = moved or len(self._busy) == before
        return moved

    def _choose(self, drv: Derivation, picked: tuple[RRef, ...]) -> None:
        self._chosen[drv.dref] = picked
        if self._rooting is not None:
            self._rooting.add(picked)
        for dependent in self._dependents.get(drv.dref, ()):
            self._missing[dependent.dref] -= 1
            if self._missing[dependent.dref] == 0:
                self._candidates.append(dependent)

    def _check_progress(self, drv: Derivation, held: _Held, new: list[RRef]) -> None:
        name = matcher_name(drv.matcher)
        if not new:
            raise MatcherError(
                f"{name} still asks for more realizations of {drv.dref}, but its last build "
                "added nothing new (a deterministic build gives the same RRef again); use a "
                "matcher it can satisfy",
                matcher=name,
                dref=drv.dref,
            )
        if self.max_builds is not None and held.builds >= self.max_builds:
            raise MatcherError(
                f"{name} still asks for more realizations of {drv.dref} after {held.builds} "
                f"builds in this realize (max_builds={self.max_builds}); its builds may not "
                "make what it looks for. Check the matcher against a realization "
                "(lsref, catref), or raise max_builds",
                matcher=name,
                dref=drv.dref,
            )

    def _held(self, step: BuildStep) -> _Held:
        """The record of a step that is out now (handed out, not recorded or failed)."""
        self._check_open()
        held = self._out.get(step.dref)
        if held is None or step.dref in self._again:
            raise UsageError(f"{step.dref} is not a step this plan handed out", argument="step")
        return held

    def _published(self, held: _Held, rrefs: Iterable[RRef | str]) -> list[RRef]:
        """The RRefs given to ``record``, parsed, without repeats, after checking that each
        is a published realization of the step's derivation in the step's context: a
        matcher must choose only among those, or a stranger (another derivation's RRef,
        or one staged but never published) would become a dependency's input."""
        dref = held.step.dref
        given = list(dict.fromkeys(RRef.parse(r) for r in rrefs))
        for r in given:
            # Compared by parts: r.dref would build (and validate) a new DRef per RRef.
            if (r.dhash, r.name) != (dref.dhash, dref.name) or not r.rhash.startswith(held.prefix):
                raise UsageError(
                    f"{r} is not a realization of {dref} built in this step's context; "
                    "record the RRefs that publish returned for this step",
                    argument="rrefs",
                )
            if not os.path.isdir(layout.rref_dir_str(self.store, r)):
                raise UsageError(
                    f"{r} is not in the store {self.store.root}: publish the step's Staged "
                    "first and record what publish returns",
                    argument="rrefs",
                )
        return given

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("this plan is closed")


def plan(
    closure: Closure,
    force_rebuild: ForceRebuild = (),
    store: StoreArg = None,
    *,
    max_builds: int | None = MAX_BUILDS,
) -> Plan:
    """Start realizing ``closure``: a ``Plan`` to drive with ``ready``, ``record`` and
    ``result``; use it as a context manager (closing releases its locks).

    Args:
        closure: what ``instantiate`` returned.
        force_rebuild: DRefs to build once more even if their matcher is satisfied; ``True``
            is the target. A DRef alone is accepted as well as a list.
        store: the store to realize in (default: the closure's).
        max_builds: the most builds of one derivation while its matcher asks for more
            (``None``: no bound). The default, 1000, stops a runaway matcher.

    Raises:
        ClosureError: a forced DRef is not in the closure.
        UsageError: ``closure`` is not a Closure, or ``max_builds`` is not positive.
    """
    if not isinstance(closure, Closure):
        raise UsageError(
            f"realize needs the Closure that instantiate returns, got {closure!r}; for a "
            "DRef declared with instantiate_inplace, use realize_inplace",
            argument="closure",
        )
    if max_builds is not None and (type(max_builds) is not int or max_builds < 1):
        raise UsageError(
            f"max_builds must be a positive int or None, got {max_builds!r}", argument="max_builds"
        )
    target = resolve(store if store is not None else closure.store)
    return Plan(closure, target, frozenset(_forced(closure, force_rebuild)), max_builds)


def _forced(closure: Closure, force_rebuild: ForceRebuild) -> set[DRef]:
    if force_rebuild is True:
        return {closure.result}
    if force_rebuild is False or force_rebuild is None:
        return set()
    if isinstance(force_rebuild, (DRef, str)):
        force_rebuild = [force_rebuild]  # not iterated character by character
    known = {d.dref for d in closure.derivations}
    try:
        forced = {DRef.parse(d) for d in force_rebuild}
    except TypeError:
        raise UsageError(
            f"force_rebuild takes True, a DRef or a list of DRefs, got {force_rebuild!r}",
            argument="force_rebuild",
        ) from None
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
