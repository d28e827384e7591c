"""Sync: copying the closure of some refs from one store to another, local or over ssh,
with the real ``rsync``. Part of the store layer.

A plain ``rsync -a`` merges two quiescent stores, but a reader of the destination may see a
half-copied realization while it runs. ``sync`` copies into the destination's staging area
instead, then a ``Receiver`` on the destination's machine checks each object against its
name (records rehashed, files rescanned), seals it and publishes it by rename after one
durable flush: a reader sees each object whole or not at all, whenever the copy is
interrupted, and a second ``sync`` completes what a first one left. Objects the destination
holds are not transferred.

Remote locations use rsync's syntax, ``host:path`` or ``user@host:path``. For a remote
source, ``sync`` asks nixlet on that machine for the closure over ssh and rsync pulls; for a
remote destination, the receiving side runs there (``nixlet.store.remote``) and rsync
pushes into its staging folder. Either way the machine at the far end needs nixlet.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from nixlet.store.closure import closure, parse_refs
from nixlet.store.layout import CODE_FILE, CONFIG_FILE
from nixlet.store.opening import open_store
from nixlet.store.receive import Offer, Receiver
from nixlet.store.remote import PROTOCOL, decode_error
from nixlet.values.errors import StoreError, UsageError
from nixlet.values.model import Store
from nixlet.values.refs import DRef, RRef

#: "sync <src> -> <dst>: ..." once per sync, with what it transferred.
log = logging.getLogger("nixlet.sync")
#: The Python code the far side runs (``-c`` rather than ``-m``: runpy warns when the
#: package already imported the module it runs).
_REMOTE_MAIN = "import sys; from nixlet.store.remote import main; sys.exit(main())"
#: How long a cancelled rsync gets to stop after SIGTERM before SIGKILL.
_TERM_GRACE = 5.0


@attrs.frozen
class SyncReport:
    """What ``sync`` did: the realizations it published in the destination (sorted), those
    the destination already held (not transferred), and what rsync transferred (regular
    files, and their bytes, from its ``--stats``)."""

    published: tuple[RRef, ...]
    present: tuple[RRef, ...]
    files: int
    nbytes: int


@attrs.frozen
class _Location:
    """One side of a sync: a local store folder, or ``host:path`` (``host`` with a user)."""

    host: str | None
    path: str

    def __str__(self) -> str:
        return self.path if self.host is None else f"{self.host}:{self.path}"


def sync(
    src: Store | str | os.PathLike[str],
    dst: Store | str | os.PathLike[str],
    refs: DRef | RRef | str | Iterable[DRef | RRef | str] | None = None,
    *,
    remote_python: str = "python3",
    ssh: Sequence[str] = ("ssh",),
    rsync_options: Sequence[str] = (),
) -> SyncReport:
    """Copy the closure of ``refs`` from the store ``src`` into the store ``dst``.

    Each realization appears in ``dst`` whole, checked against its name, or not at all,
    and durable on return; those ``dst`` holds already are not transferred. A sync that is
    interrupted (rsync killed, the connection lost) leaves ``dst`` valid, and running it
    again completes it.

    Args:
        src: the store to copy from: a ``Store``, a local path, or ``host:path`` /
            ``user@host:path`` (rsync's syntax: a colon before any slash) on a machine
            reached by ``ssh`` that has nixlet.
        dst: the store to copy into, likewise; it must be a store already
            (``store_initialize`` makes one). ``src`` and ``dst`` cannot both be remote.
        refs: what to copy: RRefs (each with the realizations it was built from,
            transitively), DRefs (all their realizations, with theirs), their strings, or
            ``None`` (the default) for everything ``src`` holds.
        remote_python: the Python that runs nixlet on the remote side, ``python3`` by
            default (the one on the remote ``PATH``); give a virtualenv's interpreter there.
        ssh: the ssh command (and options) for the remote side, given to rsync as its
            ``-e`` too.
        rsync_options: more options for rsync (``--bwlimit=10m``, ``--compress``).

    Returns:
        A ``SyncReport``.

    Raises:
        UsageError: both sides are remote, or an argument is not of its kind.
        RefError: a string in ``refs`` is not a ref.
        StoreError: a ref is not in ``src``; a store is missing or unreadable; rsync or ssh
            failed (``dst`` keeps everything published before, and nothing half-made); a
            received object does not match its name (nothing of this sync is published,
            and ``ref`` names the object).

    Cancellation (``KeyboardInterrupt``) stops rsync (SIGTERM, then SIGKILL after 5 s)
    and discards what was received; nothing of it is published.
    """
    source, target = _location(src, "src"), _location(dst, "dst")
    if source.host is not None and target.host is not None:
        raise UsageError(
            f"cannot sync from {source} to {target}: rsync copies between a local and a "
            "remote store, not between two remote ones; run the sync on one of them",
            argument="dst",
        )
    wanted = parse_refs(refs)
    # A remote receiver starts first: its ssh login and Python start-up overlap the walk of
    # the closure here.
    receiver: Receiver | _RemoteReceiver = (
        Receiver(open_store(target.path))
        if target.host is None
        else _RemoteReceiver(target, remote_python, ssh)
    )
    try:
        if source.host is None:
            store = open_store(source.path)
            source = _Location(None, str(store.root))
            rrefs = closure(store, wanted)
        else:
            source, rrefs = _remote_closure(source, wanted, remote_python, ssh)
        offer = receiver.offer(rrefs)
        files = nbytes = 0
        if offer.missing:
            files, nbytes = _rsync(source, target, offer, ssh, rsync_options)
        published = receiver.publish()
    except BaseException:
        receiver.discard()
        raise
    finally:
        if isinstance(receiver, _RemoteReceiver):
            receiver.close()
    present = sorted(set(rrefs) - set(offer.missing))
    log.info(
        "sync %s -> %s: %d published, %d present, %d files (%d bytes) transferred",
        source,
        target,
        len(published),
        len(present),
        files,
        nbytes,
    )
    return SyncReport(tuple(sorted(published)), tuple(present), files, nbytes)


def _location(value: object, argument: str) -> _Location:
    """Where one side is. A string follows rsync: ``host:path`` when a colon comes before
    any slash; a ``Store`` or an ``os.PathLike`` is local.

    Raises:
        UsageError: it is none of these, or rsync's daemon syntax (``host::module``,
            ``rsync://``), which has no nixlet on the far side.
    """
    if isinstance(value, Store):
        return _Location(None, str(value.root))
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise UsageError(
            f"{argument} must be a Store, a path or host:path, got {value!r}", argument=argument
        )
    head, colon, rest = value.partition(":")
    if not colon or "/" in head:
        return _Location(None, value)
    if not head or rest.startswith(":") or value.startswith("rsync://"):
        raise UsageError(
            f"{argument} {value!r}: use a local path or host:path (rsync daemons, "
            "host::module, are not supported: nixlet must run on the far side)",
            argument=argument,
        )
    return _Location(head, rest or ".")


def _ssh_command(location: _Location, ssh: Sequence[str], python: str, verb: str) -> list[str]:
    """The command that runs ``nixlet.store.remote <verb>`` at ``location``."""
    if location.host is None:  # callers pass remote locations only; not under -O either
        raise UsageError(f"{location} is not a remote location", argument="location")
    remote = shlex.join([python, "-c", _REMOTE_MAIN, verb, location.path])
    return [*ssh, location.host, remote]


def _remote_closure(
    source: _Location, wanted: list[DRef | RRef] | None, python: str, ssh: Sequence[str]
) -> tuple[_Location, list[RRef]]:
    """The closure of ``wanted`` in a remote store, and the store's absolute path there."""
    request = json.dumps({"refs": None if wanted is None else [str(r) for r in wanted]})
    done = subprocess.run(
        _ssh_command(source, ssh, python, "closure"),
        input=request + "\n",
        capture_output=True,
        text=True,
    )
    reply = _parse_reply(done.stdout.partition("\n")[0], source, done.stderr)
    return _Location(source.host, str(reply["root"])), [RRef.parse(r) for r in reply["rrefs"]]


def _parse_reply(line: str, where: _Location, stderr: str) -> dict[str, Any]:
    """One message from the far side, or the error it carries.

    Raises:
        StoreError: the far side did not answer (ssh failed, no nixlet there), or answered
            with an error (raised again here with its type and fields).
    """
    try:
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise ValueError(line)
    except ValueError:
        raise StoreError(
            f"no answer from nixlet at {where}: {stderr.strip()[-2000:] or 'nothing said'} "
            "(is the host reachable with this ssh command, and nixlet installed for the "
            "remote_python given?)",
            path=str(where),
        ) from None
    if "error" in reply:
        raise decode_error(reply["error"], f"at {where.host}")
    if "protocol" in reply and reply["protocol"] != PROTOCOL:
        raise StoreError(
            f"nixlet at {where} speaks sync protocol {reply['protocol']}, this one "
            f"{PROTOCOL}: install the same nixlet version on both machines",
            path=str(where),
        )
    return reply


class _RemoteReceiver:
    """A ``Receiver`` on another machine, driven over ssh (``nixlet.store.remote``)."""

    def __init__(self, location: _Location, python: str, ssh: Sequence[str]) -> None:
        self.location = location
        self.offered: Offer | None = None
        self.proc = subprocess.Popen(
            _ssh_command(location, ssh, python, "receive"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the far side is gone; reading its answer says why
        line = self.proc.stdout.readline()
        stderr = "" if line else self._stderr()
        return _parse_reply(line, self.location, stderr)

    def _stderr(self) -> str:
        assert self.proc.stderr is not None
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.proc.stderr.read()

    def offer(self, rrefs: Sequence[RRef]) -> Offer:
        reply = self._ask({"rrefs": [str(r) for r in rrefs]})
        self.offered = Offer(
            tuple(RRef.parse(r) for r in reply["missing"]),
            tuple(DRef.parse(d) for d in reply["records"]),
            str(reply["folder"]),
        )
        self.location = _Location(self.location.host, self.offered.folder)
        return self.offered

    def publish(self) -> list[RRef]:
        reply = self._ask({"publish": True})
        self.offered = None
        return [RRef.parse(r) for r in reply["published"]]

    def discard(self) -> None:
        """Tell the far side to drop what it received (it does so too if the connection
        drops)."""
        if self.offered is not None and self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"publish": False}) + "\n")
                self.proc.stdin.flush()
            except OSError:
                pass
        self.offered = None

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _rsync(
    source: _Location,
    target: _Location,
    offer: Offer,
    ssh: Sequence[str],
    options: Sequence[str],
) -> tuple[int, int]:
    """Copy what ``offer`` asks for into its staging folder; return rsync's counts of
    regular files transferred and their bytes.

    The list of paths goes to rsync on its standard input (``--files-from=-``): each
    missing realization's folder, and the record files of derivations the destination
    lacks; ``-r`` is needed because ``--files-from`` turns off ``-a``'s recursion.

    Raises:
        StoreError: rsync failed or was killed (its message is in the error).
    """
    paths = [f"{r.dref.key}/{r.rhash}" for r in offer.missing]
    paths += [f"{d.key}/{name}" for d in offer.records for name in (CONFIG_FILE, CODE_FILE)]
    into = offer.folder if target.host is None else f"{target.host}:{offer.folder}"
    command = ["rsync", "-a", "-r", "--from0", "--files-from=-", "--stats", *options]
    if source.host is not None or target.host is not None:
        command += ["-e", shlex.join(ssh)]
    command += [f"{source}/", f"{into}/"]
    listing = "".join(p + "\0" for p in paths).encode()
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own process group: local rsync forks a receiver and a generator, which
            # must stop with it (else they go on writing into a staging folder being removed).
            start_new_session=True,
        )
    except FileNotFoundError:
        raise StoreError(
            "rsync is not installed: install it (apt-get install rsync) to sync stores",
            path=str(target),
        ) from None
    try:
        out, err = proc.communicate(listing)
    except BaseException:
        _stop(proc)
        raise
    if proc.returncode != 0:
        _stop(proc)
        raise StoreError(
            f"rsync from {source} to {target} failed (exit {proc.returncode}): "
            f"{err.decode(errors='replace').strip()[-2000:]}; nothing of this sync was "
            "published, run it again",
            path=str(target),
        )
    return _stat(out, "Number of regular files transferred"), _stat(
        out, "Total transferred file size"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop rsync and the processes it forked (its process group): SIGTERM, then SIGKILL
    to whatever is left after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break  # nothing left of the group
        if sig == signal.SIGTERM:
            try:
                proc.wait(timeout=_TERM_GRACE)
            except subprocess.TimeoutExpired:
                pass
    proc.wait()


def _stat(out: bytes, label: str) -> int:
    """A number from rsync's ``--stats`` (``1,234`` as 1234); 0 if it is not there."""
    m = re.search(re.escape(label).encode() + rb": ([\d,.]+)", out)
    return int(m.group(1).replace(b",", b"").replace(b".", b"")) if m else 0
