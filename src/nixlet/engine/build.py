"""Building: ``build_wrapper`` turns a plain function of a ``Build`` into a Realizer, and
the helpers a build function uses to find its config, its inputs and its output folders."""

from __future__ import annotations

import os
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from nixlet.store import layout, staging
from nixlet.values.config import Config, plain_parts, promise
from nixlet.values.errors import BuildError, ClosureError, RefError, UsageError
from nixlet.values.model import Build, BuildFunction, BuildStep, Context, Realizer
from nixlet.values.refs import PROMISE_TAG, DRef, RRef, is_dref


@attrs.frozen
class _BuildWrapper:
    """The Realizer ``build_wrapper`` returns: picklable when ``fn`` is importable, so a
    runner can send it to another process."""

    fn: BuildFunction
    nouts: int

    @property
    def __nixlet_code__(self) -> BuildFunction:
        # The fingerprint follows this to the user's function.
        return self.fn

    def __call__(self, step: BuildStep, /) -> Sequence[Path]:
        store, dref = step.store, step.dref
        root = staging.new_staging_path(store, dref.name)
        # One output is built in <staging>/out, which publishing turns into the object
        # folder as it is; several go to <staging>/<i>/out. (Strings, then one Path each:
        # this runs once per build.)
        if self.nouts == 1:
            outs = [os.path.join(root, "out")]
            os.mkdir(outs[0])
        else:
            outs = [os.path.join(root, str(i), "out") for i in range(self.nouts)]
            for out in outs:
                os.makedirs(out)
        folder = Path(root)
        outpaths = tuple(Path(out) for out in outs)
        b = Build(store, dref, step.config, step.context, outpaths, folder)
        try:
            self.fn(b)
        except Exception as e:
            kept = staging.mark_failed(store, folder)
            error = BuildError(
                f"build of {dref} failed: {type(e).__name__}: {e} "
                f"(its staging folder {kept} is kept for inspection; "
                "remove_staging_garbage() frees it)",
                dref=dref,
                cause=e,
                staging=kept,
            )
            # The user's frames stay at the bottom of the traceback: a post-mortem debugger
            # (pdb.pm, IPython's %debug) then starts in the build function, not in nixlet.
            raise error.with_traceback(e.__traceback__) from e
        return outpaths


def build_wrapper(fn: BuildFunction, nouts: int = 1) -> Realizer:
    """Make a Realizer from ``fn(b: Build) -> None``, which writes its results into
    ``build_outpath(b)`` (or into each of the ``nouts`` folders of ``build_outpaths(b)``:
    several training runs in one build, each published as its own realization).

    The DRef of a derivation built this way covers ``fn``'s code fingerprint.

    Raises:
        UsageError: ``nouts`` is below 1, or ``fn`` is not callable.
    """
    if not isinstance(nouts, int) or nouts < 1:
        raise UsageError(f"nouts must be a positive int, got {nouts!r}", argument="nouts")
    if not callable(fn):
        raise UsageError(f"build_wrapper needs a function of a Build, got {fn!r}", argument="fn")
    return _BuildWrapper(fn, nouts)


def build_outpaths(b: Build) -> list[Path]:
    """All output folders of the build (one per realization it makes)."""
    return list(b.outpaths)


def build_outpath(b: Build) -> Path:
    """The output folder of a single-output build.

    Raises:
        BuildError: the build has several outputs; use ``build_outpaths``.
    """
    if len(b.outpaths) != 1:
        raise BuildError(
            f"{b.dref} has {len(b.outpaths)} outputs; use build_outpaths(b)",
            dref=b.dref,
            cause=None,
            staging=b.staging,
        )
    return b.outpaths[0]


def build_config(b: Build) -> Config:
    """The config of the derivation being built."""
    return b.config


def build_cattrs(b: Build) -> Any:
    """The config as attributes: ``build_cattrs(b).learning_rate``."""
    return types.SimpleNamespace(**b.config.to_dict())


def build_deref(b: Build, dref: DRef | str) -> RRef:
    """The realization chosen for dependency ``dref``.

    Raises:
        ClosureError: ``dref`` is not a direct dependency, or several realizations were
            chosen for it (a matcher such as ``match_some(3)`` upstream).
    """
    rrefs = _chosen(b, dref)
    if len(rrefs) != 1:
        raise ClosureError(
            f"{dref} has {len(rrefs)} chosen realizations; iterate over build_context(b)[dref]",
            dref=dref,
        )
    return rrefs[0]


def build_context(b: Build) -> Context:
    """The realizations chosen for each direct dependency."""
    return b.context


def build_path(b: Build, refpath: Sequence[Any]) -> Path:
    """The path named by a RefPath ``[dref, "sub", "file"]`` inside the realization chosen
    for that dependency; ``[promise, "file"]`` names a path in this build's own output."""
    if not isinstance(refpath, (list, tuple)) or not refpath:
        raise RefError(f"a RefPath is [dref, 'sub', 'file'], got {refpath!r}")
    head, parts = refpath[0], [str(p) for p in refpath[1:]]
    if not plain_parts(parts):
        raise RefError(f"RefPath parts must be plain names, got {refpath!r}")
    if head is promise or head == PROMISE_TAG:
        return build_outpath(b).joinpath(*parts)
    if not is_dref(head):
        raise RefError(f"a RefPath starts with a DRef, got {head!r}")
    return layout.rref_out(b.store, build_deref(b, head)).joinpath(*parts)


def _chosen(b: Build, dref: DRef | str) -> tuple[RRef, ...]:
    key = DRef.parse(dref)
    try:
        return tuple(b.context[key])
    except KeyError:
        raise ClosureError(
            f"{key} is not a dependency of {b.dref}: put it in the config to depend on it",
            dref=key,
        ) from None
