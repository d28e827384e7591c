"""The error hierarchy: one root, each child also the builtin it resembles; every error
pickles with its fields (an unpicklable cause travels as text); messages say what to do."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path
from typing import Any

import pytest

import nixlet as nx
from strategies import stage

D = nx.DRef("a" * 32, "x")


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (nx.ConfigError, ValueError),
        (nx.RefError, ValueError),
        (nx.ClosureError, ValueError),
        (nx.StoreError, OSError),
        (nx.BuildError, RuntimeError),
        (nx.PromiseError, RuntimeError),
        (nx.MatcherError, RuntimeError),
    ],
)
def test_hierarchy(cls: type[Exception], builtin: type[Exception]) -> None:
    """Every nixlet error derives from NixletError and from the builtin it resembles."""
    assert issubclass(cls, nx.NixletError)
    assert issubclass(cls, builtin)
    assert issubclass(nx.NixletError, Exception)


def test_promise_error_is_a_build_error() -> None:
    """PromiseError is a kind of BuildError."""
    assert issubclass(nx.PromiseError, nx.BuildError)


def test_nixlet_warning_is_a_user_warning() -> None:
    """NixletWarning is a UserWarning, not an error."""
    assert issubclass(nx.NixletWarning, UserWarning)
    assert not issubclass(nx.NixletWarning, nx.NixletError)


ERRORS: list[tuple[type[nx.NixletError], dict[str, Any]]] = [
    (nx.NixletError, {}),
    (nx.ConfigError, {"where": "config['x']"}),
    (nx.RefError, {}),
    (nx.ClosureError, {"dref": D}),
    (nx.StoreError, {"path": Path("/some/store")}),
    (nx.BuildError, {"dref": D, "cause": ValueError("bad"), "staging": Path("/s")}),
    (nx.PromiseError, {"dref": D, "missing": ["model.bin"], "staging": Path("/s"), "cause": None}),
    (nx.MatcherError, {"matcher": "match_only()", "dref": D}),
]


@pytest.mark.parametrize(("cls", "fields"), ERRORS, ids=[c.__name__ for c, _ in ERRORS])
def test_errors_pickle_with_their_fields(cls: type[nx.NixletError], fields: dict[str, Any]) -> None:
    """An error survives pickling: same class, message and fields."""
    err = cls("what happened; what to do", **fields)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert str(back) == str(err) == "what happened; what to do"
    for key, value in fields.items():
        got = getattr(back, key)
        if isinstance(value, Exception):
            assert type(got) is type(value) and got.args == value.args
        else:
            assert got == value


class _HoldsALock(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self) -> None:
        super().__init__("locked")
        self.lock = threading.Lock()


class _TwoArgs(Exception):
    """An exception that pickles but cannot be rebuilt from its args."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a} and {b}")


@pytest.mark.parametrize(
    "cause",
    [
        _HoldsALock(),
        RuntimeError(threading.Lock()),
        ValueError(lambda: 0),
        _TwoArgs(1, 2),
    ],
    ids=["holds-a-lock", "lock-in-args", "lambda-in-args", "custom-init"],
)
def test_build_error_with_an_unpicklable_cause_still_pickles(cause: Exception) -> None:
    """A BuildError whose cause cannot cross a process boundary still pickles (and
    unpickles), with the cause as text."""
    err = nx.BuildError("build failed", dref=D, cause=cause, staging=Path("/s"))
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is nx.BuildError
    assert back.dref == D and back.staging == Path("/s")
    assert isinstance(back.cause, (str, type(cause)))
    assert str(cause) in str(back.cause)


def _failing_build(b: nx.Build) -> None:
    lock = threading.Lock()
    raise RuntimeError("exploded", lock)


def test_real_build_error_pickles(store: nx.Store) -> None:
    """A BuildError raised by realize (cause holding a lock) round-trips through pickle."""
    c = nx.instantiate(
        lambda m: nx.mkdrv(m, {"name": "boom"}, nx.match_only(), nx.build_wrapper(_failing_build))
    )
    with pytest.raises(nx.BuildError) as e:
        nx.realize(c)
    back = pickle.loads(pickle.dumps(e.value))
    assert back.dref == c.result
    assert back.staging == e.value.staging
    assert "exploded" in str(back.cause)
    assert str(back) == str(e.value)


def test_errors_are_catchable_as_builtins(store: nx.Store) -> None:
    """Callers that know only builtins still catch nixlet errors."""
    with pytest.raises(ValueError):
        nx.mkconfig({"x": {1}})
    with pytest.raises(ValueError):
        nx.DRef.parse("nope")
    with pytest.raises(OSError):
        nx.alldrefs(store=store.root / "absent")


# ---------------------------------------------------------------- messages say what to do


def _no_store() -> None:
    from nixlet.store import opening as store_mod

    store_mod.reset_default()
    nx.alldrefs()


def _deterministic_match_some(store: nx.Store) -> None:
    nx.realize_many(nx.instantiate(lambda m: stage(m, {"name": "det"}, nx.match_some(2))))


def _several(store: nx.Store) -> None:
    nx.realize(nx.instantiate(lambda m: stage(m, {"name": "r", "random": True}, nx.match_some(2))))


def _foreign(store: nx.Store) -> None:
    other = nx.instantiate(lambda m: stage(m, {"name": "other"})).result
    nx.instantiate(lambda m: stage(m, {"name": "x", "src": other}))


def _unknown_format(store: nx.Store) -> None:
    root = store.root.parent / "old"
    root.mkdir()
    (root / "format").write_text('{"format":"nixlet-store","version":99}')
    nx.store_initialize(root)


def _not_a_store(store: nx.Store) -> None:
    root = store.root.parent / "mine"
    root.mkdir()
    (root / "data.txt").write_text("x")
    nx.store_initialize(root)


MESSAGES: list[tuple[str, Any, type[Exception], list[str]]] = [
    ("set value", lambda s: nx.mkconfig({"x": {1}}), nx.ConfigError, ["config['x']", "use str"]),
    ("tuple value", lambda s: nx.mkconfig({"x": (1,)}), nx.ConfigError, ["use a list"]),
    ("bad name", lambda s: nx.mkconfig({"name": "a/b"}), nx.ConfigError, ["[A-Za-z0-9._+-]"]),
    (
        "rref in config",
        lambda s: nx.mkconfig({"r": f"rref:{'a' * 32}-{'b' * 32}-x"}),
        nx.ConfigError,
        ["match_exact"],
    ),
    ("bad dref", lambda s: nx.DRef.parse("dref:x"), nx.RefError, ["dref:<hash>-<name>"]),
    ("bad rref", lambda s: nx.RRef.parse("rref:x"), nx.RefError, ["rref:<hash>-<hash>-<name>"]),
    ("no store", lambda s: _no_store(), nx.StoreError, ["store_initialize", "NIXLET_STORE"]),
    ("unknown format", _unknown_format, nx.StoreError, ["unknown format", "another folder"]),
    ("not a store", _not_a_store, nx.StoreError, ["left untouched", "Choose an empty"]),
    ("foreign dep", _foreign, nx.ClosureError, ["call the stage that makes it first"]),
    (
        "matcher cannot be satisfied",
        _deterministic_match_some,
        nx.MatcherError,
        ["match_some(n=2)", "use a matcher it can satisfy"],
    ),
    ("several chosen", _several, nx.MatcherError, ["use realize_many"]),
]


@pytest.mark.parametrize(("label", "call", "cls", "hints"), MESSAGES, ids=[m[0] for m in MESSAGES])
def test_messages_say_what_to_do(
    store: nx.Store, label: str, call: Any, cls: type[Exception], hints: list[str]
) -> None:
    """Each error's message says what went wrong and what to do about it."""
    with pytest.raises(cls) as e:
        call(store)
    for hint in hints:
        assert hint in str(e.value), (label, str(e.value))
