"""docs/cli.md's examples, run for real: every ``$ nixlet ...`` line of its ```console
blocks, in order, as a subprocess, on a store holding the pipeline the page describes.
The page's refs are abbreviations from the run that wrote it; each is replaced by the
short form of the same role here (realization hashes differ from run to run). A line
followed by ``nixlet: error:`` must fail; every other one must succeed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import nixlet as nx
from cli_pipeline import Built, command
from test_docs import DOCS

PAGE = DOCS / "cli.md"


def console_commands(text: str) -> list[tuple[list[str], bool]]:
    """Each ``$ nixlet`` line of the page's ```console blocks, split as a shell would,
    and whether the page shows it failing."""
    found = []
    in_console = False
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_console = line.strip() == "```console"
            continue
        if in_console and line.startswith("$ nixlet "):
            following = lines[i + 1] if i + 1 < len(lines) else ""
            fails = following.startswith("nixlet: error:")
            found.append((shlex.split(line[2:], comments=True), fails))
    return found


def test_every_command_of_the_page_is_shown_and_runs(built: Built, tmp_path: Path) -> None:
    """Every command the page documents is among its examples, and each example runs."""
    text = PAGE.read_text(encoding="utf-8")
    examples = console_commands(text)
    shown = {args[1] if args[1] != "--store" else args[3] for args, _ in examples}
    documented = set(re.findall(r"^## `(\w+)`", text, re.M))
    assert documented <= shown and "import" in shown
    roles: dict[str, str] = {
        "hpvt": nx.short_ref(built.train1),
        "rzs4": nx.short_ref(built.train2),
        "ytvc": nx.short_ref(built.data_rref),
        "pkheyqqernwslrgfg": nx.short_ref(built.runs1[0]),
        "pkheyqqernwslrgfk4y": nx.short_ref(built.runs1[1]),
        "pkheyqqernwslrgfk43": nx.short_ref(built.runs2[0]),
        "pkhe": built.runs1[0].rhash[:4],  # the context half: ambiguous here too
        "lab-store": str(tmp_path / "lab-store"),
        "run.tar.gz": str(tmp_path / "run.tar.gz"),
        "best-model": str(tmp_path / "best-model"),
        "$NIXLET_STORE": str(built.store.root),
    }
    env = {**os.environ, "NIXLET_STORE": str(built.store.root), "SHELL": "/bin/true"}
    for args, fails in examples:
        argv = [roles.get(a, a) for a in args[1:]]
        done = subprocess.run(
            command(*argv), capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
        )
        shown_line = " ".join(args)
        if fails:
            assert done.returncode == 1, shown_line
            assert done.stderr.startswith("nixlet: error:"), shown_line
        else:
            assert done.returncode == 0, f"{shown_line}: {done.stderr}"
    assert nx.allrrefs(store=tmp_path / "lab-store") == sorted([built.data_rref, *built.runs1])
    assert (tmp_path / "best-model" / "score.txt").read_text() == "2.0"
    assert built.runs1[1] not in nx.allrrefs() and built.data_rref in nx.allrrefs()
