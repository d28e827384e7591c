"""Two Linux system calls that Python's ``os`` module lacks, reached through the C library:
``syncfs`` (flush one filesystem) and ``sync_file_range`` (start a file's write-out). Where
the C library has neither (macOS, the BSDs), callers fall back to ``fsync``.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any


def _libc_function(name: str, *argtypes: Any) -> Any:
    """A C library function with its argument types, or None where it does not exist."""
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    return fn


_syncfs = _libc_function("syncfs", ctypes.c_int)
_sync_file_range = _libc_function(
    "sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint
)
_SYNC_FILE_RANGE_WRITE = 2

#: Whether ``syncfs`` exists here.
HAVE_SYNCFS = _syncfs is not None


def syncfs(fd: int) -> None:
    """Write out everything dirty on the filesystem holding ``fd`` and wait for it (one
    journal commit for any number of files and folders).

    Raises:
        OSError: the flush failed, or ``syncfs`` does not exist here (see ``HAVE_SYNCFS``).
    """
    if _syncfs is None:
        raise OSError(0, "syncfs is not available on this system")
    if _syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs failed: {os.strerror(err)}")


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file's dirty pages out, without waiting. Only a
    hint: it changes nothing in the file, and errors are left to the fsync that follows."""
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
