"""The manifest a realization's hash covers: file names, contents split across files, the
executable bit, empty folders and symlinks all count; special files are refused; big files
are hashed by streaming.

Each test rebuilds one derivation (``force_rebuild``) with a scripted output tree and
watches whether a new realization appears: same tree, same RRef; another tree, another.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import xxhash

import nixlet as nx
from nixlet.values import hashing
from strategies import TreeSpec, builds, push_tree, store_view, tree_stage


class Trees:
    """One derivation whose next build writes whatever tree ``build`` is given."""

    def __init__(self, store: nx.Store, tmp: Path) -> None:
        self.store = store
        self.tmp = tmp
        self.closure = nx.instantiate(tree_stage, tmp, [[]], nx.match_all())
        self.dref = self.closure.result

    def build(self, spec: TreeSpec) -> set[nx.RRef]:
        """Build ``spec``; return the realizations this build added (none if its output is
        the same as an existing realization's)."""
        push_tree(self.tmp, spec)
        before = set(nx.drefrrefs(self.dref))
        nx.realize_many(self.closure, force_rebuild=True)
        return set(nx.drefrrefs(self.dref)) - before

    def one(self, spec: TreeSpec) -> nx.RRef:
        """Build ``spec``, which must give a new realization, and return it."""
        (new,) = self.build(spec)
        return new


@pytest.fixture
def trees(store: nx.Store, tmp_path: Path) -> Trees:
    """A scripted derivation in a fresh store."""
    return Trees(store, tmp_path)


def f(path: str, text: str, exec_: bool = False) -> dict[str, object]:
    """A file entry."""
    return {"path": path, "file": text, "exec": exec_}


def test_same_tree_gives_the_same_rref(trees: Trees) -> None:
    """Rebuilding the same output adds no realization: the RRef depends on the content."""
    spec = [f("a", "hello"), f("d/b", "world")]
    assert len(trees.build(spec)) == 1
    assert trees.build(spec) == set()
    assert builds(trees.tmp / "log") == 2


def test_renaming_a_file_gives_another_rref(trees: Trees) -> None:
    """The same bytes under another name are another realization."""
    a = trees.one([f("a", "hello")])
    b = trees.one([f("b", "hello")])
    assert a != b


def test_moving_a_file_into_a_folder_gives_another_rref(trees: Trees) -> None:
    """The path counts, not only the base name."""
    trees.one([f("a", "hello")])
    assert len(trees.build([f("sub/a", "hello")])) == 1


def test_moving_bytes_between_files_gives_another_rref(trees: Trees) -> None:
    """Same concatenation, other split between two files: another realization."""
    trees.one([f("a", "hello"), f("b", "world")])
    assert len(trees.build([f("a", "hellow"), f("b", "orld")])) == 1
    assert len(trees.build([f("a", ""), f("b", "helloworld")])) == 1


def test_executable_bit_counts(trees: Trees) -> None:
    """The same file with and without the executable bit are two realizations, published
    with modes 0o444 and 0o555."""
    plain = trees.one([f("run.sh", "#!/bin/sh\n")])
    execd = trees.one([f("run.sh", "#!/bin/sh\n", exec_=True)])
    assert stat.S_IMODE(os.stat(nx.rref2path(plain) / "run.sh").st_mode) == 0o444
    assert stat.S_IMODE(os.stat(nx.rref2path(execd) / "run.sh").st_mode) == 0o555


def test_empty_folders_count(trees: Trees) -> None:
    """An empty folder is part of the output: adding one gives another realization, and
    it is published."""
    trees.one([f("a", "x")])
    (r,) = trees.build([f("a", "x"), {"path": "empty", "dir": True}])
    assert (nx.rref2path(r) / "empty").is_dir()
    assert os.listdir(nx.rref2path(r) / "empty") == []
    assert len(trees.build([f("a", "x"), {"path": "empty/deeper", "dir": True}])) == 1


def test_symlinks_are_recorded(trees: Trees) -> None:
    """A symlink is published as a symlink; its target counts; a symlink is not the same as
    a file holding the target's text."""
    r = trees.one([f("a", "x"), f("b", "x"), {"path": "l", "symlink": "a"}])
    link = nx.rref2path(r) / "l"
    assert link.is_symlink() and os.readlink(link) == "a"
    assert len(trees.build([f("a", "x"), f("b", "x"), {"path": "l", "symlink": "b"}])) == 1
    assert len(trees.build([f("a", "x"), f("b", "x"), f("l", "a")])) == 1
    dangling = trees.one([{"path": "nowhere", "symlink": "../../../../etc/passwd"}])
    assert os.readlink(nx.rref2path(dangling) / "nowhere") == "../../../../etc/passwd"


def test_manifest_lists_every_entry(trees: Trees) -> None:
    """The realization's metadata lists every path with its kind, size, executable bit
    and xxh3-128 digest, sorted by path."""
    r = trees.one(
        [
            f("a", "hello"),
            f("d/x", "", exec_=True),
            {"path": "e", "dir": True},
            {"path": "l", "symlink": "a"},
        ]
    )
    meta = json.loads((nx.rref2path(r).parent / "meta.json").read_bytes())
    entries = {e["path"]: e for e in meta["manifest"]["entries"]}
    assert [e["path"] for e in meta["manifest"]["entries"]] == sorted(entries)
    assert set(entries) == {"a", "d", "d/x", "e", "l"}
    assert entries["a"] == {
        "path": "a",
        "type": "file",
        "size": 5,
        "executable": False,
        "xxh3_128": xxhash.xxh3_128_hexdigest(b"hello"),
    }
    assert entries["d/x"]["executable"] is True
    assert entries["d"]["type"] == entries["e"]["type"] == "dir"
    assert entries["l"] == {
        "path": "l",
        "type": "symlink",
        "xxh3_128": xxhash.xxh3_128_hexdigest(b"a"),
    }


def test_realizations_of_one_context_share_a_hash_prefix(trees: Trees) -> None:
    """Realizations built in the same context share the first half of their hash."""
    rs = [trees.one([f("a", str(i))]) for i in range(3)]
    assert len({r.rhash[:16] for r in rs}) == 1
    assert len({r.rhash for r in rs}) == 3


def test_fifo_in_output_is_refused_and_store_unchanged(trees: Trees, store: nx.Store) -> None:
    """A FIFO in a build's output raises BuildError; nothing appears in the store."""
    trees.one([f("a", "x")])
    before_view, before_rrefs = store_view(store), nx.allrrefs()
    push_tree(trees.tmp, [f("b", "y"), {"path": "pipe", "fifo": True}])
    with pytest.raises(nx.BuildError) as e:
        nx.realize_many(trees.closure, force_rebuild=True)
    assert e.value.dref == trees.dref
    assert "pipe" in str(e.value)
    assert nx.allrrefs() == before_rrefs
    assert store_view(store) == before_view


def test_non_utf8_file_name_is_refused(trees: Trees, store: nx.Store) -> None:
    """A file name that is not UTF-8 cannot be written in the manifest: BuildError, and
    nothing is published."""
    before = store_view(store)
    push_tree(trees.tmp, [f(os.fsdecode(b"bad\xffname"), "x")])
    with pytest.raises(nx.BuildError):
        nx.realize_many(trees.closure, force_rebuild=True)
    assert store_view(store) == before


def test_big_files_are_hashed_whole(trees: Trees) -> None:
    """A file larger than the hashing chunk gets the xxh3-128 of all its bytes."""
    text = "0123456789abcdef" * (hashing.CHUNK // 16 * 2 + 3)
    assert len(text) > hashing.CHUNK
    r = trees.one([f("big.txt", text)])
    meta = json.loads((nx.rref2path(r).parent / "meta.json").read_bytes())
    (entry,) = meta["manifest"]["entries"]
    assert entry["size"] == len(text)
    assert entry["xxh3_128"] == xxhash.xxh3_128_hexdigest(text.encode())
    assert entry["xxh3_128"] == hashing.file_hash(nx.rref2path(r) / "big.txt")
