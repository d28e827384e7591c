"""The far side of a sync over ssh: what ``nixlet.sync`` runs on the machine that holds a
remote store, and the wire format both sides speak. Part of the store layer.

``sync`` starts, through ssh::

    <python> -m nixlet.store.remote closure <store>   # a remote source: what to copy
    <python> -m nixlet.store.remote receive <store>   # a remote destination: receive it

Both read and write JSON, one message a line. ``closure`` reads ``{"refs": [...] | null}``
and answers ``{"protocol": 1, "root": <absolute store path>, "rrefs": [...]}``.
``receive`` serves a ``Receiver`` of that store::

    <- {"rrefs": [...]}                 the closure the source offers
    -> {"protocol": 1, "missing": [...], "records": [...], "folder": <staging folder>}
    <- {"publish": true}                rsync has filled the folder (false: it failed)
    -> {"published": [...]}

Any nixlet error is answered as ``{"error": {"type", "message", "path", "ref"}}`` and raised
again on the calling side. The receiving process holds its staging folder while it lives:
if the connection drops, it removes the folder and exits (and if it is killed, the folder
is garbage that ``remove_staging_garbage`` frees).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import IO, Any

from nixlet.store.closure import closure, parse_refs
from nixlet.store.opening import open_store
from nixlet.store.receive import Receiver
from nixlet.values.errors import NixletError, RefError, StoreError, UsageError
from nixlet.values.refs import DRef, RRef

#: The version of the wire format above; both sides refuse another.
PROTOCOL = 1
_ERRORS: dict[str, type[NixletError]] = {
    "StoreError": StoreError,
    "RefError": RefError,
    "UsageError": UsageError,
}


def encode_error(e: NixletError) -> dict[str, Any]:
    """An error as the wire carries it."""
    fields = {k: getattr(e, k, None) for k in ("path", "ref", "argument")}
    return {
        "type": type(e).__name__,
        "message": e.message,
        **{k: None if v is None else str(v) for k, v in fields.items()},
    }


def decode_error(data: dict[str, Any], where: str) -> NixletError:
    """The error a message carries, raised again on this side: a ``StoreError``, a
    ``RefError`` or a ``UsageError`` with its fields, its message saying ``where``."""
    cls = _ERRORS.get(str(data.get("type")), StoreError)
    message = f"{where}: {data.get('message')}"
    if cls is StoreError:
        ref = data.get("ref")
        parsed: DRef | RRef | None = None
        if isinstance(ref, str):
            parsed = RRef.parse(ref) if ref.startswith("rref:") else DRef.parse(ref)
        return StoreError(message, path=data.get("path"), ref=parsed)
    if cls is UsageError:
        return UsageError(message, argument=data.get("argument"))
    return cls(message)


def _reply(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _guarded(out: IO[str], work: Callable[[], dict[str, Any]]) -> bool:
    """Answer ``work()``'s message, or the nixlet error it raised; whether it succeeded."""
    try:
        message = work()
    except NixletError as e:
        _reply(out, {"error": encode_error(e)})
        return False
    _reply(out, message)
    return True


def serve_closure(root: str, inp: IO[str], out: IO[str]) -> int:
    """Answer one closure request about the store at ``root``."""

    def work() -> dict[str, Any]:
        request = json.loads(inp.readline() or "{}")
        store = open_store(root)
        rrefs = closure(store, parse_refs(request.get("refs")))
        return {"protocol": PROTOCOL, "root": str(store.root), "rrefs": [str(r) for r in rrefs]}

    return 0 if _guarded(out, work) else 1


def serve_receive(root: str, inp: IO[str], out: IO[str]) -> int:
    """Receive one sync into the store at ``root`` (the dialogue in the module's
    docstring). A dropped connection discards what was received."""
    receiver: Receiver | None = None

    def offer() -> dict[str, Any]:
        nonlocal receiver
        request = json.loads(inp.readline() or "{}")
        receiver = Receiver(open_store(root))
        offered = receiver.offer([RRef.parse(r) for r in request.get("rrefs", [])])
        return {
            "protocol": PROTOCOL,
            "missing": [str(r) for r in offered.missing],
            "records": [str(d) for d in offered.records],
            "folder": offered.folder,
        }

    if not _guarded(out, offer) or receiver is None:
        return 1
    try:
        go = json.loads(inp.readline() or "{}").get("publish", False)
    except ValueError:
        go = False
    if not go:
        receiver.discard()
        return 1
    published = receiver
    return 0 if _guarded(out, lambda: {"published": [str(r) for r in published.publish()]}) else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m nixlet.store.remote closure|receive <store>``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("closure", "receive"):
        print("usage: python -m nixlet.store.remote closure|receive <store>", file=sys.stderr)
        return 2
    serve = serve_closure if args[0] == "closure" else serve_receive
    return serve(args[1], sys.stdin, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
