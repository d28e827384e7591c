"""Matchers: choose among the realizations of a derivation built in one context.

A matcher is any callable ``(store, rrefs) -> list[RRef] | None``; ``None`` asks realize to
build more. The ready ones are frozen attrs values: comparable, printable in errors, and
picklable.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable

import attrs

from nixlet.store import layout, records
from nixlet.values.config import plain_parts
from nixlet.values.errors import MatcherError, NixletWarning, UsageError
from nixlet.values.model import Store
from nixlet.values.refs import RRef


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or value < 1:
        raise UsageError(
            f"{attribute.name} must be a positive int, got {value!r}", argument=attribute.name
        )


@attrs.frozen
class match_some:  # noqa: N801 - a matcher reads as a function call: match_some(3)
    """The first ``n`` realizations (by RRef, so the choice is stable); more are built
    until there are ``n``."""

    n: int = attrs.field(default=1, validator=_positive)

    def __call__(self, store: Store, rrefs: list[RRef], /) -> list[RRef] | None:
        return sorted(rrefs)[: self.n] if len(rrefs) >= self.n else None


@attrs.frozen
class match_latest:  # noqa: N801
    """The ``n`` most recently started builds; more are built until there are ``n``."""

    n: int = attrs.field(default=1, validator=_positive)

    def __call__(self, store: Store, rrefs: list[RRef], /) -> list[RRef] | None:
        if len(rrefs) < self.n:
            return None
        started = {r: records.read_build_times(store, r)[0] for r in rrefs}
        return sorted(rrefs, key=lambda r: (started[r], r), reverse=True)[: self.n]


@attrs.frozen
class match_all:  # noqa: N801
    """Every realization; one is built if there is none."""

    def __call__(self, store: Store, rrefs: list[RRef], /) -> list[RRef] | None:
        return sorted(rrefs) if rrefs else None


@attrs.frozen
class match_only:  # noqa: N801
    """The single realization; one is built if there is none.

    Raises:
        MatcherError: the store holds several (a non-deterministic stage built twice).
    """

    def __call__(self, store: Store, rrefs: list[RRef], /) -> list[RRef] | None:
        if len(rrefs) > 1:
            raise MatcherError(
                f"match_only() found {len(rrefs)} realizations of {rrefs[0].dref}; "
                "choose with match_latest, match_best or match_exact",
                matcher="match_only()",
                dref=rrefs[0].dref,
            )
        return list(rrefs) or None


def _parse_rrefs(rrefs: Iterable[RRef | str]) -> tuple[RRef, ...]:
    return tuple(RRef.parse(r) for r in rrefs)


@attrs.frozen
class match_exact:  # noqa: N801
    """Exactly the given realizations.

    Raises:
        MatcherError: one of them is not among the candidates (building cannot create a
            given RRef).
    """

    rrefs: tuple[RRef, ...] = attrs.field(converter=_parse_rrefs)

    def __call__(self, store: Store, rrefs: list[RRef], /) -> list[RRef] | None:
        missing = set(self.rrefs) - set(rrefs)
        if missing:
            raise MatcherError(
                f"match_exact: {sorted(map(str, missing))} not among the realizations built "
                "in this context; building cannot produce a given RRef",
                matcher=repr(self),
                dref=None,
            )
        return sorted(self.rrefs)


def _relative_file(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if type(value) is not str or not plain_parts(value.split("/")):
        raise UsageError(
            f"{attribute.name} must be a path inside the realization, as 'score.txt' or "
            f"'metrics/acc.txt' (no leading '/', no '.' or '..' parts), got {value!r}",
            argument=attribute.name,
        )


@attrs.frozen
class match_best:  # noqa: N801
    """The ``n`` realizations whose file ``filename`` (a path inside the realization, as
    ``"metrics/acc.txt"``) holds the highest number (the lowest with ``minimize=True``).

    A realization without the file, or with something else than a number in it, is skipped
    with a ``NixletWarning``, and more are built until ``n`` are scored. When there are
    realizations but none has a usable score (the build writes ``accuracy: 0.42``, or another
    file name), building more would never end: ``MatcherError`` says what was read.
    """

    filename: str = attrs.field(validator=_relative_file)
    n: int = attrs.field(default=1, validator=_positive)
    minimize: bool = False

    def __call__(self, store: Store, rrefs: list[RRef], /) -> list[RRef] | None:
        scores: dict[RRef, float] = {}
        problems: dict[RRef, str] = {}
        for rref in rrefs:
            score = self._score(store, rref)
            if isinstance(score, float):
                scores[rref] = score
            else:
                problems[rref] = score
        if rrefs and not scores:
            raise self._unusable(problems)
        for rref, why in problems.items():
            warnings.warn(f"match_best: skipping {rref}: {why}", NixletWarning, stacklevel=2)
        if len(scores) < self.n:
            return None
        ranked = sorted(scores, key=lambda r: (scores[r], r), reverse=not self.minimize)
        return ranked[: self.n]

    def _score(self, store: Store, rref: RRef) -> float | str:
        """The realization's score, or why it has none."""
        path = os.path.join(layout.rref_dir_str(store, rref), layout.OUT, self.filename)
        try:
            data = records.read_bytes(path)
        except FileNotFoundError:
            return f"{self.filename} is missing"
        except OSError as e:
            return f"{self.filename} cannot be read ({e.strerror})"
        try:
            return _finite(float(data.decode().strip()))
        except (ValueError, UnicodeDecodeError):
            return f"{self.filename} holds {data[:60]!r}, not a number"

    def _unusable(self, problems: dict[RRef, str]) -> MatcherError:
        rref, why = max(problems.items())
        return MatcherError(
            f"{self!r}: none of the {len(problems)} realizations of {rref.dref} has a usable "
            f"score ({why}, in {rref}); building more would not change that. Write a single "
            f"number to {self.filename} in the build, or fix the matcher's file name",
            matcher=repr(self),
            dref=rref.dref,
        )


def _finite(x: float) -> float:
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError(f"{x} is not a finite score")
    return x


def matcher_name(matcher: object) -> str:
    """How errors name a matcher: its repr for the ready ones, else its qualified name."""
    if attrs.has(type(matcher)):
        return repr(matcher)
    return getattr(matcher, "__qualname__", None) or repr(matcher)
