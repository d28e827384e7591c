"""The sync workload's setup, shared by the nixlet and floor adapters (untimed): a source
store holding a chain of N realizations, and a throw-away sshd on 127.0.0.1 (tests/sshd.py,
the one the test suite starts) for the copies over ssh.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from sshd import SshServer  # noqa: E402 (found through the path set just above)


def source_store(root: Path, n: int) -> Path:
    """Build the chain of ``n`` stages of the chain workload into ``root/src``, in a child
    process (so the timed process starts with no nixlet state of its own)."""
    src = root / "src"
    code = (
        "import sys, lib_nixlet as L, nixlet as nx; s = nx.store_initialize(sys.argv[1]); "
        "nx.realize(nx.instantiate(L._chain, int(sys.argv[2]), store=s), store=s)"
    )
    here = str(Path(__file__).resolve().parent)
    subprocess.run([sys.executable, "-c", code, str(src), str(n)], check=True, cwd=here)
    os.sync()  # the copy starts from a quiet disk
    return src


@contextmanager
def loopback_sshd(root: Path) -> Iterator[SshServer]:
    """A real sshd on 127.0.0.1, stopped (by its pid) when the block ends."""
    server = SshServer.start(root / "sshd")
    try:
        yield server
    finally:
        server.stop()
