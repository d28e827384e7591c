"""Staging: a process that builds and ends normally leaves nothing in ``.tmp``; a failed
build's kept staging can be freed from the same process; a store wiped and initialised again
under a running process keeps working."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import nixlet as nx
from campaign_stages import HANG_GUARD
from nixlet.store import staging

SCRIPT = """
import sys, nixlet as nx
def build(b):
    (nx.build_outpath(b) / "x").write_text(sys.argv[2])
def stage(m):
    return nx.mkdrv(m, {"name": "x", "v": sys.argv[2]}, nx.match_only(), nx.build_wrapper(build))
nx.store_initialize(sys.argv[1])
print(nx.realize(nx.instantiate(stage)))
"""


def test_a_process_that_ends_normally_leaves_nothing_in_tmp(tmp_path: Path) -> None:
    """Every process that built used to leave an empty staging folder and its lock file in
    ``.tmp``; now both go when it exits normally, and its result is published."""
    store = tmp_path / "store"
    for value in ("1", "2", "3"):
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(store), value],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("rref:")
    assert sorted(os.listdir(store / ".tmp")) == []
    assert len(nx.allrrefs(store=store)) == 3


def _fails(b: nx.Build) -> None:
    (nx.build_outpath(b) / "half").write_text("half-written")
    raise RuntimeError("diverged")


def test_a_failed_builds_staging_is_freed_from_the_same_process(store: nx.Store) -> None:
    """A failed build keeps its staging folder for inspection (``BuildError.staging``,
    named ``failed.*``); ``staging_garbage`` lists it and ``remove_staging_garbage`` frees
    it without ending the process, which can build again afterwards."""
    c = nx.instantiate(
        lambda m: nx.mkdrv(m, {"name": "f"}, nx.match_only(), nx.build_wrapper(_fails))
    )
    with pytest.raises(nx.BuildError) as e:
        nx.realize(c)
    kept = e.value.staging
    assert kept is not None and (kept / "out" / "half").read_text() == "half-written"
    assert kept.name.startswith("failed.")
    assert nx.staging_garbage() == [kept]
    assert nx.remove_staging_garbage() == 1
    assert not kept.exists()
    assert nx.staging_garbage() == []
    ok = nx.instantiate(
        lambda m: nx.mkdrv(m, {"name": "ok"}, nx.match_only(), nx.build_wrapper(_writes))
    )
    assert nx.catref(nx.realize(ok), "x") == "ok"


def _writes(b: nx.Build) -> None:
    (nx.build_outpath(b) / "x").write_text("ok")


def test_a_live_builds_folder_is_never_garbage(store: nx.Store) -> None:
    """A folder this process is building in (not failed) is not listed as garbage: only
    ``failed.*`` folders of a live process are."""
    live = staging.new_staging(store, "building")
    assert live not in nx.staging_garbage()
    assert nx.remove_staging_garbage() == 0
    assert live.is_dir()


def test_wiping_and_initialising_the_store_again_keeps_realize_working(tmp_path: Path) -> None:
    """A notebook that wipes its store (rm -rf) and initialises it again used to fail every
    later realize (the staging folder it had cached was gone)."""
    root = tmp_path / "store"
    closure = nx.instantiate(
        lambda m: nx.mkdrv(m, {"name": "w"}, nx.match_only(), nx.build_wrapper(_writes)),
        store=nx.store_initialize(root),
    )
    first = nx.realize(closure)
    subprocess.run(["chmod", "-R", "u+w", str(root)], check=True)
    subprocess.run(["rm", "-rf", str(root)], check=True)
    nx.store_initialize(root)
    assert nx.allrrefs() == []
    again = nx.realize(closure)
    assert again == first and nx.catref(again, "x") == "ok"
