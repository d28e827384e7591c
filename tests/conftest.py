"""Shared fixtures: every test gets its own store in a temporary folder, and no test sees
another's process default store or in-place manager."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import nixlet
from nixlet.interactive import inplace
from nixlet.store import opening as store_mod


def campaign_scale(short: int, long: int) -> int:
    """How many rounds a campaign runs: ``short`` in `make test`, ``long`` in `make campaign`."""
    return long if os.environ.get("NIXLET_CAMPAIGN") == "long" else short


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("NIXLET_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    store_mod.reset_default()
    inplace._managers.clear()
    yield
    store_mod.reset_default()
    inplace._managers.clear()


@pytest.fixture
def store(tmp_path: Path) -> nixlet.Store:
    """A fresh store, made the process default."""
    return nixlet.store_initialize(tmp_path / "store")
