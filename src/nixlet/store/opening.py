"""Opening a store: creating it, checking its format record, and the process default store
that functions without ``store=`` use.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from nixlet.store import durability, staging
from nixlet.store.layout import CANONICAL_MTIME, FORMAT, FORMAT_BYTES, LOCKS, TMP, default_location
from nixlet.values.errors import StoreError
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
        StoreError: the folder holds something that is not a nixlet store of a known
            format; it is left untouched.
    """
    global _default
    root = Path(path).expanduser() if path is not None else default_location()
    root = Path(os.path.abspath(root))
    if root.exists() and not root.is_dir():
        raise StoreError(f"{root} exists and is not a folder; choose another store path", path=root)
    root.mkdir(parents=True, exist_ok=True)
    fmt = root / "format"
    if not fmt.exists():
        leftovers = [n for n in os.listdir(root) if n not in (TMP, LOCKS)]
        if leftovers:
            raise StoreError(
                f"{root} is not empty and holds no nixlet 'format' file, so it is not a "
                f"nixlet store (found {sorted(leftovers)[:5]}); it was left untouched. "
                "Choose an empty or new folder.",
                path=root,
            )
        _write_format(root)
        # A store wiped and made again under this process: what was cached of the old one
        # (its staging root, its descriptors) is stale.
        forget(root)
    store = open_store(root)
    _default = store
    return store


def _write_format(root: Path) -> None:
    for sub in (TMP, LOCKS):
        (root / sub).mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root / TMP)
    with os.fdopen(fd, "wb") as f:
        f.write(FORMAT_BYTES)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o444)
    os.utime(tmp, (CANONICAL_MTIME, CANONICAL_MTIME))  # rsync then leaves it alone
    # A concurrent initializer may win the race; both wrote the same bytes.
    os.replace(tmp, root / "format")
    durability.fsync_path(root)


def open_store(path: str | os.PathLike[str]) -> Store:
    """Open an existing store, checking its format record once per process."""
    root = Path(os.path.abspath(Path(path).expanduser()))
    cached = _opened.get(root)
    if cached is not None:
        return cached
    fmt = root / "format"
    try:
        data = fmt.read_bytes()
    except FileNotFoundError:
        raise StoreError(
            f"no nixlet store at {root} (no 'format' file); create one with store_initialize()",
            path=root,
        ) from None
    except OSError as e:
        raise StoreError(f"cannot read {fmt}: {e}", path=root) from None
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
        (root / sub).mkdir(exist_ok=True)
    store = Store(root)
    _opened[root] = store
    return store


def resolve(store: Store | str | os.PathLike[str] | None) -> Store:
    """The store a function should use: the given one, else the process default (set by
    ``store_initialize``), else ``$NIXLET_STORE``."""
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
        "no store: call store_initialize(path) or set NIXLET_STORE, or pass store=",
        path=None,
    )


def forget(root: Path) -> None:
    """Drop what this process cached of the store at ``root``."""
    store = Store(root)
    _opened.pop(root, None)
    staging.forget(store)
    durability.forget(store)


def reset_default() -> None:
    """Forget the process default store (tests use this)."""
    global _default
    _default = None
