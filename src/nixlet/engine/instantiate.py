"""The first pass: stage functions declare derivations, and ``instantiate`` collects them
into a closure. Nothing is built and nothing is written: ``realize`` publishes the
derivation records of a closure, as one batch, before it builds anything. (Writing them here
made instantiation I/O-bound: 1000 records cost four times the hashing.)"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from nixlet.store import opening as store_mod
from nixlet.values.config import Config, mkconfig
from nixlet.values.context import derivation_hash
from nixlet.values.errors import ClosureError, ConfigError, UsageError
from nixlet.values.fingerprint import code_identity
from nixlet.values.model import Closure, Derivation, Matcher, Realizer, Store
from nixlet.values.refs import DRef


@attrs.define(eq=False)
class Manager:
    """Collects the derivations that stage functions declare with ``mkdrv`` during one
    ``instantiate`` (or across ``instantiate_inplace`` calls)."""

    store: Store
    derivations: dict[DRef, Derivation] = attrs.field(factory=dict)


def derivation_ref(config: Config, code: str) -> DRef:
    """The DRef of a config and a code identity."""
    return DRef(derivation_hash(config, code), config.name)


def mkdrv(
    m: Manager,
    config: Config | Mapping[str, Any],
    matcher: Matcher,
    realizer: Realizer,
    version: str | None = None,
) -> DRef:
    """Declare a derivation and return its DRef.

    Its identity is the canonical config plus the build code's fingerprint (or ``version``,
    for users who want to refactor without rebuilding). The matcher is not part of it: the
    same stage with another matcher names the same derivation and sees the same
    realizations. Dependencies are the DRefs inside the config; each must have been
    declared in this manager first (call the stages you depend on before ``mkdrv``).

    Raises:
        ConfigError: the config is not valid.
        ClosureError: a dependency was not declared in this manager.
    """
    if not isinstance(m, Manager):
        raise UsageError(
            f"mkdrv's first argument is the Manager a stage receives, got {m!r}", argument="m"
        )
    cfg = mkconfig(config)
    if not callable(matcher) or not callable(realizer):
        raise ConfigError(f"mkdrv needs a callable matcher and realizer for {cfg.name!r}")
    for dep in cfg.deps:
        if dep not in m.derivations:
            raise ClosureError(
                f"{cfg.name!r} depends on {dep}, which was not declared in this instantiation: "
                "call the stage that makes it first, in the same instantiate",
                dref=dep,
            )
    code = code_identity(realizer, version)
    dref = derivation_ref(cfg, code)
    m.derivations[dref] = Derivation(dref, cfg, code, matcher, realizer)
    return dref


def instantiate(
    stage: Callable[..., DRef],
    *args: Any,
    store: Store | str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Closure:
    """Run ``stage(m, *args, **kwargs)`` and return the closure of the DRef it returns.

    Pure: it builds nothing and writes nothing to the store (``realize`` records the
    derivations it is given).

    Raises:
        ClosureError: the stage did not return a DRef of this instantiation.
    """
    m = Manager(store_mod.resolve(store))
    return closure_of(m, stage(m, *args, **kwargs))


def closure_of(m: Manager, result: object) -> Closure:
    """The closure of ``result`` among the derivations of ``m``, in dependency order."""
    if not isinstance(result, DRef):
        try:
            result = DRef.parse(result)
        except ValueError:
            raise ClosureError(f"a stage must return a DRef, got {result!r}") from None
    if result not in m.derivations:
        raise ClosureError(f"{result} was not declared in this instantiation", dref=result)
    needed: set[DRef] = set()
    todo = [result]
    while todo:
        dref = todo.pop()
        if dref not in needed:
            needed.add(dref)
            todo.extend(m.derivations[dref].config.deps)
    # Declaration order is a dependency order: mkdrv refuses a dependency not yet declared.
    ordered = tuple(d for d in m.derivations.values() if d.dref in needed)
    return Closure(result, ordered, m.store)
