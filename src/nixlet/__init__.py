"""nixlet: Nix's immutable, content-addressed store for data-science and ML pipelines.

Stages declare derivations (``mkdrv``); ``instantiate`` collects them into a closure without
building anything; ``realize`` walks the closure, lets each derivation's matcher choose among
the existing realizations built against the same dependency choices, and builds more where
the matcher asks. Every name below is the public API; docs/ explains each with examples.
"""

import os as _os

from nixlet import store as _store
from nixlet.build import (
    build_cattrs,
    build_config,
    build_context,
    build_deref,
    build_outpath,
    build_outpaths,
    build_path,
    build_wrapper,
)
from nixlet.errors import (
    BuildError,
    ClosureError,
    ConfigError,
    MatcherError,
    NixletError,
    NixletWarning,
    PromiseError,
    RefError,
    StoreError,
)
from nixlet.inplace import instantiate_inplace, realize_inplace
from nixlet.instantiate import Manager, instantiate, mkdrv
from nixlet.matchers import match_all, match_best, match_exact, match_latest, match_only, match_some
from nixlet.queries import (
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
from nixlet.realize import realize, realize_many
from nixlet.shell import (
    catref,
    dirrw,
    du,
    lsref,
    remove_staging_garbage,
    rmref,
    shellref,
    staging_garbage,
)
from nixlet.types import (
    Build,
    Closure,
    Config,
    Context,
    Derivation,
    DRef,
    Matcher,
    Realizer,
    RefPath,
    RRef,
    Store,
    mkconfig,
    promise,
    rref2dref,
)

__version__ = "0.1.0"


def store_initialize(path: str | _os.PathLike[str] | None = None) -> Store:
    """Create the store folder if missing (idempotent), check its format file, and make it
    this process's default store.

    Args:
        path: the store folder. Default: ``$NIXLET_STORE``, else
            ``$XDG_DATA_HOME/nixlet/store`` (``~/.local/share/nixlet/store``).

    Raises:
        StoreError: the folder holds something that is not a nixlet store of a known
            format; it is left untouched.
    """
    return _store.initialize(path)


__all__ = [
    "Build",
    "BuildError",
    "Closure",
    "ClosureError",
    "Config",
    "ConfigError",
    "Context",
    "DRef",
    "Derivation",
    "Manager",
    "Matcher",
    "MatcherError",
    "NixletError",
    "NixletWarning",
    "PromiseError",
    "RRef",
    "Realizer",
    "RefError",
    "RefPath",
    "Store",
    "StoreError",
    "alldrefs",
    "allrrefs",
    "build_cattrs",
    "build_config",
    "build_context",
    "build_deref",
    "build_outpath",
    "build_outpaths",
    "build_path",
    "build_wrapper",
    "catref",
    "dirrw",
    "dref2path",
    "drefcfg",
    "drefdeps",
    "drefrrefs",
    "du",
    "instantiate",
    "instantiate_inplace",
    "lsref",
    "match_all",
    "match_best",
    "match_exact",
    "match_latest",
    "match_only",
    "match_some",
    "mkconfig",
    "mkdrv",
    "promise",
    "realize",
    "realize_inplace",
    "realize_many",
    "remove_staging_garbage",
    "rmref",
    "rref2dref",
    "rref2path",
    "rrefctx",
    "rrefdeps",
    "shellref",
    "staging_garbage",
    "store_initialize",
]
