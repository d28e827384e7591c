"""The model: the store handle, derivations, closures, build steps and builds, and the two
extension protocols (``Matcher``, ``Realizer``). Plain frozen values; nothing here touches the
filesystem.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeAlias

import attrs

from nixlet.values.config import Config
from nixlet.values.errors import ClosureError
from nixlet.values.refs import DRef, RRef

#: The RRefs chosen for each direct dependency of a derivation.
Context: TypeAlias = Mapping[DRef, tuple[RRef, ...]]


@attrs.frozen
class Store:
    """A nixlet store: a folder tree. Get one from ``store_initialize``."""

    root: Path = attrs.field(converter=Path)

    def __str__(self) -> str:
        return str(self.root)


class Matcher(Protocol):
    """Chooses among the realizations of one derivation built in one context.

    Returns the chosen RRefs (a subset of ``rrefs``), or ``None`` to ask for more builds.
    """

    def __call__(self, store: Store, rrefs: list[RRef], /) -> list[RRef] | None: ...


class Realizer(Protocol):
    """Builds one derivation: receives the ``BuildStep`` (config, context, store) and
    returns output folders in the store's staging area, each of which is published as one
    realization. ``build_wrapper`` makes one from a plain function of a ``Build``; a runner
    is a function that takes a realizer and returns another."""

    def __call__(self, step: BuildStep, /) -> Sequence[Path]: ...


@attrs.frozen
class BuildStep:
    """One build that a ``Plan`` hands out: a derivation and the context to build it in.

    Self-contained: the config record and code identity travel with it, so ``build_step``
    needs nothing from the process that planned it, only the store's folder. It pickles
    whenever its realizer does (``build_wrapper`` of an importable function does).
    """

    store: Store
    dref: DRef
    config: Config
    code: str
    context: Context
    realizer: Realizer


@attrs.frozen
class Derivation:
    """One node of a closure: a config, its code identity and how to match and build it."""

    dref: DRef
    config: Config
    code: str
    matcher: Matcher
    realizer: Realizer


@attrs.frozen
class Closure:
    """What ``instantiate`` returns: the result DRef and every derivation it needs, in
    dependency order (each after all of its dependencies)."""

    result: DRef
    derivations: tuple[Derivation, ...]
    store: Store

    def derivation(self, dref: DRef) -> Derivation:
        """The derivation of ``dref`` in this closure."""
        for d in self.derivations:
            if d.dref == dref:
                return d
        raise ClosureError(f"{dref} is not part of this closure", dref=dref)


@attrs.frozen
class Build:
    """What a build function receives: the derivation, its config, the chosen
    realizations of its dependencies, and the output folders to fill."""

    store: Store
    dref: DRef
    config: Config
    context: Context
    outpaths: tuple[Path, ...]
    staging: Path


# typing's Callable (not collections.abc's) so that the alias can carry a docstring.
BuildFunction: TypeAlias = typing.Callable[[Build], None]
BuildFunction.__doc__ = "What ``build_wrapper`` wraps: ``fn(b: Build) -> None`` fills the outputs."
