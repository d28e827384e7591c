"""Opening a store: creating it, checking its format record, and the process default store
that functions without ``store=`` use.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from nixlet.store import durability, staging, temproots
from nixlet.store.layout import CANONICAL_MTIME, FORMAT, FORMAT_BYTES, LOCKS, TMP, default_location
from nixlet.values.errors import StoreError, UsageError
from nixlet.values.model import Store

#: What a function's ``store=`` accepts: a Store, a path, or None for the default store.
StoreArg = Store | str | os.PathLike[str] | None

_default: Store | None = None
_opened: dict[Path, Store] = {}


# ---------------------------------------------------------------- opening a store


def store_initialize(path: str | os.PathLike[str] | None = None) -> Store:
    """Create the store folder if missing (idempotent), check its format file, and make it
    this process's default store.

    Args:
        path: the store folder. Default: ``$NIXLET_STORE``, else
            ``$XDG_DATA_HOME/nixlet/store`` (``~/.local/share/nixlet/store``).

    Raises:
        UsageError: ``path`` is empty (``""`` would make the current folder a store) or not
            a path.
        StoreError: the folder cannot be made (a parent is a file, no permission, a
            read-only filesystem), holds something that is not a nixlet store of a known
            format (it is left untouched), or its ``.tmp`` or ``.locks`` is not a folder.
            ``path`` names what is at fault.
    """
    global _default
    root = _root(path, "path") if path is not None else Path(os.path.abspath(default_location()))
    _make_folder(root)
    if not os.path.exists(root / FORMAT_FILE):
        _refuse_foreign(root)
        _check_work_folders(root, new=True)
        _write_format(root)
        # A store wiped and made again under this process: what was cached of the old one
        # (its staging root, its descriptors) is stale.
        forget(root)
    store = open_store(root)
    _check_work_folders(root)
    _default = store
    return store


#: The format record's name, in the store's root.
FORMAT_FILE = "format"


def _root(path: object, argument: str) -> Path:
    """The absolute folder a ``path`` or ``store`` argument names.

    Raises:
        UsageError: it is empty (which would mean the current folder, silently), not a
            str or os.PathLike of a str, or holds a NUL character.
    """
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not isinstance(text, str) or text == "" or "\0" in text:
        shown = "an empty path" if text == "" else repr(path)
        raise UsageError(
            f"{argument} must name a store folder, got {shown}; call store_initialize() "
            f"without a path for the default store ({default_location()})",
            argument=argument,
        )
    return Path(os.path.abspath(Path(text).expanduser()))


def _make_folder(root: Path) -> None:
    """Create the store's folder and its parents, if missing.

    Raises:
        StoreError: it cannot be made; the message names the path at fault.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StoreError(
            f"{root} exists and is not a folder; choose another store path", path=root
        ) from None
    except NotADirectoryError:
        blocker = _first_file(root)
        raise StoreError(
            f"cannot make the store {root}: {blocker} is a file, not a folder; choose another "
            "store path",
            path=blocker,
        ) from None
    except OSError as e:
        raise StoreError(
            f"cannot make the store folder {root}: {e.strerror or e} ({e.filename or root}); "
            "choose a folder you can write (or set NIXLET_STORE)",
            path=root,
        ) from None


def _first_file(path: Path) -> Path:
    """The nearest ancestor of ``path`` that exists and is not a folder (``path`` itself
    if none is found)."""
    for parent in path.parents:
        if os.path.lexists(parent) and not os.path.isdir(parent):
            return parent
    return path


def _refuse_foreign(root: Path) -> None:
    """Refuse a folder without a format record that holds something: it is not a store,
    and nixlet writes nothing into it.

    Raises:
        StoreError: it holds something, or cannot be listed.
    """
    try:
        names = os.listdir(root)
    except OSError as e:
        raise StoreError(
            f"cannot list {root}: {e.strerror or e}; choose a folder you can read and write",
            path=root,
        ) from None
    leftovers = [n for n in names if n not in (TMP, LOCKS)]
    if leftovers:
        raise StoreError(
            f"{root} is not empty and holds no nixlet 'format' file, so it is not a "
            f"nixlet store (found {sorted(leftovers)[:5]}); it was left untouched. "
            "Choose an empty or new folder.",
            path=root,
        )


#: What each work folder holds, for the message that asks to repair it.
_WORK_FOLDERS = {TMP: "staging area (builds in progress)", LOCKS: "build locks"}


def _check_work_folders(root: Path, *, new: bool = False) -> None:
    """Make ``.tmp`` and ``.locks`` where missing; refuse a store where either is not a
    folder. In an existing store, one that cannot be made (a read-only store) is left
    missing: reading works without them, and a build says why it cannot start.

    Raises:
        StoreError: ``.tmp`` or ``.locks`` exists and is not a folder, or, for a ``new``
            store, cannot be made.
    """
    for name, purpose in _WORK_FOLDERS.items():
        path = root / name
        try:
            path.mkdir(exist_ok=True)
        except FileExistsError:
            raise StoreError(
                f"{path} is not a folder: nixlet keeps the store's {purpose} there. It holds "
                "nothing of the store's objects: remove it, and call store_initialize again",
                path=path,
            ) from None
        except OSError as e:
            if new:
                raise StoreError(
                    f"cannot make a store in {root}: cannot make {path}: {e.strerror or e}; "
                    "choose a folder you can write",
                    path=root,
                ) from None


def _write_format(root: Path) -> None:
    """Write the format record: staged in ``.tmp``, then renamed into place.

    Raises:
        StoreError: it cannot be written (no permission, a full disk).
    """
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=root / TMP)
        with os.fdopen(fd, "wb") as f:
            f.write(FORMAT_BYTES)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o444)
        os.utime(tmp, (CANONICAL_MTIME, CANONICAL_MTIME))  # rsync then leaves it alone
        # A concurrent initializer may win the race; both wrote the same bytes.
        os.replace(tmp, root / FORMAT_FILE)
        durability.fsync_path(root)
    except OSError as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise StoreError(
            f"cannot make a store in {root}: {e.strerror or e} ({e.filename or root}); "
            "choose a folder you can write, on a filesystem with free space",
            path=root,
        ) from None


def open_store(path: str | os.PathLike[str]) -> Store:
    """Open an existing store, checking its format record once per process.

    Raises:
        UsageError: ``path`` is empty or not a path.
        StoreError: there is no store at ``path``, or one of an unknown format.
    """
    root = _root(path, "store")
    cached = _opened.get(root)
    if cached is not None:
        return cached
    fmt = root / FORMAT_FILE
    try:
        data = fmt.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise StoreError(
            f"no nixlet store at {root} (no 'format' file); create one with "
            f"nixlet.store_initialize({str(root)!r})",
            path=root,
        ) from None
    except OSError as e:
        raise StoreError(
            f"cannot read {fmt}: {e.strerror or e}; is the store readable by you?", path=root
        ) from None
    try:
        found = json.loads(data)
    except ValueError:
        found = None
    if found != FORMAT:
        raise StoreError(
            f"{root} holds a store of an unknown format {data[:200]!r}; this nixlet reads "
            f"format {FORMAT['version']} only. Use a matching nixlet or another folder.",
            path=root,
        )
    for sub in (TMP, LOCKS):
        # Best effort: reading a store needs neither (a read-only store, a broken .tmp);
        # staging and locks make them again where they can, and say why where they cannot.
        with contextlib.suppress(OSError):
            (root / sub).mkdir(exist_ok=True)
    store = Store(root)
    _opened[root] = store
    return store


def resolve(store: Store | str | os.PathLike[str] | None) -> Store:
    """The store a function should use: the given one, else the process default (set by
    ``store_initialize``), else ``$NIXLET_STORE``.

    Raises:
        UsageError: ``store`` is an empty path, or not a store or a path.
        StoreError: no store is given and none is chosen, or the one named cannot be opened.
    """
    if isinstance(store, Store):
        return _opened.get(store.root) or open_store(store.root)
    if store is not None:
        return open_store(store)
    if _default is not None:
        return _default
    env = os.environ.get("NIXLET_STORE")
    if env:
        return open_store(env)
    raise StoreError(
        "no store chosen: call nixlet.store_initialize() to use the default store, "
        f"{default_location()} (made if missing), or set NIXLET_STORE to a store's folder",
        path=None,
    )


def forget(root: Path) -> None:
    """Drop what this process cached of the store at ``root``."""
    store = Store(root)
    _opened.pop(root, None)
    staging.forget(store)
    durability.forget(store)
    temproots.forget(store)


def reset_default() -> None:
    """Forget the process default store (tests use this)."""
    global _default
    _default = None
