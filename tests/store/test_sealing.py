"""Sealing refuses outputs that are not the build's own folders in staging (a symlink to a
folder outside the store, a folder given twice or inside another), touching nothing outside
staging; and a hardlinked output gets a private copy, so the user's original is never
chmodded, re-timed, or able to change a published realization."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

import nixlet as nx
from campaign_stages import AS_NOBODY, HANG_GUARD
from nixlet.store import staging


def _outside(tmp_path: Path) -> Path:
    """A user's folder outside the store, with one writable file of a known mtime."""
    folder = tmp_path / "user-data"
    folder.mkdir()
    data = folder / "weights.bin"
    data.write_bytes(b"w" * 1000)
    os.chmod(data, 0o644)
    os.utime(data, (1_700_000_000, 1_700_000_000))
    return folder


def _closure(name: str, build: Callable[[nx.Build], None]) -> nx.Closure:
    """The closure of one derivation built by ``build``, matched by match_only."""
    return nx.instantiate(
        lambda m: nx.mkdrv(m, {"name": name}, nx.match_only(), nx.build_wrapper(build))
    )


def _state(path: Path) -> tuple[int, float, bytes]:
    st = path.stat()
    return stat.S_IMODE(st.st_mode), st.st_mtime, path.read_bytes()


def _staging_holds_no_object(store: nx.Store) -> None:
    """Nothing of a refused build is published, and no sealed object is left in staging."""
    assert nx.allrrefs(store=store) == []
    for folder, _dirs, files in os.walk(store.root / ".tmp"):
        assert "meta.json" not in files, f"a sealed object was left in {folder}"


def test_a_build_that_replaces_out_by_a_symlink_is_refused(store: nx.Store, tmp_path: Path) -> None:
    """A build that replaces its output folder by a symlink to the user's folder gets a
    BuildError; the user's files keep their mode, mtime and bytes (sealing used to follow
    the link and make them read-only with a 1970 mtime)."""
    outside = _outside(tmp_path)
    before = _state(outside / "weights.bin")

    def build(b: nx.Build) -> None:
        out = nx.build_outpath(b)
        shutil.rmtree(out)
        os.symlink(outside, out)

    c = nx.instantiate(
        lambda m: nx.mkdrv(m, {"name": "s"}, nx.match_only(), nx.build_wrapper(build))
    )
    with pytest.raises(nx.BuildError, match="symlink") as e:
        nx.realize(c)
    assert e.value.dref == c.result
    assert _state(outside / "weights.bin") == before
    assert stat.S_IMODE(outside.stat().st_mode) != 0o555
    _staging_holds_no_object(store)


def _plain(returns: object) -> nx.Realizer:
    """A realizer (no build_wrapper) whose output folders ``returns(step)`` gives."""

    def realizer(step: nx.BuildStep, /) -> list[Path]:
        return returns(step)  # type: ignore[operator, no-any-return]

    return realizer


def _staged_folder(step: nx.BuildStep, name: str) -> Path:
    folder = staging.new_staging(step.store, name) / "out"
    folder.mkdir()
    (folder / "f.txt").write_text(name)
    return folder


def test_a_realizer_returning_a_symlink_in_staging_is_refused(
    store: nx.Store, tmp_path: Path
) -> None:
    """A symlink inside the staging area that points to a folder outside is refused, and
    the folder it points to is untouched."""
    outside = _outside(tmp_path)
    before = _state(outside / "weights.bin")

    def link(step: nx.BuildStep) -> list[Path]:
        path = staging.new_staging(step.store, "link") / "out"
        os.symlink(outside, path)
        return [path]

    c = nx.instantiate(lambda m: nx.mkdrv(m, {"name": "l"}, nx.match_only(), _plain(link)))
    with pytest.raises(nx.BuildError, match="symlink"):
        nx.realize(c)
    assert _state(outside / "weights.bin") == before
    _staging_holds_no_object(store)


@pytest.mark.parametrize("shape", ["twice", "nested"])
def test_a_realizer_returning_a_folder_twice_or_nested_is_refused(
    store: nx.Store, shape: str
) -> None:
    """The same folder given twice (which used to publish a realization without ``out/``)
    or a folder inside another output is refused before anything is sealed."""

    def outputs(step: nx.BuildStep) -> list[Path]:
        folder = _staged_folder(step, "x")
        if shape == "twice":
            return [folder, folder]
        (folder / "inner").mkdir()
        return [folder, folder / "inner"]

    c = nx.instantiate(lambda m: nx.mkdrv(m, {"name": shape}, nx.match_all(), _plain(outputs)))
    with pytest.raises(nx.BuildError, match="twice, or inside another"):
        nx.realize(c)
    _staging_holds_no_object(store)


def test_two_distinct_outputs_are_two_realizations(store: nx.Store) -> None:
    """The checks accept what they should: two sibling folders of the staging area are two
    realizations, each with its own ``out/``."""

    def outputs(step: nx.BuildStep) -> list[Path]:
        return [_staged_folder(step, "a"), _staged_folder(step, "b")]

    c = nx.instantiate(lambda m: nx.mkdrv(m, {"name": "two"}, nx.match_all(), _plain(outputs)))
    rrefs = nx.realize_many(c)
    assert sorted(nx.catref(r, "f.txt") for r in rrefs) == ["a", "b"]


def test_a_hardlinked_output_gets_a_private_copy(store: nx.Store, tmp_path: Path) -> None:
    """A build that hardlinks a large input into its output (to avoid a copy) publishes a
    copy: the user's original keeps its mode and mtime, and a later edit of the original
    does not change the published realization."""
    original = _outside(tmp_path) / "weights.bin"
    before = _state(original)

    def build(b: nx.Build) -> None:
        os.link(original, nx.build_outpath(b) / "weights.bin")

    c = nx.instantiate(
        lambda m: nx.mkdrv(m, {"name": "h"}, nx.match_only(), nx.build_wrapper(build))
    )
    rref = nx.realize(c)
    published = nx.rref2path(rref) / "weights.bin"
    assert _state(original) == before
    assert original.stat().st_nlink == 1 and published.stat().st_nlink == 1
    assert stat.S_IMODE(published.stat().st_mode) == 0o444
    original.write_bytes(b"edited")
    assert published.read_bytes() == b"w" * 1000


def test_a_symlink_inside_an_output_is_kept_and_not_followed(
    store: nx.Store, tmp_path: Path
) -> None:
    """A symlink inside an output is published as a symlink; sealing never follows it to
    the user's file."""
    original = _outside(tmp_path) / "weights.bin"
    before = _state(original)

    def build(b: nx.Build) -> None:
        os.symlink(original, nx.build_outpath(b) / "link")

    c = nx.instantiate(
        lambda m: nx.mkdrv(m, {"name": "k"}, nx.match_only(), nx.build_wrapper(build))
    )
    rref = nx.realize(c)
    assert os.readlink(nx.rref2path(rref) / "link") == str(original)
    assert _state(original) == before


def test_an_unreadable_output_is_a_build_error(tmp_path: Path) -> None:
    """An output file the build left unreadable (to the user nixlet runs as) gives a
    BuildError naming the derivation, not a raw PermissionError. Root reads everything, so
    the whole realize runs as the user ``nobody`` in a subprocess."""
    script = (
        "import os, sys, nixlet as nx\n"
        "def build(b):\n"
        "    p = nx.build_outpath(b) / 'secret'\n"
        "    p.write_text('x'); os.chmod(p, 0)\n"
        "def stage(m):\n"
        "    return nx.mkdrv(m, {'name': 'u'}, nx.match_only(), nx.build_wrapper(build))\n"
        "nx.store_initialize(sys.argv[1])\n"
        "try:\n"
        "    nx.realize(nx.instantiate(stage))\n"
        "except nx.BuildError as e:\n"
        "    print('BuildError', e.dref)\n"
    )
    base = Path(tempfile.mkdtemp(prefix="nixlet-unreadable-"))
    try:
        base.chmod(0o755)
        shutil.chown(base, "nobody", "nogroup")
        done = subprocess.run(
            [*AS_NOBODY, sys.executable, "-c", script, str(base / "store")],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
            env={**os.environ, "HOME": str(base)},
        )
    finally:
        shutil.rmtree(base)
    assert "BuildError dref:" in done.stdout, done.stderr


def test_a_refused_builds_folder_can_be_freed(store: nx.Store, tmp_path: Path) -> None:
    """The folder of a refused build (here: out replaced by a symlink) is kept as
    ``failed.*`` and freed by ``remove_staging_garbage`` from the same process; the folder
    the symlink pointed to survives, untouched."""
    outside = _outside(tmp_path)

    def build(b: nx.Build) -> None:
        out = nx.build_outpath(b)
        shutil.rmtree(out)
        os.symlink(outside, out)

    with pytest.raises(nx.BuildError) as e:
        nx.realize(_closure("r", build))
    kept = e.value.staging
    assert kept is not None and kept.is_symlink()
    assert kept.parent.name.startswith("failed.")
    assert nx.remove_staging_garbage() == 1
    assert not kept.parent.exists()
    assert (outside / "weights.bin").read_bytes() == b"w" * 1000
