"""``mkconfig``: what a config may hold, derivation names, and the laws linking a config's
canonical form to its DRef."""

from __future__ import annotations

import collections
import enum
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import nixlet as nx
from strategies import (
    HOSTILE_NAMES,
    canonical,
    config_keys,
    configs,
    counting_build,
    hostile_names,
    json_values,
    names,
)

PROPERTY = settings(max_examples=50, deadline=None)
H = "c" * 32
RREF = f"rref:{'a' * 32}-{H}-x"


@pytest.fixture(scope="module")
def mstore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nx.Store]:
    """One store for the property tests of this module (mkdrv alone writes nothing)."""
    yield nx.store_initialize(tmp_path_factory.mktemp("config") / "store")


def dref_of(store: nx.Store, config: Any) -> nx.DRef:
    """The DRef ``config`` gets in one fixed stage with one fixed realizer."""
    m = nx.Manager(store)
    return nx.mkdrv(m, config, nx.match_only(), nx.build_wrapper(counting_build))


# ---------------------------------------------------------------- refused values


class FakeFloat64(float):
    """Like numpy.float64: a float subclass."""


class FakeInt64:
    """Like numpy.int64: not an int, but convertible to one."""

    def __int__(self) -> int:
        return 3

    def __index__(self) -> int:
        return 3


class FakeArray:
    """Like numpy.ndarray: a sized, indexable object with tolist()."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        return [1, 2][i]

    def tolist(self) -> list[int]:
        return [1, 2]

    def __array__(self) -> Any:
        return [1, 2]


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    """A str subclass."""


BAD_VALUES: list[tuple[str, Any]] = [
    ("set", {1, 2}),
    ("frozenset", frozenset({1})),
    ("bytes", b"abc"),
    ("bytearray", bytearray(b"abc")),
    ("tuple", (1, 2)),
    ("object", object()),
    ("function", lambda: 0),
    ("nan", float("nan")),
    ("inf", float("inf")),
    ("-inf", float("-inf")),
    ("nested-nan", [1, {"x": float("nan")}]),
    ("complex", 1j),
    ("numpy-like float", FakeFloat64(1.5)),
    ("numpy-like int", FakeInt64()),
    ("numpy-like array", FakeArray()),
    ("int enum", Color.RED),
    ("str subclass", Name("x")),
    ("rref string", RREF),
    ("nested rref string", {"a": [RREF]}),
    ("rref object", nx.RRef("a" * 32, H, "x")),
    ("path", Path("/tmp")),
    ("lone surrogate", "\ud800"),
]


@pytest.mark.parametrize(("label", "value"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_refused_values_raise_config_error(label: str, value: Any) -> None:
    """Values that are not canonical JSON (or are realization refs) raise ConfigError,
    which is also a ValueError, and the message names where the value sits."""
    with pytest.raises(nx.ConfigError) as e:
        nx.mkconfig({"name": "x", "field": value})
    assert isinstance(e.value, ValueError)
    if label != "lone surrogate":
        assert "field" in str(e.value)


@pytest.mark.parametrize("key", [1, 1.5, None, True, ("a", "b"), b"k", nx.DRef(H, "x")])
def test_non_str_keys_raise_config_error(key: Any) -> None:
    """Dict keys must be str: ints, tuples (tuples-as-keys), bytes, DRefs are refused,
    at the top level and nested."""
    with pytest.raises(nx.ConfigError):
        nx.mkconfig({key: 1})
    with pytest.raises(nx.ConfigError):
        nx.mkconfig({"name": "x", "inner": {key: 1}})


def test_tuple_message_suggests_a_list() -> None:
    """A tuple value is refused with a hint to use a list instead."""
    with pytest.raises(nx.ConfigError, match="use a list"):
        nx.mkconfig({"t": (1, 2)})


def test_rref_message_points_to_match_exact() -> None:
    """An RRef in a config is refused with a pointer to match_exact."""
    with pytest.raises(nx.ConfigError, match="match_exact"):
        nx.mkconfig({"r": RREF})


@pytest.mark.parametrize("value", [[1, 2], "text", None, 3, nx.DRef(H, "x")])
def test_config_must_be_a_mapping(value: Any) -> None:
    """Only a dict (any Mapping) makes a config."""
    with pytest.raises(nx.ConfigError):
        nx.mkconfig(value)


def test_circular_config_raises_config_error() -> None:
    """A config that contains itself is not JSON: ConfigError, not RecursionError."""
    d: dict[str, Any] = {"name": "loop"}
    d["self"] = d
    with pytest.raises(nx.ConfigError):
        nx.mkconfig(d)


# ---------------------------------------------------------------- accepted values


def test_accepted_values_and_defaults() -> None:
    """str, int, float, bool, None, lists, dicts, any Mapping, DRefs and promises are
    accepted; the name defaults to 'unnamed'; DRefs are stored as strings."""
    d = nx.DRef(H, "dep")
    c = nx.mkconfig(
        {
            "s": "x",
            "i": -3,
            "f": 0.5,
            "b": False,
            "n": None,
            "l": [1, [2, {"k": d}]],
            "od": collections.OrderedDict([("z", 1), ("a", 2)]),
            "p": [nx.promise, "sub", "m.bin"],
        }
    )
    assert c.name == "unnamed"
    assert c.deps == (d,)
    assert c.promises == (("sub", "m.bin"),)
    assert c.to_dict()["l"][1][1]["k"] == str(d)
    assert c.to_dict()["p"] == ["__promise__", "sub", "m.bin"]
    assert c.to_dict()["od"] == {"a": 2, "z": 1}


def test_dref_strings_are_dependencies_in_first_seen_order() -> None:
    """DRefs (objects or strings) anywhere in a config are its dependencies, once each,
    in first-seen order (keys sorted)."""
    a, b = nx.DRef("a" * 32, "a"), nx.DRef("b" * 32, "b")
    c = nx.mkconfig({"x": [str(b), a], "y": {"again": b}})
    assert c.deps == (b, a)


def test_malformed_dref_strings_are_plain_strings() -> None:
    """A string that merely starts with 'dref:' is an ordinary value, not a dependency."""
    c = nx.mkconfig({"x": "dref:not-a-hash"})
    assert c.deps == ()


def test_mkconfig_of_a_config_is_itself() -> None:
    """mkconfig is idempotent on Config values."""
    c = nx.mkconfig({"a": 1})
    assert nx.mkconfig(c) is c


@pytest.mark.parametrize(
    "bad",
    [
        [nx.promise],
        [nx.promise, ""],
        [nx.promise, ".."],
        [nx.promise, "."],
        [nx.promise, "a/b"],
        [nx.promise, 3],
        [nx.promise, "/etc"],
    ],
)
def test_bad_promises_raise_config_error(bad: list[Any]) -> None:
    """A promise must name a path of plain parts inside the output."""
    with pytest.raises(nx.ConfigError):
        nx.mkconfig({"out": bad})


def test_promise_object_and_its_stored_tag_are_equivalent() -> None:
    """``[promise, 'f']`` and its stored form ``['__promise__', 'f']`` give one config."""
    a = nx.mkconfig({"o": [nx.promise, "f"]})
    b = nx.mkconfig({"o": ["__promise__", "f"]})
    assert a == b
    assert a.promises == (("f",),)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["a", "A-z_0.9+", "x" * 64, ".", "-", "a.b", "_"])
def test_valid_names(name: str) -> None:
    """Names of 1 to 64 chars of [A-Za-z0-9._+-] without '..' are accepted."""
    assert nx.mkconfig({"name": name}).name == name


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_raise_config_error(name: str) -> None:
    """Traversal, separators, empty, unicode, NUL, too long: ConfigError."""
    with pytest.raises(nx.ConfigError):
        nx.mkconfig({"name": name})


@PROPERTY
@given(hostile_names)
def test_random_hostile_names_raise_config_error(name: str) -> None:
    """Any name outside the grammar is refused."""
    with pytest.raises(nx.ConfigError):
        nx.mkconfig({"name": name})


@pytest.mark.parametrize("name", [1, None, ["a"], nx.DRef(H, "x")])
def test_non_str_names_raise_config_error(name: Any) -> None:
    """The name must be a str."""
    with pytest.raises(nx.ConfigError):
        nx.mkconfig({"name": name})


@PROPERTY
@given(names)
def test_valid_names_are_the_dref_name(name: str) -> None:
    """The config's name is the name part of its DRef."""
    assert nx.mkconfig({"name": name}).name == name


# ---------------------------------------------------------------- laws


def _reordered(value: Any, rnd: st.DataObject) -> Any:
    """The same JSON value with every dict's keys in a random order."""
    if isinstance(value, dict):
        keys = rnd.draw(st.permutations(list(value)))
        return {k: _reordered(value[k], rnd) for k in keys}
    if isinstance(value, list):
        return [_reordered(v, rnd) for v in value]
    return value


@PROPERTY
@given(configs(), st.data())
def test_key_order_does_not_matter(
    mstore: nx.Store, d: dict[str, Any], data: st.DataObject
) -> None:
    """Two configs differing only in key order have the same canonical form and, in the
    same stage with the same realizer, the same DRef."""
    shuffled = _reordered(d, data)
    assert nx.mkconfig(shuffled).canonical == nx.mkconfig(d).canonical
    assert dref_of(mstore, shuffled) == dref_of(mstore, d)


@PROPERTY
@given(configs(), config_keys, json_values)
def test_changing_a_value_changes_the_dref(
    mstore: nx.Store, d: dict[str, Any], key: str, value: Any
) -> None:
    """Setting any key to a value with another canonical JSON gives another canonical form
    and another DRef."""
    changed = dict(d)
    changed[key] = value
    assume(canonical(changed) != canonical(d))
    assert nx.mkconfig(changed).canonical != nx.mkconfig(d).canonical
    assert dref_of(mstore, changed) != dref_of(mstore, d)


@PROPERTY
@given(configs(min_size=1), st.data())
def test_changing_a_nested_value_changes_the_dref(
    mstore: nx.Store, d: dict[str, Any], data: st.DataObject
) -> None:
    """Replacing a value deep inside a config changes the DRef."""
    key = data.draw(st.sampled_from(sorted(k for k in d if k != "name")))
    changed = dict(d)
    changed[key] = {"wrapped": d[key]}
    assert dref_of(mstore, changed) != dref_of(mstore, d)


@PROPERTY
@given(configs(), names)
def test_renaming_changes_the_dref(mstore: nx.Store, d: dict[str, Any], name: str) -> None:
    """The name is part of the identity."""
    renamed = {**d, "name": name}
    assume(renamed.get("name") != d.get("name", "unnamed"))
    assert dref_of(mstore, renamed) != dref_of(mstore, d)


@PROPERTY
@given(configs())
def test_canonical_form_round_trips(d: dict[str, Any]) -> None:
    """``mkconfig(config.to_dict()).canonical == config.canonical``, and the canonical form
    is the sorted, whitespace-free UTF-8 JSON of the config."""
    config = nx.mkconfig(d)
    assert nx.mkconfig(config.to_dict()).canonical == config.canonical
    assert nx.mkconfig(config.to_dict()) == config
    assert config.canonical == canonical(d)


@PROPERTY
@given(configs())
def test_equal_configs_are_equal_values(d: dict[str, Any]) -> None:
    """Configs are values: built twice from the same dict, they are equal."""
    assert nx.mkconfig(d) == nx.mkconfig(dict(d))
