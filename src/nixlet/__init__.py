"""nixlet: Nix's immutable, content-addressed store for data-science and ML pipelines.

Stages declare derivations (``mkdrv``); ``instantiate`` collects them into a closure without
building anything; ``realize`` walks the closure, lets each derivation's matcher choose among
the existing realizations built against the same dependency choices, and builds more where
the matcher asks. ``realize`` is one driver of a public protocol, ``plan`` / ``build_step`` /
``publish``, which parallel executors, runners and the REPL drive too. Every name below is
the public API; docs/ explains each with examples.

The package is in layers, each a subpackage that imports only from those below it (checked
by import-linter): ``values`` (references, configs, the model, hashing, errors; no I/O),
``store`` (the only code that changes a store's files), ``engine`` (instantiate, matchers,
build helpers, the protocol, realize), ``tools`` (queries, shell helpers) and
``interactive`` (the in-place layer). Module paths are not part of the API: public objects
present themselves as ``nixlet.X`` (see ``_present_as_public``), so moving code between
private modules changes nothing a user sees, not even the DRef of a stage that calls
``nixlet.build_outpath``.
"""

import typing as _typing
from typing import Any as _Any

from nixlet.engine.build import (
    build_cattrs,
    build_config,
    build_context,
    build_deref,
    build_outpath,
    build_outpaths,
    build_path,
    build_wrapper,
)
from nixlet.engine.instantiate import Manager, instantiate, mkdrv
from nixlet.engine.matchers import (
    match_all,
    match_best,
    match_exact,
    match_latest,
    match_only,
    match_some,
)
from nixlet.engine.plan import ForceRebuild, Plan, plan
from nixlet.engine.realize import realize, realize_many
from nixlet.engine.step import build_step
from nixlet.interactive.inplace import instantiate_inplace, realize_inplace
from nixlet.store.archive import ExportReport, ImportReport, export, import_
from nixlet.store.gc import GCReport
from nixlet.store.opening import StoreArg, store_initialize
from nixlet.store.publish import Publisher, Staged, publish, publish_many, publishing
from nixlet.store.sync import SyncReport, sync
from nixlet.tools.describe import refsize, rreffiles, rreftimes
from nixlet.tools.diff import Changes, Diff, diff
from nixlet.tools.gc import gc, linkrref, linkrrefs
from nixlet.tools.queries import (
    alldrefs,
    allrrefs,
    dref2path,
    drefcfg,
    drefdeps,
    drefrrefs,
    rref2path,
    rrefctx,
    rrefdeps,
)
from nixlet.tools.refs import resolve_ref, short_ref, short_refs
from nixlet.tools.shell import (
    catref,
    dirrw,
    du,
    lsref,
    remove_staging_garbage,
    rmref,
    shellref,
    staging_garbage,
)
from nixlet.values.config import Config, RefPath, mkconfig, promise
from nixlet.values.errors import (
    BuildError,
    ClosureError,
    ConfigError,
    MatcherError,
    NixletError,
    NixletWarning,
    PromiseError,
    RefError,
    StoreError,
    UsageError,
)
from nixlet.values.model import (
    Build,
    BuildFunction,
    BuildStep,
    Closure,
    Context,
    Derivation,
    Matcher,
    Realizer,
    Store,
)
from nixlet.values.refs import DRef, RRef, rref2dref

__version__ = "0.1.0"

__all__ = [
    "Build",
    "BuildError",
    "BuildFunction",
    "BuildStep",
    "Changes",
    "Closure",
    "ClosureError",
    "Config",
    "ConfigError",
    "Context",
    "DRef",
    "Derivation",
    "Diff",
    "ExportReport",
    "ForceRebuild",
    "GCReport",
    "ImportReport",
    "Manager",
    "Matcher",
    "MatcherError",
    "NixletError",
    "NixletWarning",
    "Plan",
    "PromiseError",
    "Publisher",
    "RRef",
    "Realizer",
    "RefError",
    "RefPath",
    "Staged",
    "Store",
    "StoreArg",
    "StoreError",
    "SyncReport",
    "UsageError",
    "alldrefs",
    "allrrefs",
    "build_cattrs",
    "build_config",
    "build_context",
    "build_deref",
    "build_outpath",
    "build_outpaths",
    "build_path",
    "build_step",
    "build_wrapper",
    "catref",
    "diff",
    "dirrw",
    "dref2path",
    "drefcfg",
    "drefdeps",
    "drefrrefs",
    "du",
    "export",
    "gc",
    "import_",
    "instantiate",
    "instantiate_inplace",
    "linkrref",
    "linkrrefs",
    "lsref",
    "match_all",
    "match_best",
    "match_exact",
    "match_latest",
    "match_only",
    "match_some",
    "mkconfig",
    "mkdrv",
    "plan",
    "promise",
    "publish",
    "publish_many",
    "publishing",
    "realize",
    "realize_inplace",
    "realize_many",
    "refsize",
    "remove_staging_garbage",
    "resolve_ref",
    "rmref",
    "rref2dref",
    "rref2path",
    "rrefctx",
    "rrefdeps",
    "rreffiles",
    "rreftimes",
    "shellref",
    "short_ref",
    "short_refs",
    "staging_garbage",
    "store_initialize",
    "sync",
]


def _present_as_public(namespace: dict[str, _Any]) -> None:
    """Make each public function and class (and its methods) say it is ``nixlet.X``, as
    trio's ``fixup_module_metadata`` does: tracebacks, reprs, pickles and the build-code
    fingerprint (which names library functions by module and qualified name) then do not
    depend on which private module defines it.

    ``typing.get_type_hints`` resolves a class's string annotations in the module its
    ``__module__`` names, so a class's own annotations are resolved first, where they were
    written (with the public names at hand, for the errors' ``DRef``, which that leaf
    module does not import at run time)."""
    for name in __all__:
        obj = namespace[name]
        if getattr(obj, "__module__", "").startswith("nixlet.") and (
            isinstance(obj, type) or callable(obj)
        ):
            if isinstance(obj, type) and vars(obj).get("__annotations__"):
                hints = _typing.get_type_hints(obj, localns=namespace)
                obj.__annotations__ = {k: hints[k] for k in vars(obj)["__annotations__"]}
            obj.__module__ = "nixlet"
            if isinstance(obj, type):
                for member in vars(obj).values():
                    if callable(member) and getattr(member, "__module__", "").startswith("nixlet."):
                        member.__module__ = "nixlet"


_present_as_public(globals())
