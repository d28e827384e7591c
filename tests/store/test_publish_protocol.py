"""``publish``, ``publish_many`` and ``publishing``: the third part of the plan / build one
step / publish protocol, and its contract. What ``publish`` returns is in the store and
read-only; several steps come back in order; the same content published twice is one
realization and changes nothing; a ``Staged`` whose staging is gone is a ``StoreError``
that publishes nothing of its step. Every ``Staged`` here comes from a real build.
"""

from __future__ import annotations

import multiprocessing
import os
import stat
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

import nixlet as nx
from campaign_stages import HANG_GUARD
from nixlet.store import layout, temproots
from nixlet.store import staging as staging_mod
from protocol_stages import build_or_error, node
from strategies import store_view

# ---------------------------------------------------------------- stages and helpers


def _tree(b: nx.Build) -> None:
    """A deterministic build of a small tree: nested folders, an executable, a symlink."""
    out = nx.build_outpath(b)
    (out / "sub" / "deep").mkdir(parents=True)
    (out / "a.txt").write_text(str(nx.build_cattrs(b).value))
    (out / "sub" / "deep" / "b.txt").write_text("deep")
    (out / "run.sh").write_text("#!/bin/sh\n")
    (out / "run.sh").chmod(0o755)
    (out / "link").symlink_to("a.txt")


def _pair(b: nx.Build) -> None:
    """A non-deterministic build of two outputs, each its own realization."""
    for i, out in enumerate(nx.build_outpaths(b)):
        (out / "i.txt").write_text(f"{i} {os.urandom(8).hex()}")


def _steps(stage: Callable[[nx.Manager], nx.DRef]) -> list[nx.BuildStep]:
    """The steps a fresh plan hands out first for ``stage`` (each root, once); the plan
    is closed, so they hold no lock and are only built and published here."""
    with nx.plan(nx.instantiate(stage)) as p:
        return p.ready()


def _step(stage: Callable[[nx.Manager], nx.DRef]) -> nx.BuildStep:
    (step,) = _steps(stage)
    return step


def _tree_stage(value: int = 1) -> Callable[[nx.Manager], nx.DRef]:
    def stage(m: nx.Manager) -> nx.DRef:
        return nx.mkdrv(
            m, {"name": "tree", "value": value}, nx.match_only(), nx.build_wrapper(_tree)
        )

    return stage


def _pair_stage(m: nx.Manager) -> nx.DRef:
    return nx.mkdrv(m, {"name": "pair"}, nx.match_all(), nx.build_wrapper(_pair, nouts=2))


def _writable(mode: int) -> bool:
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


# ---------------------------------------------------------------- what publish returns


def test_publish_returns_read_only_realizations(store: nx.Store) -> None:
    """The RRefs ``publish`` returns name folders that exist, are 0555 (the realization,
    its out/ and every folder in it), hold read-only files (0444, 0555 if executable)
    and sit beside the derivation's read-only records."""
    (rref,) = nx.publish(nx.build_step(_step(_tree_stage())))
    folder = layout.rref_dir(store, rref)
    folders = [folder, folder / "out", folder / "out" / "sub", folder / "out" / "sub" / "deep"]
    for f in folders:
        assert stat.S_IMODE(os.lstat(f).st_mode) == 0o555, f
    files = {
        "meta.json": 0o444,
        "out/a.txt": 0o444,
        "out/sub/deep/b.txt": 0o444,
        "out/run.sh": 0o555,
    }
    for rel, mode in files.items():
        assert stat.S_IMODE(os.lstat(folder / rel).st_mode) == mode, rel
    assert os.readlink(folder / "out" / "link") == "a.txt"
    for record in ("config.json", "code"):
        assert not _writable(os.lstat(folder.parent / record).st_mode), record
    assert nx.catref(rref, "a.txt") == "1"
    assert nx.drefrrefs(rref.dref) == [rref]


def test_publish_many_returns_each_steps_rrefs_in_order(store: nx.Store) -> None:
    """``publish_many`` of several steps (one with two outputs) returns each step's RRefs
    in the order the steps were given, all of them in the store."""
    trees = [nx.build_step(_step(_tree_stage(v))) for v in (1, 2, 3)]
    pair = nx.build_step(_step(_pair_stage))
    assert len(pair.rrefs) == 2
    batch = [trees[2], pair, trees[0], trees[1]]
    result = nx.publish_many(batch)
    assert result == [list(s.rrefs) for s in batch]
    assert [nx.catref(r[0], "a.txt") for r in result if r[0].name == "tree"] == ["3", "1", "2"]
    published = [r for rrefs in result for r in rrefs]
    assert sorted(published) == nx.allrrefs()
    assert nx.publish_many([]) == []


def test_publishing_block_shows_each_batch_at_once(store: nx.Store) -> None:
    """In a ``publishing`` block each batch is visible as soon as ``publish_many``
    returns (only the flush of names waits for the block's end), and ``flush`` may be
    called in between."""
    first, second = (nx.build_step(_step(_tree_stage(v))) for v in (1, 2))
    with nx.publishing(store) as publisher:
        (r1,) = publisher.publish_many([first])[0]
        assert nx.drefrrefs(r1.dref) == [r1]
        publisher.flush()
        (r2,) = publisher.publish_many([second])[0]
        assert layout.rref_dir(store, r2).is_dir()
    assert sorted([r1, r2]) == nx.allrrefs()


def test_publishing_into_another_store_is_a_store_error(store: nx.Store, tmp_path: Path) -> None:
    """A ``Staged`` of one store cannot be published into another: StoreError, and
    neither store changes."""
    other = nx.store_initialize(tmp_path / "other")
    nx.store_initialize(store.root)
    staged = nx.build_step(_step(_tree_stage()))
    views = store_view(store), store_view(other)
    with nx.publishing(other) as publisher, pytest.raises(nx.StoreError):
        publisher.publish_many([staged])
    assert (store_view(store), store_view(other)) == views
    assert nx.publish(staged) == list(staged.rrefs)  # still publishable where it belongs


# ---------------------------------------------------------------- the same content twice


def test_publishing_the_same_content_twice_changes_nothing(store: nx.Store) -> None:
    """Two builds of a deterministic step, both staged before either is published: the
    second publish returns the same RRef, leaves the store exactly as the first left it,
    and frees its staging."""
    step = _step(_tree_stage())
    first, second = nx.build_step(step), nx.build_step(step)
    assert first.rrefs == second.rrefs
    assert first.objects != second.objects
    published = nx.publish(first)
    view = store_view(store)
    assert nx.publish(second) == published
    assert store_view(store) == view
    (obj,) = second.objects
    assert obj is not None and not os.path.exists(obj)


def test_a_rebuild_after_publishing_stages_nothing(store: nx.Store) -> None:
    """A deterministic step built again after its publication stages no object (the store
    holds its RRef); publishing that changes nothing and returns the same RRef."""
    step = _step(_tree_stage())
    published = nx.publish(nx.build_step(step))
    view = store_view(store)
    again = nx.build_step(step)
    assert again.objects == (None,)
    assert nx.publish(again) == published
    assert store_view(store) == view


def test_publishing_a_published_staged_again_returns_its_rrefs(store: nx.Store) -> None:
    """The very same ``Staged`` published twice (a retry, or a worker and its planner
    both publishing) returns the same RRefs the second time and changes nothing: its
    objects are gone from staging because they are in the store."""
    staged = nx.build_step(_step(_pair_stage))
    published = nx.publish(staged)
    view = store_view(store)
    assert nx.publish(staged) == published
    assert nx.publish_many([staged, staged]) == [published, published]
    assert store_view(store) == view


@pytest.mark.parametrize("known", [False, True], ids=["new derivation", "known derivation"])
def test_a_staged_given_twice_in_one_batch_is_published_once(store: nx.Store, known: bool) -> None:
    """``publish_many([s, s])`` of a ``Staged`` not yet published publishes it once and
    returns its RRefs twice, whether its derivation is new to the store or known (the
    second mention must not discard the object the first is about to publish)."""
    step = _step(_pair_stage)
    if known:
        nx.publish(nx.build_step(step))
    staged = nx.build_step(step)
    result = nx.publish_many([staged, staged])
    assert result == [list(staged.rrefs)] * 2
    assert set(staged.rrefs) <= set(nx.drefrrefs(step.dref))
    assert len(nx.drefrrefs(step.dref)) == (4 if known else 2)


def test_content_staged_by_another_process_publishes_here(store: nx.Store) -> None:
    """A ``Staged`` built in a spawn worker (staged in that process's staging folder) is
    published by this process; this process's own build of the same deterministic step
    then publishes as the same RRef, its staging freed."""
    step = _step(_tree_stage())
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        theirs = pool.submit(build_or_error, step).result(timeout=HANG_GUARD)
        assert isinstance(theirs, nx.Staged)
        mine = nx.build_step(step)
        (their_obj,), (my_obj,) = theirs.objects, mine.objects
        assert their_obj is not None and my_obj is not None
        assert Path(their_obj).parent != Path(my_obj).parent  # two processes' staging roots
        published = nx.publish(theirs)
        assert nx.publish(mine) == published
    assert not os.path.exists(my_obj)
    assert nx.drefrrefs(step.dref) == published


# ---------------------------------------------------------------- staging that is gone


def _remove_objects(staged: nx.Staged, which: slice = slice(None)) -> None:
    """Remove staged objects, as ``remove_staging_garbage`` of a dead builder would."""
    for obj in staged.objects[which]:
        assert obj is not None
        staging_mod.remove_tree(obj)


@pytest.mark.parametrize("known", [False, True], ids=["new derivation", "known derivation"])
def test_publish_of_a_staged_whose_staging_is_gone_is_a_store_error(
    store: nx.Store, tmp_path: Path, known: bool
) -> None:
    """A ``Staged`` whose staging folder was removed gives StoreError (not a bare
    OSError) saying the objects are gone, whether its derivation is new to the store or
    not; the store does not change and no staging is left behind."""
    log = str(tmp_path / "log")
    step = _step(lambda m: node(m, "gone", random=True, log=log, matcher=nx.match_all()))
    if known:
        nx.publish(nx.build_step(step))
    staged = nx.build_step(step)
    _remove_objects(staged)
    view = store_view(store)
    with pytest.raises(nx.StoreError) as e:
        nx.publish(staged)
    assert type(e.value) is nx.StoreError
    assert "gone" in str(e.value) and e.value.path == store.root
    assert store_view(store) == view
    assert len(nx.drefrrefs(step.dref)) == (1 if known else 0)
    assert nx.staging_garbage() == []
    own = staging_mod.staging_root(store)
    assert [p.name for p in own.iterdir() if p.name != temproots.TEMP] == []  # its temp roots aside


@pytest.mark.parametrize("known", [False, True], ids=["new derivation", "known derivation"])
def test_publish_of_a_step_with_one_object_gone_publishes_nothing_of_it(
    store: nx.Store, known: bool
) -> None:
    """A two-output step whose second staged object is gone publishes neither output
    (StoreError), as ``publish`` promises, whether its derivation is new or known; the
    remaining object's staging is freed."""
    step = _step(_pair_stage)
    if known:
        nx.publish(nx.build_step(step))
    before = set(nx.allrrefs())
    staged = nx.build_step(step)
    _remove_objects(staged, slice(1, 2))
    with pytest.raises(nx.StoreError, match="gone"):
        nx.publish(staged)
    assert set(nx.allrrefs()) == before
    (kept, _) = staged.objects
    assert kept is not None and not os.path.exists(kept)


def test_publish_of_a_batch_with_a_gone_step_publishes_nothing(store: nx.Store) -> None:
    """In a batch of two steps where the second's staging is gone, ``publish_many``
    raises StoreError and publishes neither."""
    good, gone = (nx.build_step(_step(_tree_stage(v))) for v in (1, 2))
    _remove_objects(gone)
    with pytest.raises(nx.StoreError, match="gone"):
        nx.publish_many([good, gone])
    assert nx.allrrefs() == []
