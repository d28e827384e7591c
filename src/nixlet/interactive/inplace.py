"""The in-place convenience layer for notebooks and quick scripts: one process-wide
manager, so stages can be instantiated one cell at a time, as in the pylightnix quick start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from nixlet.engine.instantiate import Manager, closure_of
from nixlet.engine.plan import ForceRebuild
from nixlet.engine.realize import realize
from nixlet.store import opening as store_mod
from nixlet.store.opening import StoreArg
from nixlet.values.refs import DRef, RRef

_managers: dict[object, Manager] = {}
_lock = threading.Lock()


def _manager(store: StoreArg) -> Manager:
    resolved = store_mod.resolve(store)
    with _lock:
        m = _managers.get(resolved.root)
        if m is None:
            m = _managers[resolved.root] = Manager(resolved)
        return m


def instantiate_inplace(
    stage: Callable[..., DRef], *args: Any, store: StoreArg = None, **kwargs: Any
) -> DRef:
    """Run ``stage(m, *args, **kwargs)`` with the process-wide manager of the store and
    return its DRef; derivations accumulate across calls, so a later stage may depend on
    an earlier one's DRef."""
    m = _manager(store)
    return closure_of(m, stage(m, *args, **kwargs)).result


def realize_inplace(
    dref: DRef | str, force_rebuild: ForceRebuild = (), *, store: StoreArg = None
) -> RRef:
    """Realize a DRef declared with ``instantiate_inplace``."""
    m = _manager(store)
    return realize(closure_of(m, DRef.parse(dref)), force_rebuild, store=m.store)
