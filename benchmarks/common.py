"""Helpers shared by the benchmark driver, the worker and the three adapters.

Nothing here imports nixlet or pylightnix: the adapters do, each in its own subprocess.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: Name of the one file a chain / fan-in stage writes.
OUT_FILE = "out.txt"
#: Name of the file the non-deterministic stage writes and ``match_best`` ranks.
SCORE_FILE = "score.txt"
#: Length of the per-file header that makes each big file's bytes distinct.
HEADER_BYTES = 64


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Run ``fn()`` once and return ``(seconds, result)`` measured with ``perf_counter``."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@dataclass(frozen=True)
class TreeSize:
    """A ``du``-like size: the sum of regular files' sizes and their count."""

    bytes: int
    files: int


def tree_size(root: Path) -> TreeSize:
    """Sum ``st_size`` of every regular file under ``root`` (symlinks are not followed)."""
    total = count = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
                count += 1
    return TreeSize(total, count)


def remove_tree(root: Path) -> None:
    """Remove ``root`` even when a library left read-only files and folders in it."""

    def _make_writable(func: Callable[[str], object], path: str, _exc: object) -> None:
        parent = os.path.dirname(path)
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        func(path)

    if root.exists():
        shutil.rmtree(root, onerror=_make_writable)


@contextmanager
def fresh_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A brand-new temporary folder under ``parent``, removed on exit."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        remove_tree(path)


def make_payload(file_bytes: int, seed: int = 20240601) -> bytes:
    """Pseudo-random bytes for the big-write workload, generated before any timer starts."""
    import random

    return random.Random(seed).randbytes(file_bytes)


def warm_page_cache(parent: Path, payload: bytes, copies: int) -> None:
    """Write ``copies`` of ``payload`` to a scratch file under ``parent``, then delete it.

    On this machine the first gigabyte of file pages a process fills after the machine
    was idle a moment takes 2-3.5 s, and the next one 0.3 s (the same for plain Python,
    nixlet and pylightnix, with or without fsync; see README.md). Without this, the big
    write measured whoever came first after a pause, not the library. Untimed.
    """
    import tempfile

    fd, name = tempfile.mkstemp(prefix="nixlet-bench-warm-", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for _ in range(copies):
                f.write(payload)
    finally:
        os.unlink(name)


def file_header(index: int) -> bytes:
    """The small header prepended to the shared payload so every big file differs."""
    return f"nixlet-bench file {index:04d}\n".encode().ljust(HEADER_BYTES, b".")


def same_filesystem(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` live on the same device (so renames between them are atomic)."""
    return os.stat(a).st_dev == os.stat(b).st_dev


#: The store of the gc workloads: a chain, a fan-in and repeated non-deterministic builds,
#: about 3,400 refs in all (derivations and realizations): 2 x 300 + 2 x 1201 + 1 + 400.
GC_CHAIN, GC_FANIN, GC_NONDET = 300, 1200, 400
#: The N of that workload in the table: how many refs its store holds.
GC_STORE_REFS = 2 * GC_CHAIN + 2 * (GC_FANIN + 1) + 1 + GC_NONDET


def fill_in_child(module: str, function: str, root: Path, n: int) -> None:
    """Run ``module.function(root, n)`` in a fresh Python process (untimed): the store the
    gc workloads measure is filled by an earlier process, as a real store is, so that no
    cache or temporary root of the filling process is left in the measuring one."""
    import subprocess
    import sys

    code = (f"import sys; from pathlib import Path; import {module}; "
            f"{module}.{function}(Path(sys.argv[1]), {n})")
    subprocess.run([sys.executable, "-c", code, str(root)], check=True,
                   cwd=os.path.dirname(os.path.abspath(__file__)))
