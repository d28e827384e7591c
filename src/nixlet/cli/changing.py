"""Commands that change a store or copy out of it: ``rm`` (``rmref``), ``gc``, ``link``
(``linkrref``), ``sync``, ``export`` and ``import`` (``import_``). Each is one call of the
library function; long ones show progress on a terminal.
"""

from __future__ import annotations

import click

import nixlet
from nixlet.cli.app import (
    REF,
    RREF,
    cli,
    emit_json,
    json_option,
    progress,
    resolve,
    resolve_rref,
    state,
)
from nixlet.cli.app import human_size as hs


@cli.command()
@click.argument("refs", nargs=-1, required=True, shell_complete=REF, metavar="REF...")
@click.option("-f", "--force", is_flag=True, help="Remove even what others depend on.")
@click.pass_context
def rm(ctx: click.Context, refs: tuple[str, ...], force: bool) -> None:
    """Remove realizations, or derivations with all their realizations. Each removal is
    atomic. What others in the store depend on is refused, unless --force. All REFs are
    resolved before anything is removed."""
    store = state(ctx).store()
    resolved = [resolve(ctx, r) for r in refs]
    for r in resolved:
        nixlet.rmref(r, force=force, store=store)
        click.echo(f"removed {r}")


@cli.command()
@click.option("-n", "--dry-run", is_flag=True, help="Say what would go; remove nothing.")
@click.option("--keep", "keep", multiple=True, shell_complete=REF, metavar="REF",
              help="Keep REF and what it was built from (repeatable).")  # fmt: skip
@json_option
@click.pass_context
def gc(ctx: click.Context, dry_run: bool, keep: tuple[str, ...], as_json: bool) -> None:
    """Remove every derivation and realization that no root reaches (links made by
    `nixlet link`, running builds, --keep), and dead processes' staging."""
    store = state(ctx).store()
    kept = [resolve(ctx, r) for r in keep]
    with progress("collecting garbage" + (" (dry run)" if dry_run else "")):
        report = nixlet.gc(kept, dry_run, store=store)
    if as_json:
        emit_json(
            {
                "dry_run": report.dry_run,
                "drefs": [str(d) for d in report.drefs],
                "rrefs": [str(r) for r in report.rrefs],
                "bytes": report.bytes,
                "staging": [str(p) for p in report.staging],
                "roots": [str(p) for p in report.roots],
            }
        )
        return
    verb = "would remove" if report.dry_run else "removed"
    for r in report.rrefs:
        click.echo(f"{verb} {r}")
    click.echo(
        f"{verb} {len(report.rrefs)} realizations ({len(report.drefs)} derivations whole), "
        f"{len(report.staging)} staging folders: {hs(report.bytes)}"
    )


@cli.command()
@click.argument("ref", shell_complete=RREF)
@click.argument("dest", type=click.Path(dir_okay=False))
@click.pass_context
def link(ctx: click.Context, ref: str, dest: str) -> None:
    """Make DEST a symlink to a realization's files and a garbage-collector root: `nixlet
    gc` keeps it (and what it was built from) while the link exists."""
    r = resolve_rref(ctx, ref, "link")
    click.echo(str(nixlet.linkrref(r, dest, store=state(ctx).store())))


def _is_remote(location: str) -> bool:
    """rsync's rule, which ``sync`` follows: ``host:path`` has a colon before any slash."""
    head = location.split("/", 1)[0]
    return ":" in head


@cli.command()
@click.argument("src")
@click.argument("dst")
@click.argument("refs", nargs=-1, shell_complete=REF, metavar="[REF]...")
@json_option
@click.pass_context
def sync(ctx: click.Context, src: str, dst: str, refs: tuple[str, ...], as_json: bool) -> None:
    """Copy the closure of REFs (default: everything) from the store SRC into the store
    DST; either may be host:path (over ssh, with rsync). Abbreviated REFs are resolved in
    SRC when it is local; give full refs for a remote SRC."""
    wanted: list[nixlet.DRef | nixlet.RRef | str] | None = None
    if refs:
        wanted = list(refs) if _is_remote(src) else [nixlet.resolve_ref(r, store=src) for r in refs]
    with progress(f"syncing {src} -> {dst}"):
        report = nixlet.sync(src, dst, wanted)
    if as_json:
        emit_json(
            {
                "published": [str(r) for r in report.published],
                "present": [str(r) for r in report.present],
                "files": report.files,
                "bytes": report.nbytes,
            }
        )
        return
    click.echo(
        f"published {len(report.published)} realizations, {len(report.present)} already "
        f"there; {report.files} files, {hs(report.nbytes)} transferred"
    )


@cli.command()
@click.argument("archive", type=click.Path(dir_okay=False))
@click.argument("refs", nargs=-1, required=True, shell_complete=REF, metavar="REF...")
@json_option
@click.pass_context
def export(ctx: click.Context, archive: str, refs: tuple[str, ...], as_json: bool) -> None:
    """Write the closure of REFs to ARCHIVE (.tar, .tar.gz, .tar.zst), for `nixlet
    import` in another store."""
    store = state(ctx).store()
    resolved = [resolve(ctx, r) for r in refs]
    with progress(f"exporting to {archive}"):
        report = nixlet.export(resolved, archive, store=store)
    if as_json:
        emit_json(
            {
                "archive": str(report.archive),
                "refs": [str(r) for r in report.refs],
                "derivations": [str(d) for d in report.derivations],
                "realizations": [str(r) for r in report.realizations],
                "size": report.size,
            }
        )
        return
    click.echo(
        f"wrote {report.archive}: {len(report.derivations)} derivations, "
        f"{len(report.realizations)} realizations, {hs(report.size)}"
    )


@cli.command("import")
@click.argument("archive", type=click.Path(dir_okay=False, exists=True))
@json_option
@click.pass_context
def import_(ctx: click.Context, archive: str, as_json: bool) -> None:
    """Publish what ARCHIVE (made by `nixlet export`) holds in the store, after checking
    every object; what the store holds already is skipped."""
    store = state(ctx).store()
    with progress(f"importing {archive}"):
        report = nixlet.import_(archive, store=store)
    if as_json:
        emit_json(
            {
                "archive": str(report.archive),
                "refs": [str(r) for r in report.refs],
                "added": [str(r) for r in report.added],
                "skipped": [str(r) for r in report.skipped],
            }
        )
        return
    click.echo(f"added {len(report.added)} realizations, {len(report.skipped)} already there")
