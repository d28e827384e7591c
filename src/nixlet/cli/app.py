"""The ``nixlet`` command group and what every command shares: choosing the store, one-line
errors, JSON and human output, abbreviated refs (with shell completion) and progress.

Every command is a thin layer over library functions: it resolves its arguments, calls
nixlet, and prints the answer. None reads or writes a store file itself.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any, NoReturn

import attrs
import click
from click.shell_completion import CompletionItem

import nixlet
from nixlet.store.layout import default_location
from nixlet.store.opening import open_store
from nixlet.tools.refs import all_refs, ref_key

#: The exit status of a command that failed with a NixletError (click's usage errors exit 2).
EXIT_ERROR = 1


@attrs.define
class State:
    """What the group's options chose, shared by the commands (``ctx.obj``)."""

    store_path: str | None
    debug: bool
    _store: nixlet.Store | None = None

    def store(self) -> nixlet.Store:
        """The store: the one ``--store`` or ``$NIXLET_STORE`` names (which must exist:
        a typo must not make a new store), else the default store of ``store_initialize``
        (made if missing, as a library user's first ``store_initialize()`` makes it)."""
        if self._store is None:
            if self.store_path is not None:
                try:
                    self._store = open_store(self.store_path)
                except nixlet.StoreError:
                    if os.path.exists(self.store_path):
                        raise
                    fail(
                        f"no nixlet store at {os.path.abspath(self.store_path)}: "
                        f"`nixlet init {self.store_path}` makes one"
                    )
            else:
                self._store = nixlet.store_initialize()
        return self._store


class Group(click.Group):
    """The command group: any ``NixletError`` becomes one line on stderr (``nixlet:
    error: ...``) and exit status 1; ``--debug`` shows the traceback too."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except nixlet.NixletError as e:
            if ctx.params.get("debug"):
                traceback.print_exc()
            fail(e.message)


def fail(message: str) -> NoReturn:
    """Print ``nixlet: error: <message>`` on stderr and exit 1."""
    click.echo(f"nixlet: error: {message}", err=True)
    sys.exit(EXIT_ERROR)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    "store_path",
    metavar="PATH",
    envvar="NIXLET_STORE",
    help="The store to use (it must exist; `nixlet init PATH` makes one). "
    "Default: $NIXLET_STORE, else ~/.local/share/nixlet/store.",
)
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.version_option(nixlet.__version__, prog_name="nixlet")
@click.pass_context
def cli(ctx: click.Context, store_path: str | None, debug: bool) -> None:
    """nixlet: look at and maintain a nixlet store.

    A REF is a derivation (dref:...) or a realization (rref:...), in full or abbreviated:
    any start of its hash that no other ref has, with or without the dref:/rref: tag
    (`nixlet cat 4okk score.txt`). Listings show the shortest such abbreviations.
    """
    ctx.obj = State(store_path or None, debug)


# ---------------------------------------------------------------- refs


class RefCompleter:
    """Completes a ref argument from the store's listings (click's shell completion; given
    as a parameter's ``shell_complete``, which works with every click since 8.0). The
    value stays text: commands resolve it with ``resolve_ref`` against the chosen store."""

    def __init__(self, kind: str | None = None) -> None:
        self.kind = kind  # "dref", "rref", or None for either

    def __call__(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        """Refs of the store starting with ``incomplete``: their full text when it is a
        start of one (``dref:``, ``rref:4o``), else their key (``4o`` completes to
        ``4okk...-train``). A completion never fails: no store, no candidates."""
        try:
            store = _completion_store(ctx)
            refs = all_refs(store=store) if store is not None else []
        except Exception:
            return []
        items = []
        for ref in refs:
            if self.kind is not None and not str(ref).startswith(self.kind + ":"):
                continue
            full, key = str(ref), ref_key(ref)
            if full.startswith(incomplete):
                items.append(CompletionItem(full, help=ref.name))
            elif key.startswith(incomplete):
                items.append(CompletionItem(key, help=ref.name))
        return items


def _completion_store(ctx: click.Context) -> nixlet.Store | None:
    """The store a completion reads: the one the command line names so far, else the
    default store if it exists (a completion never makes one)."""
    path = ctx.find_root().params.get("store_path") or os.environ.get("NIXLET_STORE")
    try:
        return open_store(path or default_location())
    except nixlet.NixletError:
        return None


#: The ``shell_complete`` of a parameter that takes any ref, a DRef, an RRef.
REF = RefCompleter()
DREF = RefCompleter("dref")
RREF = RefCompleter("rref")


def resolve(ctx: click.Context, text: str) -> nixlet.DRef | nixlet.RRef:
    """The ref ``text`` names in the chosen store (see ``nixlet.resolve_ref``)."""
    return nixlet.resolve_ref(text, store=state(ctx).store())


def resolve_rref(ctx: click.Context, text: str, command: str) -> nixlet.RRef:
    """The realization ``text`` names; a derivation is refused with its realizations
    named, so the user can pick one."""
    ref = resolve(ctx, text)
    if isinstance(ref, nixlet.RRef):
        return ref
    store = state(ctx).store()
    rrefs = nixlet.drefrrefs(ref, store=store)
    if not rrefs:
        hint = "it has no realization"
    else:
        shorts = nixlet.short_refs(rrefs, store=store)
        hint = "its realizations: " + ", ".join(shorts[r] for r in rrefs[:10])
        hint += ", ..." if len(rrefs) > 10 else ""
    fail(f"{command} needs a realization; {text!r} names the derivation {ref} ({hint})")


def state(ctx: click.Context) -> State:
    """The group's ``State``."""
    found = ctx.find_object(State)
    if found is None:  # a command invoked without the group: a programming error
        raise RuntimeError("nixlet's commands run under the nixlet group")
    return found


# ---------------------------------------------------------------- output


def emit_json(data: object) -> None:
    """Print ``data`` as JSON (sorted keys, indented): the stable form for scripts."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))


def json_option(f: Any) -> Any:
    """The ``--json`` flag of a command that lists."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")(f)


def iso_time(t: float) -> str:
    """A POSIX time as UTC ISO 8601 with microseconds (``2024-05-01T12:00:03.000001Z``):
    the form of the store's own records, and of ``--json``."""
    moment = datetime.datetime.fromtimestamp(t, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def local_time(t: float) -> str:
    """A POSIX time in local time, to the second, for people."""
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def human_size(n: int) -> str:
    """Bytes for people, in powers of 1024: ``512 B``, ``1.5 KiB``, ``3.0 GiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@contextlib.contextmanager
def progress(description: str) -> Iterator[None]:
    """Show ``description`` with a spinner and the elapsed time while the block runs,
    when stderr is a terminal; nothing when it is piped or redirected (scripts and logs
    get only the answer). rich is imported only here: short commands never pay for it."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        bar.add_task(description, total=None)
        yield
