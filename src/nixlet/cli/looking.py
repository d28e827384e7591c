"""Commands that look: ``init``, ``ls``, ``cat``, ``show``, ``du``, ``find``, ``diff`` and
``shell``. Each resolves its refs, asks the library, and prints; ``--json`` prints the
library's answer as stable keys (docs/cli.md lists them).
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import re
import time
from typing import Any

import click

import nixlet
from nixlet.cli.app import (
    REF,
    RREF,
    cli,
    emit_json,
    iso_time,
    json_option,
    local_time,
    progress,
    resolve,
    resolve_rref,
    state,
)
from nixlet.cli.app import human_size as hs


@cli.command()
@click.argument("path", required=False, type=click.Path(file_okay=False))
@click.pass_context
def init(ctx: click.Context, path: str | None) -> None:
    """Make a store at PATH (default: --store, $NIXLET_STORE, else the default store);
    an existing store is left as it is."""
    store = nixlet.store_initialize(path or state(ctx).store_path)
    click.echo(str(store.root))


@cli.command()
@click.argument("ref", required=False, shell_complete=REF)
@click.option("-r", "--recursive", is_flag=True, help="A realization's files at every depth.")
@json_option
@click.pass_context
def ls(ctx: click.Context, ref: str | None, recursive: bool, as_json: bool) -> None:
    """List the derivations; a derivation's realizations (oldest build first); or a
    realization's files."""
    store = state(ctx).store()
    if ref is None:
        drefs = nixlet.alldrefs(store=store)
        shorts = nixlet.short_refs(drefs, store=store)
        counts = {d: len(nixlet.drefrrefs(d, store=store)) for d in drefs}
        rows = [
            {"ref": str(d), "short": shorts[d], "name": d.name, "realizations": counts[d]}
            for d in drefs
        ]
        if as_json:
            emit_json(rows)
        for row in [] if as_json else rows:
            n = row["realizations"]
            click.echo(f"{row['short']}  {row['name']}  {n} realization{'' if n == 1 else 's'}")
        return
    r = resolve(ctx, ref)
    if isinstance(r, nixlet.DRef):
        nixlet.drefcfg(r, store=store)  # not in the store: say so, rather than list nothing
        rrefs = nixlet.drefrrefs(r, store=store)
        shorts = nixlet.short_refs(rrefs, store=store)
        times = {x: nixlet.rreftimes(x, store=store) for x in rrefs}
        ordered = sorted(rrefs, key=lambda x: (times[x][1], x))
        if as_json:
            emit_json(
                [
                    {
                        "ref": str(x),
                        "short": shorts[x],
                        "started": iso_time(times[x][0]),
                        "finished": iso_time(times[x][1]),
                    }
                    for x in ordered
                ]
            )
        for x in [] if as_json else ordered:
            click.echo(f"{shorts[x]}  {local_time(times[x][1])}")
        return
    names = nixlet.rreffiles(r, store=store) if recursive else nixlet.lsref(r, store=store)
    if as_json:
        emit_json([{"path": n} for n in names])
    for n in [] if as_json else names:
        click.echo(n)


@cli.command()
@click.argument("ref", shell_complete=RREF)
@click.argument("path")
@click.pass_context
def cat(ctx: click.Context, ref: str, path: str) -> None:
    """Print the text of the file PATH (`sub/log.txt`) of a realization."""
    r = resolve_rref(ctx, ref, "cat")
    click.echo(nixlet.catref(r, *path.split("/"), store=state(ctx).store()), nl=False)


@cli.command()
@click.argument("ref", shell_complete=REF)
@json_option
@click.pass_context
def show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show a derivation (config, dependencies, realizations, size) or a realization
    (derivation, config, context, build times, size, files)."""
    store = state(ctx).store()
    r = resolve(ctx, ref)
    dref = r if isinstance(r, nixlet.DRef) else r.dref
    config = nixlet.drefcfg(dref, store=store)
    # What --json prints; its values are JSON as the keys say (docs/cli.md), so Any.
    info: dict[str, Any] = {
        "ref": str(r),
        "kind": "derivation" if r is dref else "realization",
        "name": dref.name,
        "config": config.to_dict(),
        "size": nixlet.refsize(r, store=store),
        "closure_size": _closure_size(r, store),
    }
    started = finished = 0.0
    if isinstance(r, nixlet.DRef):
        info["dependencies"] = [str(d) for d in config.deps]
        info["realizations"] = [str(x) for x in nixlet.drefrrefs(r, store=store)]
    else:
        started, finished = nixlet.rreftimes(r, store=store)
        info["derivation"] = str(dref)
        info["context"] = {
            str(d): [str(x) for x in xs] for d, xs in nixlet.rrefctx(r, store=store).items()
        }
        info["started"], info["finished"] = iso_time(started), iso_time(finished)
        info["files"] = nixlet.rreffiles(r, store=store)
    if as_json:
        emit_json(info)
        return
    _show_human(r, info, started, finished)


def _closure_size(ref: nixlet.DRef | nixlet.RRef, store: nixlet.Store) -> int | None:
    """The closure's size, or None when a realization it was built from is gone."""
    try:
        return nixlet.refsize(ref, closure=True, store=store)
    except nixlet.StoreError:
        return None


def _show_human(
    r: nixlet.DRef | nixlet.RRef, info: dict[str, Any], started: float, finished: float
) -> None:
    click.echo(str(r))
    closure = info["closure_size"]
    shown = hs(closure) if isinstance(closure, int) else "incomplete (a dependency was removed)"
    size = info["size"]
    if isinstance(r, nixlet.RRef):
        click.echo(f"derivation  {info['derivation']}")
        click.echo(
            f"built       {local_time(started)} .. {local_time(finished)} "
            f"({finished - started:.1f} s)"
        )
    click.echo(f"size        {hs(size)} (closure {shown})")
    click.echo("config")
    for line in json.dumps(info["config"], indent=2, sort_keys=True).splitlines():
        click.echo(f"  {line}")
    if isinstance(r, nixlet.DRef):
        _section("dependencies", info["dependencies"])
        _section("realizations", info["realizations"])
    else:
        context = info["context"]
        _section("context", [f"{d}  {' '.join(xs)}" for d, xs in context.items()])
        _section("files", info["files"])


def _section(title: str, lines: list[str]) -> None:
    click.echo(f"{title}{'' if lines else '  (none)'}")
    for line in lines:
        click.echo(f"  {line}")


@cli.command()
@click.option("--closure", "closure_ref", shell_complete=REF, metavar="REF",
              help="The size of REF with everything it was built from.")  # fmt: skip
@json_option
@click.pass_context
def du(ctx: click.Context, closure_ref: str | None, as_json: bool) -> None:
    """Disk usage: each derivation's size (largest first) and the store's total; or, with
    --closure, the size of one ref's closure."""
    store = state(ctx).store()
    if closure_ref is not None:
        r = resolve(ctx, closure_ref)
        with progress(f"measuring the closure of {r}"):
            own = nixlet.refsize(r, store=store)
            closure = nixlet.refsize(r, closure=True, store=store)
        if as_json:
            emit_json({"ref": str(r), "size": own, "closure_size": closure})
        else:
            click.echo(f"{hs(closure)}  {r}  (itself {hs(own)})")
        return
    with progress("measuring the store"):
        usage = nixlet.du(store=store)
    shorts = nixlet.short_refs(usage, store=store)
    ordered = sorted(usage, key=lambda d: (-usage[d][0], d))
    total = sum(size for size, _ in usage.values())
    if as_json:
        rows = [
            {
                "ref": str(d),
                "short": shorts[d],
                "name": d.name,
                "size": usage[d][0],
                "realizations": {str(x): n for x, n in usage[d][1].items()},
            }
            for d in ordered
        ]
        emit_json({"total": total, "derivations": rows})
        return
    for d in ordered:
        click.echo(f"{hs(usage[d][0]):>10}  {shorts[d]}  {d.name}")
    click.echo(f"{hs(total):>10}  total")


_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _when(text: str) -> float:
    """A POSIX time from ``2024-05-01``, ``2024-05-01T12:00`` (local time unless it
    says its zone) or ``3d`` / ``12h`` / ``30m`` (that long ago)."""
    m = _AGO.fullmatch(text.strip())
    if m:
        return time.time() - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a date: use 2024-05-01, 2024-05-01T12:00 or an age, 3d, 12h, 30m"
        ) from None
    return moment.timestamp()


@cli.command()
@click.option("--stage", metavar="NAME", help="Derivations named NAME (a glob: 'train*').")
@click.option("--name", "file_glob", metavar="GLOB",
              help="Files whose name (or path) matches GLOB; one line per file.")  # fmt: skip
@click.option("--since", metavar="DATE", help="Built (finished) at or after DATE, or 3d, 12h.")
@click.option("--until", metavar="DATE", help="Built (finished) before DATE, or 3d, 12h.")
@json_option
@click.pass_context
def find(
    ctx: click.Context,
    stage: str | None,
    file_glob: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    """Find realizations by derivation name, build time, and the names of their files;
    oldest build first."""
    store = state(ctx).store()
    lo = _when(since) if since else None
    hi = _when(until) if until else None
    found: list[tuple[float, float, nixlet.RRef, str | None]] = []
    with progress("searching the store"):
        for d in nixlet.alldrefs(store=store):
            if stage is not None and not fnmatch.fnmatchcase(d.name, stage):
                continue
            for r in nixlet.drefrrefs(d, store=store):
                started, finished = nixlet.rreftimes(r, store=store)
                if (lo is not None and finished < lo) or (hi is not None and finished >= hi):
                    continue
                if file_glob is None:
                    found.append((started, finished, r, None))
                    continue
                for path in nixlet.rreffiles(r, store=store):
                    base = path.rsplit("/", 1)[-1]
                    if fnmatch.fnmatchcase(base, file_glob) or fnmatch.fnmatchcase(path, file_glob):
                        found.append((started, finished, r, path))
    found.sort(key=lambda x: (x[1], x[2], x[3] or ""))
    shorts = nixlet.short_refs({r for _, _, r, _ in found}, store=store)
    if as_json:
        rows = []
        for started, finished, r, file in found:
            row: dict[str, object] = {
                "ref": str(r),
                "short": shorts[r],
                "name": r.name,
                "started": iso_time(started),
                "finished": iso_time(finished),
            }
            if file_glob is not None:
                row["path"] = file
            rows.append(row)
        emit_json(rows)
        return
    for _, finished, r, file in found:
        tail = f"  {file}" if file is not None else ""
        click.echo(f"{shorts[r]}  {r.name}  {local_time(finished)}{tail}")


@cli.command()
@click.argument("a", shell_complete=REF)
@click.argument("b", shell_complete=REF)
@json_option
@click.pass_context
def diff(ctx: click.Context, a: str, b: str, as_json: bool) -> None:
    """How B differs from A: two derivations' configs, or two realizations' configs,
    contexts and files (+ added, - removed, ~ changed)."""
    ra, rb = resolve(ctx, a), resolve(ctx, b)
    result = nixlet.diff(ra, rb, store=state(ctx).store())
    sections = {"config": result.config, "context": result.context, "files": result.files}
    if as_json:
        emit_json(
            {"a": str(result.a), "b": str(result.b)} | {k: v.to_json() for k, v in sections.items()}
        )
        return
    if not result:
        click.echo("no difference" + (" (the build code differs)" if ra != rb else ""))
        return
    for title, changes in sections.items():
        if not changes:
            continue
        click.echo(f"{title}:")
        brief = _brief_entry if title == "files" else _brief
        for path in sorted({*changes.added, *changes.removed, *changes.changed}):
            if path in changes.added:
                click.echo(f"  + {path}: {brief(changes.added[path])}")
            elif path in changes.removed:
                click.echo(f"  - {path}: {brief(changes.removed[path])}")
            else:
                old, new = changes.changed[path]
                click.echo(f"  ~ {path}: {brief(old)} -> {brief(new)}")


def _brief(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _brief_entry(entry: object) -> str:
    """A manifest entry for people: ``file 19 B e86b92a7e601``, ``symlink ...``, ``folder``."""
    if not isinstance(entry, dict) or entry.get("type") == "dir":
        return "folder"
    digest = str(entry.get("xxh3_128", ""))[:12]
    if entry.get("type") == "symlink":
        return f"symlink {digest}"
    mode = " executable" if entry.get("executable") else ""
    return f"file {hs(int(entry.get('size', 0)))}{mode} {digest}"


@cli.command()
@click.argument("ref", required=False, shell_complete=REF)
@click.pass_context
def shell(ctx: click.Context, ref: str | None) -> None:
    """Open $SHELL in a ref's folder (the store's root without REF); exit with its status."""
    store = state(ctx).store()
    r = resolve(ctx, ref) if ref is not None else None
    ctx.exit(nixlet.shellref(r, store=store))
