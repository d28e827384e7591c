"""Stages, child-process entry points and store checks for the crash, concurrency and merge
campaigns (test_crash.py, test_concurrency.py, test_merge.py).

The campaigns drive real processes. A child runs this module::

    python -c "from campaign_stages import main; main()" run '{"store": ..., "stage": ...}'

with this folder on ``PYTHONPATH`` (``child_env``), the name pytest itself imports it under
(it puts ``tests/`` on ``sys.path``, as there is no ``tests/__init__.py``), so parent and
child load one module of one name. A ``run`` child instantiates one of ``STAGES`` and
realizes it, optionally after a barrier, and prints a JSON line with what it got. Behaviour
that must differ between children of one test, without changing any DRef, comes from the
environment:

``NIXLET_CAMPAIGN_LOG``
    a file outside the store; every build appends ``<event> <pid> <dref> <time>`` to it
    (``build`` when it starts, ``hold`` when it starts waiting, ``done`` when it ends), so a
    test counts builds per derivation.
``NIXLET_CAMPAIGN_HOLD``
    ``<stage name>=<file>``: builds of that stage wait until the file exists (a slow build
    whose end the test controls).
``NIXLET_CAMPAIGN_FORK``
    ``<stage name>=<file>``: builds of that stage fork a helper process (as
    multiprocessing's fork start method or a data loader does) that lives on until the
    file exists; its pid is logged as a ``fork`` event.
``NIXLET_CAMPAIGN_KILL``
    ``build:<stage name>``: that build SIGKILLs its own process halfway through writing; or
    ``<module>.<function>:<before|after>:<n>``: the child wraps that store-layer function and
    SIGKILLs itself just before or after its n-th call (``_rename_new``, ``_seal``,
    ``durability.make_durable``, ``durability.flush``; ``os.replace`` wraps the one that
    store.py's module ``os`` has), to hit the publishing window precisely.

The rest of the module is for the parent: starting children (``start``, ``finish``), a
file barrier, reading the build log and ``/proc/locks``, and ``verify_store``, which checks
every object of a store against its records.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

import nixlet as nx
from nixlet.engine.instantiate import derivation_hash
from nixlet.store import layout, locks, records
from nixlet.store import opening as store_mod
from nixlet.store import roots as roots_mod
from nixlet.store import staging as staging_mod
from nixlet.values import manifest as manifest_mod
from nixlet.values.context import realization_hash
from nixlet.values.hashing import HASH_CHARS, canonical_json

ENV_LOG = "NIXLET_CAMPAIGN_LOG"
ENV_HOLD = "NIXLET_CAMPAIGN_HOLD"
ENV_KILL = "NIXLET_CAMPAIGN_KILL"
ENV_FORK = "NIXLET_CAMPAIGN_FORK"
#: The longest any child or wait may take before a test calls it a hang.
HANG_GUARD = 120.0
TESTS = Path(__file__).resolve().parent
#: A command prefix that runs the rest as the unprivileged user nobody.
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]

# ================================================================ build functions (children)


def _log(event: str, b: nx.Build, pid: int | None = None) -> None:
    """Append one line to the build log (one ``write`` with O_APPEND: lines never mix)."""
    path = os.environ.get(ENV_LOG)
    if path:
        line = f"{event} {pid or os.getpid()} {b.dref} {time.time():.6f}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def _hold(b: nx.Build) -> None:
    """If ``NIXLET_CAMPAIGN_HOLD`` names this stage, wait (sleeping) for its release file."""
    spec = os.environ.get(ENV_HOLD, "")
    stage, _, release = spec.partition("=")
    if stage != b.dref.name:
        return
    _log("hold", b)
    deadline = time.monotonic() + 2 * HANG_GUARD
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise RuntimeError(f"hold of {b.dref}: {release} never appeared")
        time.sleep(0.005)


def _fork_helper(b: nx.Build) -> None:
    """If ``NIXLET_CAMPAIGN_FORK`` names this stage, fork a helper that sleeps until its
    release file exists (at most twice the hang guard)."""
    stage, _, release = os.environ.get(ENV_FORK, "").partition("=")
    if stage != b.dref.name:
        return
    pid = os.fork()
    if pid == 0:
        # Let go of the parent's stdout and stderr, so that its end reads as EOF.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        deadline = time.monotonic() + 2 * HANG_GUARD
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(0)
    _log("fork", b, pid)


def _die_here(b: nx.Build) -> None:
    """SIGKILL this process if ``NIXLET_CAMPAIGN_FORK``
        ``<stage name>=<file>``: builds of that stage fork a helper process (as
        multiprocessing's fork start method or a data loader does) that lives on until the
        file exists; its pid is logged as a ``fork`` event.
    ``NIXLET_CAMPAIGN_KILL`` is ``build:<this stage>``."""
    if os.environ.get(ENV_KILL) == f"build:{b.dref.name}":
        os.kill(os.getpid(), signal.SIGKILL)


def _noise(b: nx.Build) -> None:
    """A non-deterministic build: random bytes, and the RRefs it was built from."""
    _log("build", b)
    out = nx.build_outpath(b)
    (out / "noise.bin").write_bytes(os.urandom(4096))
    _fork_helper(b)
    _hold(b)  # after a first write: a holder killed here leaves a partial staging folder
    inputs = {str(d): [str(r) for r in rs] for d, rs in nx.build_context(b).items()}
    (out / "inputs.json").write_text(json.dumps(inputs, sort_keys=True))
    _log("done", b)


def _write_files(b: nx.Build) -> None:
    """A deterministic build of several files: nested folders, an executable, a symlink
    and an empty folder."""
    _log("build", b)
    seed = nx.build_cattrs(b).seed
    rng = random.Random(seed)
    out = nx.build_outpath(b)
    (out / "a.txt").write_text(f"seed {seed}\n")
    (out / "sub" / "deep").mkdir(parents=True)
    (out / "sub" / "b.bin").write_bytes(rng.randbytes(50_000))
    _die_here(b)
    (out / "sub" / "deep" / "c.json").write_text(json.dumps({"seed": seed, "x": rng.random()}))
    (out / "run.sh").write_text("#!/bin/sh\necho hello\n")
    (out / "run.sh").chmod(0o755)
    (out / "link").symlink_to("a.txt")
    (out / "empty").mkdir()
    _log("done", b)


def _write_many(b: nx.Build) -> None:
    """A deterministic build of many small files in a few folders."""
    _log("build", b)
    c = nx.build_cattrs(b)
    rng = random.Random(c.seed)
    out = nx.build_outpath(b)
    for i in range(c.count):
        folder = out / f"d{i % 10}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{i:04d}.txt").write_bytes(rng.randbytes(i % 97))
        if i == c.count // 2:
            _die_here(b)
    _log("done", b)


def _write_big(b: nx.Build) -> None:
    """A deterministic build of one file of a few MiB, written in chunks."""
    _log("build", b)
    c = nx.build_cattrs(b)
    rng = random.Random(c.seed)
    chunks = c.mib * 4
    with open(nx.build_outpath(b) / "big.bin", "wb") as f:
        for i in range(chunks):
            f.write(rng.randbytes(256 * 1024))
            if i == chunks // 2:
                f.flush()
                _die_here(b)
    _log("done", b)


def _summarize(b: nx.Build) -> None:
    """A deterministic build from its inputs: their RRefs and total size."""
    _log("build", b)
    summary = {}
    for dep, rrefs in sorted(nx.build_context(b).items()):
        (rref,) = rrefs
        tree = manifest_mod.scan(nx.build_path(b, [dep]))
        summary[dep.name] = {"rref": str(rref), "bytes": tree.total_size}
    _die_here(b)
    (nx.build_outpath(b) / "summary.json").write_text(json.dumps(summary, sort_keys=True))
    _log("done", b)


# ================================================================ stages (children)


def _matcher(spec: str) -> nx.Matcher:
    """``"some:<n>"``, ``"all"`` or ``"only"``: a matcher named in JSON."""
    if spec == "all":
        return nx.match_all()
    if spec == "only":
        return nx.match_only()
    kind, _, n = spec.partition(":")
    if kind != "some":
        raise ValueError(f"unknown matcher {spec!r}")
    return nx.match_some(int(n))


def chain(m: nx.Manager, depth: int = 3, matcher: str = "some:1", tag: str = "chain") -> nx.DRef:
    """``depth`` non-deterministic stages, each depending on the previous one."""
    prev: nx.DRef | None = None
    for i in range(depth):
        config: dict[str, Any] = {"name": f"{tag}{i}"}
        if prev is not None:
            config["src"] = prev
        prev = nx.mkdrv(m, config, _matcher(matcher), nx.build_wrapper(_noise))
    assert prev is not None
    return prev


def crash_pipeline(m: nx.Manager, mib: int = 4, count: int = 400) -> nx.DRef:
    """Three deterministic stages (several files; many small files; a few MiB) and a fourth
    that depends on them all."""
    only = nx.match_only()
    files = nx.mkdrv(m, {"name": "files", "seed": 1}, only, nx.build_wrapper(_write_files))
    many_cfg = {"name": "many", "seed": 2, "count": count}
    many = nx.mkdrv(m, many_cfg, only, nx.build_wrapper(_write_many))
    big = nx.mkdrv(m, {"name": "big", "seed": 3, "mib": mib}, only, nx.build_wrapper(_write_big))
    config = {"name": "summary", "files": files, "many": many, "big": big}
    return nx.mkdrv(m, config, only, nx.build_wrapper(_summarize))


def wide(m: nx.Manager) -> nx.DRef:
    """Many derivations in one instantiation: a chain and the crash pipeline side by side."""
    tail = chain(m, depth=6, tag="wide")
    top = crash_pipeline(m)
    config = {"name": "wide-top", "a": tail, "b": top}
    return nx.mkdrv(m, config, nx.match_only(), nx.build_wrapper(_noise))


def merge_pipeline(m: nx.Manager, side: str | None = None, noise: str = "some:1") -> nx.DRef:
    """A deterministic stage, a non-deterministic one on top of it, and (with ``side``) a
    non-deterministic stage that only one of the two merged stores builds."""
    det_cfg = {"name": "det", "seed": 11}
    det = nx.mkdrv(m, det_cfg, nx.match_only(), nx.build_wrapper(_write_files))
    noisy = nx.mkdrv(m, {"name": "noise", "src": det}, _matcher(noise), nx.build_wrapper(_noise))
    if side is None:
        return noisy
    side_cfg = {"name": f"side-{side}", "src": noisy}
    return nx.mkdrv(m, side_cfg, nx.match_some(1), nx.build_wrapper(_noise))


STAGES: dict[str, Callable[..., nx.DRef]] = {
    "chain": chain,
    "crash": crash_pipeline,
    "wide": wide,
    "merge": merge_pipeline,
}

# ================================================================ child entry points


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill_hook(spec: str) -> None:
    """Wrap a function of the store layer to SIGKILL this process just before or after its
    n-th call (``<module>.<function>:<before|after>:<n>``, the module one of
    ``nixlet.store``'s, as ``sealing._seal``). ``os.<function>`` (``os.replace``) wraps a
    function of the os module, for this whole child process.
    ``build:<stage>`` is left to the build functions."""
    if spec.startswith("build:"):
        return
    path, when, nth = spec.split(":")
    if when not in ("before", "after"):
        raise ValueError(f"bad kill point {spec!r}")
    *modules, name = path.split(".")
    # ``<module of nixlet.store>.<function>``, or a function of the os module.
    owner: Any = os if modules[:1] == ["os"] else importlib.import_module("nixlet.store")
    modules = modules[1:] if modules[:1] == ["os"] else modules
    for module in modules:
        owner = getattr(owner, module)
    original = getattr(owner, name)
    n, calls = int(nth), 0

    def hooked(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == n and when == "before":
            _die()
        result = original(*args, **kwargs)
        if calls == n and when == "after":
            _die()
        return result

    setattr(owner, name, hooked)


def _barrier(folder: Path) -> None:
    """Say this process is ready, then wait until the parent lets every child go at once."""
    (folder / f"ready.{os.getpid()}").touch()
    deadline = time.monotonic() + HANG_GUARD
    go = folder / "go"
    while not go.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("barrier never opened")
        time.sleep(0.0005)


def _run(spec: dict[str, Any]) -> dict[str, Any]:
    """Instantiate a stage and (unless ``realize`` is false) realize it."""
    kill = os.environ.get(ENV_KILL)
    if kill:
        _install_kill_hook(kill)
    store = nx.store_initialize(spec["store"])
    barrier = spec.get("barrier")
    if spec.get("marker"):
        Path(spec["marker"]).write_text(f"{time.time():.6f}")
    started = time.monotonic()
    if barrier and spec.get("barrier_before") == "instantiate":
        _barrier(Path(barrier))
    closure = nx.instantiate(STAGES[spec["stage"]], store=store, **spec.get("kwargs", {}))
    result: dict[str, Any] = {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "result": str(closure.result),
        "drefs": [str(d.dref) for d in closure.derivations],
    }
    if spec.get("realize", True):
        if barrier and spec.get("barrier_before", "realize") == "realize":
            _barrier(Path(barrier))
        if spec.get("many"):
            result["rrefs"] = [str(r) for r in nx.realize_many(closure)]
        else:
            result["rrefs"] = [str(nx.realize(closure))]
    result["elapsed"] = time.monotonic() - started
    return result


def _hold_staging() -> None:
    """Hold a staging folder in each store named on stdin (one path a line), answering
    with its path, until stdin closes: a live process whose staging is not garbage."""
    for line in sys.stdin:
        store = nx.store_initialize(line.strip())
        root = staging_mod.new_staging(store, "live").parent
        (root / "live.txt").write_text("in use")
        print(root, flush=True)


def main(argv: list[str] | None = None) -> None:
    """``run <json spec>`` or ``hold``; see the module docstring."""
    args = sys.argv[1:] if argv is None else argv
    if args[0] == "run":
        print(json.dumps(_run(json.loads(args[1]))), flush=True)
    elif args[0] == "hold":
        _hold_staging()
    else:
        raise SystemExit(f"unknown command {args[0]!r}")


# ================================================================ parent: processes

_CHILD_CODE = "from campaign_stages import main; main()"


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: this one, this folder on PYTHONPATH, no campaign
    variables unless given, no default store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIXLET_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def start(
    spec: Mapping[str, Any], env: Mapping[str, str] | None = None, as_nobody: bool = False
) -> subprocess.Popen[str]:
    """Start a child that runs ``spec`` (see ``_run``), as the user nobody if asked (which
    needs root and setpriv)."""
    command = [sys.executable, "-c", _CHILD_CODE, "run", json.dumps(dict(spec))]
    return subprocess.Popen(
        [*AS_NOBODY, *command] if as_nobody else command,
        env=child_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = HANG_GUARD) -> dict[str, Any]:
    """Wait for a child (the timeout is a hang guard) and return what it printed."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"child {proc.pid} hung for {timeout} s; stderr:\n{err}") from None
    if proc.returncode != 0:
        raise AssertionError(f"child {proc.pid} exited with {proc.returncode}; stderr:\n{err}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def run(spec: Mapping[str, Any], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run one child to its end and return what it printed."""
    return finish(start(spec, env))


def killed(proc: subprocess.Popen[str], timeout: float = HANG_GUARD) -> str:
    """Wait for a child that must die by SIGKILL; return its stderr."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"child {proc.pid} hung for {timeout} s; stderr:\n{err}") from None
    assert proc.returncode == -signal.SIGKILL, f"child exited with {proc.returncode}:\n{err}"
    return err


@contextmanager
def reaped(procs: list[subprocess.Popen[str]]) -> Iterator[list[subprocess.Popen[str]]]:
    """Kill (by pid) and reap whatever child of ``procs`` is still running on the way out,
    so that a failing test leaves no process behind."""
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = HANG_GUARD) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` (a hang guard)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


def open_barrier(folder: Path, n: int, procs: list[subprocess.Popen[str]]) -> None:
    """Wait until ``n`` children wait at the barrier in ``folder``, then let them all go."""

    def ready() -> bool:
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise AssertionError(f"child {dead[0].pid} died before the barrier")
        return len(list(folder.glob("ready.*"))) == n

    wait_for(ready, f"{n} children at the barrier")
    (folder / "go").touch()


class Holder:
    """A live child process holding a staging folder in each store it is given."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD_CODE, "hold"],
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def hold(self, store: Path) -> Path:
        """Make the holder take a staging folder in ``store``; return that folder."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{store}\n")
        self.proc.stdin.flush()
        return Path(self.proc.stdout.readline().strip())

    def close(self) -> None:
        """Let the holder end (stdin closes) and reap it."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=HANG_GUARD)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()


# ================================================================ parent: logs and locks


@attrs.frozen
class LogLine:
    """One line of the build log."""

    event: str
    pid: int
    dref: str
    time: float


def read_log(path: Path) -> list[LogLine]:
    """The build log, in order (empty if nothing was built)."""
    if not path.exists():
        return []
    lines = []
    # The last piece is "" or a line a build is still writing: complete lines only.
    for text in path.read_text().split("\n")[:-1]:
        event, pid, dref, t = text.split()
        lines.append(LogLine(event, int(pid), dref, float(t)))
    return lines


def builds_per_dref(path: Path) -> Counter[str]:
    """How many builds of each derivation started, from the log."""
    return Counter(line.dref for line in read_log(path) if line.event == "build")


@attrs.frozen
class BuildLock:
    """Where a derivation's build lock lives: a file and, for an OFD lock, its byte."""

    path: Path
    slot: int | None


def lock_file(store: Path, dref: nx.DRef | str) -> BuildLock:
    """The build lock of a derivation."""
    d = nx.DRef.parse(dref)
    slot = locks.lock_slot(d) if locks._OFD else None
    return BuildLock(Path(locks.lock_path(nx.Store(store), d)), slot)


def lock_state(lock: BuildLock) -> tuple[int, int]:
    """(holders, waiters) of ``lock`` from ``/proc/locks``, whose lines read
    ``1: [->] OFDLCK ADVISORY WRITE -1 <major>:<minor>:<inode> <start> <end>`` (OFD locks
    carry no pid, so they are counted) or ``... FLOCK ADVISORY WRITE <pid> <dev:inode> 0 EOF``."""
    st = os.stat(lock.path)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    kind = "FLOCK" if lock.slot is None else "OFDLCK"
    start = "0" if lock.slot is None else str(lock.slot)
    holders = waiters = 0
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            waiting = len(fields) > 1 and fields[1] == "->"
            if waiting:
                fields.pop(1)
            if len(fields) >= 7 and fields[1] == kind and fields[5] == key and fields[6] == start:
                if waiting:
                    waiters += 1
                else:
                    holders += 1
    return holders, waiters


def procfs_locks_usable() -> bool:
    """Whether ``/proc/locks`` shows the build locks this process takes (it does not in
    some containers); probed once, in a throwaway store."""
    global _procfs_usable
    if _procfs_usable is None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            default = store_mod._default
            store = store_mod.store_initialize(Path(tmp) / "store")
            store_mod._default = default  # the probe store is nobody's default
            dref = nx.DRef("a" * 32, "probe")
            with locks.derivation_lock(store, dref):
                try:
                    _procfs_usable = lock_state(lock_file(store.root, dref)) == (1, 0)
                except OSError:
                    _procfs_usable = False
    return _procfs_usable


_procfs_usable: bool | None = None


# ================================================================ parent: store checks

_STAGING_NAME = re.compile(r"^(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}$")


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not: an orphan may wait long to be
    reaped in a container)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def staging_pid(path: Path) -> int:
    """The pid in the name of a staging folder ``<host>-<pid>-<rand>``."""
    found = _STAGING_NAME.match(path.name)
    assert found and found["host"] == socket.gethostname(), path
    return int(found["pid"])


def staging_folders(store: Path, pid: int) -> set[Path]:
    """The staging folders of process ``pid`` in ``store``."""
    tmp = store / layout.TMP
    return {p for p in tmp.iterdir() if p.is_dir() and staging_pid(p) == pid}


def _writable(mode: int) -> bool:
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def verify_realization(store: nx.Store, rref: nx.RRef) -> None:
    """Check one published realization against its records: its ``meta.json`` manifest
    lists exactly the files of its ``out/`` folder (paths, kinds, sizes, executable bits,
    xxh3-128 hashes), its RRef hash is that of its context and manifest, the realizations
    of its context are in the store, and ``meta.json`` and everything under ``out/`` are
    read-only. (The realization's own folder is left out of the last check: it can only
    become read-only after the rename that publishes it, since moving a folder to another
    parent needs write access to it, so a kill between the two leaves it writable.)"""
    meta = records.read_meta(store, rref)
    recorded = manifest_mod.parse(canonical_json(meta["manifest"]))
    out = layout.rref_out(store, rref)
    actual = manifest_mod.scan(out)
    want = {e.path: e for e in recorded.entries}
    got = {e.path: e for e in actual.entries}
    assert set(got) == set(want), f"{rref}: files differ from the manifest: {set(got) ^ set(want)}"
    for path, entry in want.items():
        assert got[path] == entry, f"{rref}: {path} is {got[path]}, manifest says {entry}"
    context = canonical_json(meta["context"])
    assert realization_hash(context, actual.canonical()) == rref.rhash, f"{rref}: hash mismatch"
    for dep_rrefs in nx.rrefctx(rref, store=store).values():
        for dep in dep_rrefs:
            assert layout.rref_dir(store, dep).is_dir(), f"{rref}: its input {dep} is missing"
    meta_mode = os.lstat(layout.rref_dir(store, rref) / layout.META_FILE).st_mode
    assert not _writable(meta_mode), f"{rref}: meta.json is writable"
    for folder, dirs, files in os.walk(out):
        assert not _writable(os.lstat(folder).st_mode), f"{rref}: {folder} is writable"
        for name in files + dirs:
            st = os.lstat(os.path.join(folder, name))
            if not stat.S_ISLNK(st.st_mode):
                assert not _writable(st.st_mode), f"{rref}: {folder}/{name} is writable"


@attrs.frozen
class StoreState:
    """What a verified store holds."""

    drefs: frozenset[nx.DRef]
    rrefs: frozenset[nx.RRef]

    def rrefs_of(self, dref: nx.DRef | str) -> set[nx.RRef]:
        """The realizations of one derivation."""
        d = nx.DRef.parse(dref)
        return {r for r in self.rrefs if r.dref == d}


def verify_store(root: Path) -> StoreState:
    """Check a whole store: its root holds only the format file, ``.tmp``, ``.locks`` and
    derivation folders; each derivation folder holds its two read-only records, whose hash
    is the folder's name, and realization folders named by a full hash (nothing half made
    or temporary is visible as a ref); each realization passes ``verify_realization``."""
    store = store_mod.open_store(root)
    drefs = set(nx.alldrefs(store=store))
    names = set(os.listdir(root)) - {"format", layout.TMP, layout.LOCKS, roots_mod.ROOTS}
    assert names == {f"{d.dhash}-{d.name}" for d in drefs}, f"stray names in {root}: {names}"
    rrefs: set[nx.RRef] = set()
    for dref in drefs:
        folder = layout.dref_dir(store, dref)
        config = nx.mkconfig(json.loads((folder / layout.CONFIG_FILE).read_bytes()))
        code = (folder / layout.CODE_FILE).read_text()
        assert derivation_hash(config, code) == dref.dhash, f"{dref}: bad record"
        for record in (layout.CONFIG_FILE, layout.CODE_FILE):
            assert not _writable(os.lstat(folder / record).st_mode), f"{dref}: {record} writable"
        found = nx.drefrrefs(dref, store=store)
        extra = set(os.listdir(folder)) - {layout.CONFIG_FILE, layout.CODE_FILE}
        assert extra == {r.rhash for r in found}, f"{dref}: stray names {extra}"
        assert all(len(r.rhash) == HASH_CHARS for r in found)
        rrefs.update(found)
    for rref in rrefs:
        verify_realization(store, rref)
    return StoreState(frozenset(drefs), frozenset(rrefs))
