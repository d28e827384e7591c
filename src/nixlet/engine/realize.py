"""The second pass: ``realize`` and ``realize_many``, one thin driver of the plan / build one
step / publish protocol that builds in this process, one step after another.

Each round builds what the plan has ready (up to 256 steps) and publishes it as one batch:
one durable flush of the batch's data, and one flush of the published names when the
realization ends, however many rounds it took.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from nixlet.engine.matchers import matcher_name
from nixlet.engine.plan import MAX_BUILDS, ForceRebuild, plan
from nixlet.engine.step import build_step
from nixlet.store.opening import StoreArg
from nixlet.store.publish import Staged, publishing
from nixlet.values.errors import MatcherError, NixletError
from nixlet.values.model import BuildStep, Closure
from nixlet.values.refs import RRef


def realize_many(
    closure: Closure,
    force_rebuild: ForceRebuild = (),
    *,
    store: StoreArg = None,
    max_builds: int | None = MAX_BUILDS,
    progress: bool | None = None,
) -> list[RRef]:
    """Realize the closure and return every realization the target's matcher chose.

    Args:
        closure: what ``instantiate`` returned.
        force_rebuild: DRefs to build again even if their matcher is satisfied (``True``:
            the target; one DRef or a list).
        store: the store to realize in (default: the closure's).
        max_builds: the most builds of one derivation while its matcher asks for more
            (``None``: no bound); see ``plan``.
        progress: print a line to stderr for each build. Default: when stderr is a
            terminal and ``NIXLET_QUIET`` is not set (or is ``0``).

    Returns RRefs that are durable when this returns.

    Raises:
        BuildError: a build failed; what other builds made is published, nothing of the
            failed one is.
        MatcherError: a matcher broke its contract or cannot be satisfied.
    """
    say = _progress(progress)
    with plan(closure, force_rebuild, store, max_builds=max_builds) as p:
        with publishing(p.store) as publisher:
            while not p.done:
                steps = p.ready()
                staged: list[Staged] = []
                failure: NixletError | None = None
                for step in steps:
                    say(step)
                    try:
                        staged.append(build_step(step))
                    except NixletError as e:
                        failure = e
                        break
                # Publish what was built before a failure: those builds are complete.
                for step, rrefs in zip(steps, publisher.publish_many(staged), strict=False):
                    p.record(step, rrefs)
                if failure is not None:
                    raise failure
        return p.result()


def realize(
    closure: Closure,
    force_rebuild: ForceRebuild = (),
    *,
    store: StoreArg = None,
    max_builds: int | None = MAX_BUILDS,
    progress: bool | None = None,
) -> RRef:
    """Realize the closure and return the one realization chosen for its target (see
    ``realize_many`` for the arguments).

    Raises:
        MatcherError: the target's matcher chose several; use ``realize_many``.
        BuildError: a build failed; nothing of it is visible in the store.
    """
    rrefs = realize_many(
        closure, force_rebuild, store=store, max_builds=max_builds, progress=progress
    )
    if len(rrefs) != 1:
        raise MatcherError(
            f"the matcher of {closure.result} chose {len(rrefs)} realizations; "
            "use realize_many to get them all",
            matcher=matcher_name(closure.derivation(closure.result).matcher),
            dref=closure.result,
        )
    return rrefs[0]


def _progress(progress: bool | None) -> Callable[[BuildStep], None]:
    """The per-build report: a line on stderr, or nothing."""
    if progress is None:
        quiet = os.environ.get("NIXLET_QUIET", "") not in ("", "0")
        progress = sys.stderr is not None and sys.stderr.isatty() and not quiet
    if not progress or sys.stderr is None:  # pythonw has no stderr
        return _quiet

    def say(step: BuildStep) -> None:
        print(f"nixlet: building {step.dref.name} ({step.dref})", file=sys.stderr, flush=True)

    return say


def _quiet(step: BuildStep) -> None:
    pass
