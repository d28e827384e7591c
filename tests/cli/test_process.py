"""The real command, in subprocesses: ``python -m nixlet`` and the console script, errors
as one line (a traceback only with ``--debug``), what happens without click, that ``import
nixlet`` does not load the command's dependencies, shell completion through click's
protocol, progress on a terminal and silence in a pipe, sync / export / import."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import nixlet as nx
from cli_pipeline import Built, command, run


def nixlet(store: nx.Store, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m nixlet --store STORE ARGS...``, its output captured."""
    return subprocess.run(
        command("--store", str(store.root), *args),
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_python_m_nixlet_and_the_console_script(built: Built) -> None:
    """``python -m nixlet`` and the installed ``nixlet`` script run the same command."""
    short = nx.short_ref(built.runs1[0])
    done = nixlet(built.store, "cat", short, "score.txt")
    assert done.returncode == 0 and done.stdout == "1.0" and done.stderr == ""
    script = Path(sys.executable).parent / "nixlet"
    assert script.exists(), "pip install -e '.[test]' installs the console script"
    via_script = subprocess.run(
        [str(script), "--store", str(built.store.root), "ls", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert via_script.returncode == 0
    assert [r["ref"] for r in json.loads(via_script.stdout)] == [str(d) for d in nx.alldrefs()]


def test_nixlet_store_environment_variable(built: Built) -> None:
    """``NIXLET_STORE`` chooses the store when ``--store`` is not given."""
    done = subprocess.run(
        command("ls", "--json"),
        capture_output=True,
        text=True,
        env={**os.environ, "NIXLET_STORE": str(built.store.root)},
        timeout=60,
    )
    assert done.returncode == 0
    assert len(json.loads(done.stdout)) == 3


def test_errors_are_one_line_and_debug_shows_the_traceback(built: Built) -> None:
    """A NixletError: one line, exit 1, no traceback; with --debug, the traceback too."""
    plain = nixlet(built.store, "cat", nx.short_ref(built.runs1[0]), "missing.txt")
    assert plain.returncode == 1
    assert plain.stderr.startswith("nixlet: error: ") and len(plain.stderr.splitlines()) == 1
    assert "Traceback" not in plain.stderr and plain.stdout == ""
    debug = nixlet(built.store, "--debug", "cat", nx.short_ref(built.runs1[0]), "missing.txt")
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and "StoreError" in debug.stderr
    assert debug.stderr.splitlines()[-1].startswith("nixlet: error: ")


def test_a_missing_store_in_a_subprocess(tmp_path: Path) -> None:
    """``--store`` naming nothing: one line, exit 1, nothing made."""
    done = subprocess.run(
        command("--store", str(tmp_path / "none"), "du"), capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "nixlet init" in done.stderr and not (tmp_path / "none").exists()


def test_without_click_the_command_says_how_to_install_it() -> None:
    """Without click (or rich), one line naming the extra, and exit status 2."""
    code = (
        "import sys; sys.modules['click'] = None\nfrom nixlet.cli.main import main\nmain(['ls'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "nixlet: error: the nixlet command needs click: pip install 'nixlet[cli]'"
    )


def test_import_nixlet_does_not_import_the_command_line() -> None:
    """``import nixlet`` loads neither click nor rich (nor nixlet.cli): the library stays
    fast without the ``cli`` extra."""
    code = (
        "import sys, nixlet\n"
        "print(sorted(m for m in ('click', 'rich', 'nixlet.cli') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _complete(store: nx.Store, words: str, **env: str) -> list[str]:
    """What bash completion offers for the last word of ``words`` (click's protocol)."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    done = subprocess.run(
        command(),
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "_NIXLET_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(cword),
            **env,
        },
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [line.split(",", 1)[1] for line in done.stdout.splitlines() if line]


def test_completion_offers_refs_of_the_store(built: Built) -> None:
    """A ref argument completes from the store's listings: full refs after a tag, keys
    after the start of a hash; sub-commands complete too."""
    root = str(built.store.root)
    tagged = _complete(built.store, f"nixlet --store {root} show dref:")
    assert sorted(tagged) == [str(d) for d in nx.alldrefs()]
    start = built.runs1[0].rhash[:5]
    keyed = _complete(built.store, f"nixlet --store {root} cat {start}")
    assert sorted(keyed) == sorted(str(r)[5:] for r in built.runs1 + built.runs2)
    everything = _complete(built.store, f"nixlet --store {root} show ")
    assert len(everything) == 3 + 5
    assert "show" in _complete(built.store, "nixlet sh")
    via_env = _complete(built.store, "nixlet ls dref:", NIXLET_STORE=root)
    assert sorted(via_env) == [str(d) for d in nx.alldrefs()]


def test_completion_without_a_store_offers_nothing(tmp_path: Path) -> None:
    """No store: no candidates, and no error (a completion never fails)."""
    store = nx.Store(tmp_path / "absent")
    assert _complete(store, f"nixlet --store {tmp_path / 'absent'} show dref:") == []


def _on_a_terminal(args: list[str]) -> tuple[int, str, bytes]:
    """Run ``args`` with stderr on a pseudo-terminal: (status, stdout, what the terminal
    got)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    out, _ = proc.communicate(timeout=60)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return proc.returncode, out.decode(), seen


def test_sync_shows_progress_on_a_terminal_and_is_quiet_in_a_pipe(
    built: Built, tmp_path: Path
) -> None:
    """A long command (sync) draws a spinner on a terminal's stderr; piped, stderr stays
    empty; stdout holds the same answer either way."""
    dst1, dst2 = tmp_path / "d1", tmp_path / "d2"
    nx.store_initialize(dst1)
    nx.store_initialize(dst2)
    status, out, seen = _on_a_terminal(command("sync", str(built.store.root), str(dst1)))
    assert status == 0 and out.startswith("published 5 realizations")
    assert b"syncing" in seen and b"\x1b[" in seen
    piped = subprocess.run(
        command("sync", str(built.store.root), str(dst2)), capture_output=True, text=True
    )
    assert piped.returncode == 0 and piped.stdout == out and piped.stderr == ""
    assert nx.allrrefs(store=dst1) == nx.allrrefs(store=dst2) == nx.allrrefs(store=built.store)


def test_sync_export_import(built: Built, tmp_path: Path) -> None:
    """``sync`` copies the closure of an abbreviated ref; ``export`` writes an archive
    that ``import`` publishes in another store; --json agrees with the stores."""
    short = nx.short_ref(built.runs2[0])
    short_train1 = nx.short_ref(built.train1)
    dst = nx.store_initialize(tmp_path / "copy")
    synced = json.loads(
        run(None, "sync", str(built.store.root), str(dst.root), short, "--json").stdout
    )
    assert synced["published"] == sorted([str(built.data_rref), str(built.runs2[0])])
    assert nx.allrrefs(store=dst) == sorted([built.data_rref, built.runs2[0]])
    archive = tmp_path / "train1.tar.gz"
    exported = json.loads(run(built.store, "export", str(archive), short_train1, "--json").stdout)
    assert exported["realizations"] == sorted(str(r) for r in [*built.runs1, built.data_rref])
    assert exported["size"] == archive.stat().st_size
    imported = json.loads(run(dst, "import", str(archive), "--json").stdout)
    assert imported["added"] == sorted(str(r) for r in built.runs1)
    assert imported["skipped"] == [str(built.data_rref)]
    again = run(dst, "import", str(archive))
    assert again.exit_code == 0 and again.stdout == "added 0 realizations, 3 already there\n"
