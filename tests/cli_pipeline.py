"""The command-line tests' pipeline (tests/cli/, tests/tools/), and how they run nixlet.

``data`` (deterministic, a file in a sub-folder), and two ``train`` derivations (``lr``
0.1 and 0.2) built against it, two realizations each (a random seed makes each build
differ). Their four realizations share the first half of their hash: one context."""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs
from click.testing import CliRunner, Result

import nixlet as nx
from nixlet.cli.main import load


def data(b: nx.Build) -> None:
    out = nx.build_outpath(b)
    (out / "data").mkdir()
    (out / "data" / "numbers.json").write_text(json.dumps(list(range(10))))


def train(b: nx.Build) -> None:
    c = nx.build_cattrs(b)
    out = nx.build_outpath(b)
    (out / "score.txt").write_text(str(c.lr * 10))
    (out / "seed.txt").write_text(str(random.random()))


def pipeline(m: nx.Manager, lr: float) -> nx.DRef:
    d = nx.mkdrv(m, {"name": "data"}, nx.match_only(), nx.build_wrapper(data))
    config = {"name": "train", "lr": lr, "data": [d, "data", "numbers.json"], "opts": {"a": 1}}
    return nx.mkdrv(m, config, nx.match_some(2), nx.build_wrapper(train))


@attrs.frozen
class Built:
    """What the pipeline put in the store."""

    store: nx.Store
    data: nx.DRef
    data_rref: nx.RRef
    train1: nx.DRef  # lr 0.1
    train2: nx.DRef  # lr 0.2
    runs1: tuple[nx.RRef, ...]
    runs2: tuple[nx.RRef, ...]


def realize_pipeline(store: nx.Store) -> Built:
    """Realize the pipeline in the default store, ``store``."""
    runs1 = tuple(nx.realize_many(nx.instantiate(pipeline, 0.1)))
    runs2 = tuple(nx.realize_many(nx.instantiate(pipeline, 0.2)))
    (data_rref,) = nx.rrefdeps(runs1[0])
    return Built(store, data_rref.dref, data_rref, runs1[0].dref, runs2[0].dref, runs1, runs2)


def run(store: nx.Store | Path | str | None, *args: str) -> Result:
    """Run ``nixlet [--store STORE] ARGS...`` in this process (click's CliRunner)."""
    prefix = ["--store", str(store.root if isinstance(store, nx.Store) else store)]
    return CliRunner().invoke(load(), [*(prefix if store is not None else []), *args])


def command(*args: str) -> list[str]:
    """The argv of the real command, ``python -m nixlet ARGS...``, for a subprocess."""
    return [sys.executable, "-m", "nixlet", *args]


def lines(result: Result) -> Sequence[str]:
    return result.stdout.splitlines()
