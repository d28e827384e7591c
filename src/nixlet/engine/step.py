"""Building one step: the second part of the plan / build one step / publish protocol.

``build_step`` is a function of the ``BuildStep`` alone: it runs the realizer, checks the
promised outputs and seals what the build left in staging. It reads nothing the planning
process holds (the config record travels in the step), so it runs the same in the planner, in
a worker started by fork, spawn or forkserver, or on a cluster node that shares the store.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from nixlet.store import sealing, staging
from nixlet.store.publish import Staged
from nixlet.values.context import encode_context
from nixlet.values.errors import BuildError, NixletError, PromiseError
from nixlet.values.model import BuildStep

#: "build <dref>" before each build.
log = logging.getLogger("nixlet.build")


def build_step(step: BuildStep) -> Staged:
    """Build one step into staging on the store's filesystem; return what ``publish``
    makes part of the store. Nothing is visible in the store until then.

    Raises:
        BuildError: the realizer raised, returned no folder, or returned folders that are
            not its own in the store's staging area (a symlink, a folder outside, the same
            folder twice); the build's staging folder is kept for inspection
            (``BuildError.staging``) until ``remove_staging_garbage`` frees it.
        PromiseError: an output lacks a path its config promised.
        StoreError: the staging area cannot be written (a read-only or full store).
    """
    dref = step.dref
    log.info("build %s", dref)
    started = time.time()
    try:
        outdirs = list(step.realizer(step))
    except NixletError:
        raise
    except Exception as e:
        error = BuildError(
            f"realizer of {dref} failed: {type(e).__name__}: {e}", dref=dref, cause=e, staging=None
        )
        raise error.with_traceback(e.__traceback__) from e
    finished = time.time()
    if not outdirs:
        raise BuildError(
            f"realizer of {dref} returned no output folder", dref=dref, cause=None, staging=None
        )
    folders = sealing.check_outputs(step.store, dref, outdirs)
    for out in folders:
        _check_promises(step, out)
    context = encode_context(step.context)
    sealed: list[sealing.Sealed] = []
    try:
        for out in folders:
            sealed.append(sealing.seal(step.store, dref, context, out, started, finished))
    except BaseException:
        for done in sealed:  # the outputs sealed before the failure are no one's now
            if done.obj is not None:
                staging.remove_tree(done.obj)
        raise
    return Staged(
        step.store,
        dref,
        step.config,
        step.code,
        tuple(s.rref for s in sealed),
        tuple(s.obj for s in sealed),
        tuple(s.relpaths for s in sealed),
        sum(s.nbytes for s in sealed),
    )


def _check_promises(step: BuildStep, out: str) -> None:
    promises = step.config.promises
    missing = ["/".join(p) for p in promises if not os.path.lexists(os.path.join(out, *p))]
    if missing:
        kept = staging.mark_failed(step.store, Path(out))
        raise PromiseError(
            f"build of {step.dref} did not create the promised {missing} in {out} "
            f"(kept for inspection at {kept}; remove_staging_garbage() frees it)",
            dref=step.dref,
            missing=missing,
            staging=kept,
            cause=None,
        )
