"""Stages, worker entry points and child processes for the tests of the plan / build one
step / publish protocol (engine/test_plan.py, engine/test_step.py,
store/test_publish_protocol.py).

Everything here is importable by name (pytest puts ``tests/`` on ``sys.path``, and
``campaign_stages.child_env`` puts it on a child's ``PYTHONPATH``), so it crosses process
boundaries: a ``BuildStep`` whose realizer wraps ``work`` pickles, ``build_pickled`` runs in
a spawn or forkserver worker, and ``main`` is the entry point of a child process that
drives a plan of its own::

    python -c "from protocol_stages import main; main()" '{"store": ..., "stage": ...}'

Builds are counted in a log file *outside* the store (the config's ``log``): each build
appends ``<event> <name> <pid>`` (``build`` when it starts, ``done`` when it ends) with one
``write`` in append mode, so lines of concurrent builds never mix.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nixlet as nx
from campaign_stages import HANG_GUARD, child_env
from nixlet.store import locks, opening, records

# ================================================================ build functions


def _log(config: dict[str, Any], event: str) -> None:
    """Append one line to the config's build log, if it has one."""
    log = config.get("log")
    if log:
        line = f"{event} {config['name']} {os.getpid()}\n"
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def _wait_for_file(path: str, what: str) -> None:
    """Sleep until ``path`` exists (the hang guard fails a build that waits too long)."""
    deadline = time.monotonic() + HANG_GUARD
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {path} never appeared")
        time.sleep(0.002)


def work(b: nx.Build) -> None:
    """Write ``value.txt`` (the config's ``value``) and ``inputs.json`` (the chosen RRefs of
    every dependency), logging the build. Config keys that shape it: ``random`` adds random
    bytes (a non-deterministic stage); ``hold`` names a file the build waits for before
    finishing (a slow build whose end the test decides); ``fail`` makes it raise."""
    c = nx.build_config(b).to_dict()
    _log(c, "build")
    out = nx.build_outpath(b)
    (out / "value.txt").write_text(json.dumps(c.get("value")))
    inputs = {str(d): [str(r) for r in rs] for d, rs in sorted(nx.build_context(b).items())}
    (out / "inputs.json").write_text(json.dumps(inputs, sort_keys=True))
    if c.get("random"):
        (out / "random.bin").write_bytes(os.urandom(16))
    if c.get("hold"):
        _wait_for_file(c["hold"], f"hold of {b.dref}")
    if c.get("fail"):
        raise RuntimeError(f"{c['name']} fails on purpose")
    _log(c, "done")


def node(
    m: nx.Manager, name: str, *deps: nx.DRef, matcher: nx.Matcher | None = None, **extra: Any
) -> nx.DRef:
    """Declare a derivation built by ``work``, depending on ``deps`` (config keys ``dep0``,
    ``dep1``, ...), with ``match_only`` unless told."""
    config: dict[str, Any] = {"name": name, **extra}
    config.update({f"dep{i}": d for i, d in enumerate(deps)})
    return nx.mkdrv(m, config, matcher or nx.match_only(), nx.build_wrapper(work))


def builds(log: Path) -> Counter[str]:
    """How many builds of each stage name started, from the log."""
    if not log.exists():
        return Counter()
    lines = log.read_text().splitlines()
    return Counter(line.split()[1] for line in lines if line.startswith("build "))


def finished(log: Path) -> set[str]:
    """The names of the stages whose build finished, from the log."""
    if not log.exists():
        return set()
    return {line.split()[1] for line in log.read_text().splitlines() if line.startswith("done ")}


# ================================================================ stages (shared with children)


def branches(m: nx.Manager, log: str, hold: str | None = None) -> nx.DRef:
    """Two independent branches under one target: ``paused`` (held by ``hold``, if given)
    and the chain ``left0 -> left1``; ``top`` depends on ``paused`` and ``left1``."""
    paused = node(m, "paused", log=log, hold=hold, value=1)
    left = node(m, "left1", node(m, "left0", log=log, value=2), log=log, value=3)
    return node(m, "top", paused, left, log=log, value=4)


def overlap(m: nx.Manager, log: str, side: str, hold: str | None = None) -> nx.DRef:
    """A non-deterministic ``shared`` stage under ``match_some(1)`` (held by ``hold``, if
    given) and a ``side`` stage on top of it: two sides are two overlapping closures."""
    shared = node(m, "shared", log=log, hold=hold, random=True, matcher=nx.match_some(1))
    return node(m, f"side-{side}", shared, log=log, random=True, matcher=nx.match_some(1))


STAGES = {"branches": branches, "overlap": overlap}

# ================================================================ child processes


def drive(closure: nx.Closure) -> list[nx.RRef]:
    """Realize ``closure`` the way the protocol's documentation shows: plan, build each
    ready step in this process, publish it, record it."""
    with nx.plan(closure) as p:
        while not p.done:
            for step in p.ready():
                p.record(step, nx.publish(nx.build_step(step)))
        return p.result()


def main() -> None:
    """A child: instantiate ``spec["stage"]`` in ``spec["store"]``, realize it with
    ``realize`` (``"driver": "realize"``) or with the protocol (``"plan"``, the default),
    optionally after a file barrier, and print a JSON line of what it got."""
    spec = json.loads(sys.argv[1])
    store = nx.store_initialize(spec["store"])
    closure = nx.instantiate(STAGES[spec["stage"]], store=store, **spec.get("kwargs", {}))
    barrier = spec.get("barrier")
    if barrier:
        Path(barrier, f"ready.{os.getpid()}").touch()
        _wait_for_file(os.path.join(barrier, "go"), "barrier")
    if spec.get("driver") == "realize":
        rrefs = nx.realize_many(closure)
    else:
        rrefs = drive(closure)
    print(json.dumps({"pid": os.getpid(), "rrefs": [str(r) for r in rrefs]}), flush=True)


def child_command(spec: dict[str, Any]) -> list[str]:
    """The command line of a ``main`` child."""
    return [sys.executable, "-c", "from protocol_stages import main; main()", json.dumps(spec)]


def start_child(spec: dict[str, Any]) -> subprocess.Popen[str]:
    """Start a ``main`` child (finish it with ``campaign_stages.finish``)."""
    return subprocess.Popen(
        child_command(spec),
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def while_alive(
    procs: list[subprocess.Popen[str]], predicate: Callable[[], bool]
) -> Callable[[], bool]:
    """``predicate`` for ``campaign_stages.wait_for``, failing at once when a child has
    ended (it was to be still running), rather than waiting out the hang guard."""

    def check() -> bool:
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"child {proc.pid} ended early: {proc.communicate()}")
        return predicate()

    return check


_LOCK_PROBE = """
import sys
from nixlet import DRef
from nixlet.store import locks, opening
store = opening.open_store(sys.argv[1])
with locks.derivation_lock(store, DRef.parse(sys.argv[2]), wait=False) as held:
    print("free" if held else "held", flush=True)
"""


def lock_is_free_elsewhere(store: nx.Store, dref: nx.DRef) -> bool:
    """Whether another process can take ``dref``'s build lock at once (it tries without
    waiting, in a fresh interpreter)."""
    done = subprocess.run(
        [sys.executable, "-c", _LOCK_PROBE, str(store.root), str(dref)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=True,
    )
    return done.stdout.strip() == "free"


# ================================================================ pool workers


def _facts(module: str | None) -> dict[str, Any]:
    """What a worker holds of a planning process's state before it sees a step."""
    return {
        "pid": os.getpid(),
        "module_loaded": module is not None and module in sys.modules,
        "default_store": opening._default is not None,
        "configs_cached": len(records._configs),
        "locks_held": len(locks._held_locks),
    }


def build_pickled(blob: bytes, module: str | None = None) -> tuple[nx.Staged, dict[str, Any]]:
    """A pool worker: note what it knew before (``_facts``: was the stage's ``module``
    loaded, is there a default store, cached configs), then unpickle the step and build it.
    The ``Staged`` goes back to the planner (the pool pickles it)."""
    facts = _facts(module)
    step = pickle.loads(blob)
    return nx.build_step(step), facts


def build_and_publish(blob: bytes, module: str | None = None) -> tuple[list[str], dict[str, Any]]:
    """A pool worker that builds the pickled step and publishes it itself; returns the
    RRefs as text and what it knew before (``_facts``)."""
    facts = _facts(module)
    step = pickle.loads(blob)
    return [str(r) for r in nx.publish(nx.build_step(step))], facts


def build_or_error(step: nx.BuildStep) -> nx.Staged | nx.BuildError:
    """A pool worker that builds ``step`` and returns its BuildError instead of raising it
    (the error crosses the process boundary as a value)."""
    try:
        return nx.build_step(step)
    except nx.BuildError as e:
        return e
