"""The entry point of the ``nixlet`` command and of ``python -m nixlet``.

click and rich are an optional extra (``nixlet[cli]``): a library user never pays for
them. Without them the command says, in one line, how to get them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click

#: The exit status of a command line that cannot run (as click's usage errors).
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``nixlet`` command with ``argv`` (default: ``sys.argv[1:]``); exit with its
    status.

    Exits 2, after one line on stderr, when click or rich is not installed.
    """
    try:
        import click  # noqa: F401
        import rich  # noqa: F401
    except ImportError as e:
        print(
            f"nixlet: error: the nixlet command needs {e.name or 'click and rich'}: "
            "pip install 'nixlet[cli]'",
            file=sys.stderr,
        )
        sys.exit(EXIT_USAGE)
    try:
        load().main(args=list(argv) if argv is not None else None, prog_name="nixlet")
    except BrokenPipeError:
        # `nixlet ls | head`: the reader left. Point stdout at /dev/null so that the
        # interpreter's final flush does not print a second traceback, and exit as
        # a process killed by SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(128 + 13)


def load() -> click.Group:
    """The ``nixlet`` command group with every command registered (tests drive it with
    click's ``CliRunner``). Imports click: call it only once click is known to be there."""
    from nixlet.cli import changing, looking  # noqa: F401  (importing registers them)
    from nixlet.cli.app import cli

    return cli
