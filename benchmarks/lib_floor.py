"""The floor: plain Python doing the same disk work as a store, with nothing on top.

Every "publish" is the crash-safe minimum a content-addressed store has to do for one output:
make a temporary folder, write the file(s), fsync each file, rename the folder into place and
fsync the parent folder. "Instantiate" is the in-memory minimum: hash each stage's canonical
JSON config (which embeds its dependencies' hashes). A "cached realize" stats each expected
output once. See benchmarks/README.md for the table of floors.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Mapping
from pathlib import Path

from common import (
    GC_STORE_REFS,
    OUT_FILE,
    SCORE_FILE,
    file_header,
    fill_in_child,
    remove_tree,
    timed,
)

Metrics = dict[str, float]


def _config_hash(config: dict[str, object]) -> str:
    """sha256 of the canonical JSON of ``config``: the floor of deriving a content address."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, *chunks: bytes) -> None:
    """Write ``chunks`` to a new file and fsync it."""
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def _publish(store: Path, name: str, files: Mapping[str, tuple[bytes, ...]]) -> Path:
    """Create ``store/name`` atomically holding ``files``: mkdir tmp, write+fsync, rename, fsync."""
    tmp = store / f".tmp-{name}"
    tmp.mkdir()
    for fname, chunks in files.items():
        _write_synced(tmp / fname, *chunks)
    final = store / name
    os.rename(tmp, final)
    _fsync_dir(store)
    return final


def _chain_configs(n: int) -> list[str]:
    """Hash ``n`` chained configs (each embeds the previous hash); return the hashes."""
    hashes: list[str] = []
    prev: str | None = None
    for i in range(n):
        cfg: dict[str, object] = {"name": f"s{i}", "i": i}
        if prev is not None:
            cfg["prev"] = prev
        prev = _config_hash(cfg)
        hashes.append(prev)
    return hashes


def _publish_chain(store: Path, hashes: list[str]) -> None:
    for i, h in enumerate(hashes):
        _publish(store, h, {OUT_FILE: (str(i).encode(),)})


def _stat_all(store: Path, hashes: list[str]) -> None:
    for h in hashes:
        os.stat(store / h / OUT_FILE)


def chain(root: Path, n: int) -> Metrics:
    """Floor of workload 1: hash the chain, publish ``n`` one-file folders, stat them back."""
    store = root / "store"
    store.mkdir()
    t_inst, hashes = timed(lambda: _chain_configs(n))
    t_real, _ = timed(lambda: _publish_chain(store, hashes))
    t_cached, _ = timed(lambda: _stat_all(store, hashes))
    assert (store / hashes[-1] / OUT_FILE).read_text() == str(n - 1)
    return {"instantiate": t_inst, "realize": t_real, "cached": t_cached}


def _fanin_configs(n: int) -> tuple[list[str], str]:
    leaves = [_config_hash({"name": f"leaf{i}", "i": i}) for i in range(n)]
    return leaves, _config_hash({"name": "root", "deps": leaves})


def _publish_fanin(store: Path, leaves: list[str], root_hash: str) -> None:
    for i, h in enumerate(leaves):
        _publish(store, h, {OUT_FILE: (str(i).encode(),)})
    total = sum(int((store / h / OUT_FILE).read_text()) for h in leaves)
    _publish(store, root_hash, {OUT_FILE: (str(total).encode(),)})


def fanin(root: Path, n: int) -> Metrics:
    """Floor of workload 2: ``n`` leaf publishes, then a root that reads all leaves."""
    store = root / "store"
    store.mkdir()
    t_inst, (leaves, root_hash) = timed(lambda: _fanin_configs(n))
    t_real, _ = timed(lambda: _publish_fanin(store, leaves, root_hash))
    assert (store / root_hash / OUT_FILE).read_text() == str(n * (n - 1) // 2)
    return {"instantiate": t_inst, "realize": t_real}


def _publish_scores(store: Path, k: int) -> None:
    for j in range(k):
        _publish(store, f"r{j:05d}", {SCORE_FILE: (repr(random.random()).encode(),)})


def _best(store: Path) -> Path:
    runs = [store / name for name in os.listdir(store)]
    return max(runs, key=lambda p: float((p / SCORE_FILE).read_text()))


def nondet(root: Path, k: int) -> Metrics:
    """Floor of workload 3: ``k`` publishes of a random score, then pick the best by reading all."""
    store = root / "store"
    store.mkdir()
    t_forced, _ = timed(lambda: _publish_scores(store, k))
    t_best, best = timed(lambda: _best(store))
    assert len(os.listdir(store)) == k and best.exists()
    return {"forced": t_forced, "best": t_best}


def big(root: Path, nfiles: int, payload: bytes) -> Metrics:
    """Floor of workload 4: write+fsync ``nfiles`` header+payload files, rename the folder."""
    store = root / "store"
    store.mkdir()
    files = {f"part{k:02d}.bin": (file_header(k), payload) for k in range(nfiles)}
    t_real, out = timed(lambda: _publish(store, "big", files))
    assert len(os.listdir(out)) == nfiles
    return {"realize": t_real}


def sync(root: Path, n: int) -> Metrics:
    """Floor of workload 5: a plain ``rsync -a`` of the same source store's folder, locally
    and over ssh on 127.0.0.1 (nothing checked, nothing staged, nothing synced to disk).
    The source is built with nixlet, untimed."""
    import subprocess

    from sync_setup import loopback_sshd, source_store

    src = source_store(root, n)
    t_local, _ = timed(lambda: subprocess.run(
        ["rsync", "-a", f"{src}/", f"{root / 'local'}/"], check=True))
    with loopback_sshd(root) as sshd:
        t_ssh, _ = timed(lambda: subprocess.run(
            ["rsync", "-a", "-e", " ".join(sshd.ssh), f"{src}/",
             sshd.location(f"{root / 'far'}/")], check=True))
    assert len(os.listdir(root / "far")) == len(os.listdir(src))
    return {"local": t_local, "ssh": t_ssh}


# ---------------------------------------------------------------- gc workloads


def plan_gc(root: Path, n: int) -> None:
    """Untimed, in a child: fill the store as nixlet's gc workload does (nixlet's own
    store: the floor removes the same folders), and write the folders nixlet's gc would
    remove to ``root/doomed.json`` (whole derivation folders, or single realizations)."""
    import json

    import nixlet as nx

    if n == GC_STORE_REFS:
        fill_in_child("lib_nixlet", "fill_gc", root, n)
    else:
        fill_in_child("lib_nixlet", "fill_leaves", root, n)
    store = nx.store_initialize(root / "store")
    report = nx.gc(dry_run=True)
    whole = set(report.drefs)
    doomed = [str(nx.dref2path(d, store=store)) for d in whole]
    doomed += [str(nx.rref2path(r, store=store).parent) for r in report.rrefs
               if r.dref not in whole]
    (root / "doomed.json").write_text(json.dumps(doomed))


def _listing(store: Path) -> int:
    """Every derivation folder, and every realization folder in each: names only."""
    count = 0
    for name in os.listdir(store):
        if len(name) > 33 and name[32] == "-":
            count += 1 + sum(len(n) == 32 for n in os.listdir(store / name))
    return count


def _du(store: Path) -> int:
    """The bytes of every file under the store's derivation folders (lstat each)."""
    total = 0
    for name in os.listdir(store):
        if len(name) > 33 and name[32] == "-":
            for folder, _dirs, files in os.walk(store / name):
                total += sum(os.lstat(os.path.join(folder, f)).st_size for f in files)
    return total


def _remove_all(paths: list[str]) -> None:
    for path in paths:
        remove_tree(Path(path))


def gcstore(root: Path, n: int) -> Metrics:
    """Floor of workload 5: list the folders, walk them for sizes, ``rm -rf`` what
    nixlet's gc removes (found by an untimed dry run in a child)."""
    import json

    fill_in_child("lib_floor", "plan_gc", root, n)
    store = root / "store"
    doomed = json.loads((root / "doomed.json").read_text())
    t_list, count = timed(lambda: _listing(store))
    t_du, size = timed(lambda: _du(store))
    t_gc, _ = timed(lambda: _remove_all(doomed))
    assert count > 0 and size > 0 and not any(os.path.exists(p) for p in doomed)
    return {"list": t_list, "du": t_du, "gc": t_gc}


def gc10k(root: Path, n: int) -> Metrics:
    """Floor of workload 6: walk for sizes, then ``rm -rf`` every derivation folder."""
    import json

    fill_in_child("lib_floor", "plan_gc", root, n)
    store = root / "store"
    doomed = json.loads((root / "doomed.json").read_text())
    t_du, _ = timed(lambda: _du(store))
    t_gc, _ = timed(lambda: _remove_all(doomed))
    assert len(doomed) == n + 1
    return {"du": t_du, "gc": t_gc}
