"""Running part of a test as an ordinary user. The suite runs as root, and root ignores
file modes: a read-only store, an unwritable folder or an unreadable record only bind for
another user. ``as_nobody`` runs a function in a forked child that drops to the user
``nobody`` (uid and gid 65534) and fails the test with the child's traceback.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: nobody's uid and gid (nogroup) on Debian.
NOBODY = 65534


@contextmanager
def public_folder(owner: int = 0) -> Iterator[Path]:
    """A fresh folder under /tmp that every user can reach (pytest's own temporary folders
    are private to root), owned by ``owner`` (root by default: nobody can read, not write),
    removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="nixlet-user-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        os.chown(folder, owner, owner)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def as_nobody(scenario: Callable[[], None]) -> None:
    """Run ``scenario()`` as the user nobody (in a forked child when this process is root,
    else here); its assertions fail the test, with the child's traceback."""
    if os.geteuid() != 0:
        scenario()
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            scenario()
        except BaseException:
            os.write(write, traceback.format_exc().encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        report = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report
