"""The docs' examples are real: every ```python block of docs/*.md runs here.

One test per markdown file: its blocks run in order, in one namespace, in a fresh store
(``NIXLET_STORE`` in a temporary folder, which is also the working directory). The pages a
newcomer runs first (quick start, tutorial, how-to) also run twice in one process, beside a
default store that holds other work, from a working directory that must stay empty: each
makes its own store with ``tempfile.mkdtemp()``, which lands in the test's folder. Each block is
compiled against the markdown file itself, with its own line numbers, so a traceback points
at the line of the doc, and ``inspect.getsource`` (which the code fingerprint uses) finds the
functions the doc defines. Blocks that must not run use another fence tag (text, console,
bash).

reference.md is also checked against ``nixlet.__all__``: every public name has an entry,
every entry is a public name, and a signature line under an entry matches the real one.
"""

from __future__ import annotations

import inspect
import os
import re
import tempfile
from pathlib import Path

import pytest

import nixlet
from nixlet.interactive import inplace
from nixlet.store import opening as store_mod

DOCS = Path(__file__).resolve().parent.parent / "docs"
#: Every page of docs/, and the README, whose example is the first code a user reads.
MARKDOWN = [*sorted(DOCS.glob("*.md")), DOCS.parent / "README.md"]
REFERENCE = DOCS / "reference.md"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<tag>[^\s`]*)")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python blocks of a markdown text: (line number of the first code line, code).

    Raises:
        ValueError: a fence that looks like Python but would not run (indented, or tagged
            ``py``, ``python3`` ...), or a block left open: better to fail than to skip an
            example silently.
    """
    blocks: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, tag = m.group("fence"), m.group("tag").lower()
        start = i + 1
        end = start
        while end < len(lines) and not re.match(
            rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", lines[end]
        ):
            end += 1
        if end == len(lines):
            raise ValueError(f"line {i + 1}: a ``` block is never closed")
        if tag == "python":
            if m.group("indent"):
                raise ValueError(f"line {i + 1}: an indented ```python block would not run")
            blocks.append((start + 1, "\n".join(lines[start:end]) + "\n"))
        elif tag.startswith("py") or tag in ("ipython", "pycon"):
            raise ValueError(f"line {i + 1}: use ```python (runs) or ```text (does not): {tag!r}")
        i = end + 1
    return blocks


def run_page(md: Path) -> dict[str, object]:
    """Run the ```python blocks of ``md`` in order, in a new namespace; return it."""
    namespace: dict[str, object] = {"__name__": f"docs_{md.stem.replace('-', '_')}"}
    for lineno, code in python_blocks(md.read_text(encoding="utf-8")):
        # Leading newlines keep the doc's line numbers in tracebacks and for getsource.
        exec(compile("\n" * (lineno - 1) + code, str(md), "exec"), namespace)
    return namespace


@pytest.fixture
def page_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where ``tempfile.mkdtemp()`` makes the folders a page asks for (its own stores):
    inside the test's folder, so that runs leave nothing behind in the system's /tmp."""
    folder = tmp_path / "tempdir"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.parametrize("md", MARKDOWN, ids=[p.name for p in MARKDOWN])
def test_examples_run(
    md: Path, tmp_path: Path, page_tmpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ```python block of the page runs, in order, in a fresh default store."""
    monkeypatch.setenv("NIXLET_STORE", str(tmp_path / "store"))
    store_mod.reset_default()
    inplace._managers.clear()
    monkeypatch.chdir(tmp_path)
    run_page(md)


#: The pages a newcomer runs as they are, on a machine whose store may be in use: each makes
#: its own store in a new temporary folder and writes nothing in the current folder.
SELF_CONTAINED = [DOCS / "quickstart.md", DOCS / "tutorial.md", DOCS / "howto.md"]


def _note(b: nixlet.Build) -> None:
    """The build of the user's own work, already in their store before a page runs."""
    (nixlet.build_outpath(b) / "note.txt").write_text("the user's own work")


def _users_stage(m: nixlet.Manager) -> nixlet.DRef:
    """The user's own stage."""
    return nixlet.mkdrv(m, {"name": "mine"}, nixlet.match_only(), nixlet.build_wrapper(_note))


@pytest.mark.parametrize("md", SELF_CONTAINED, ids=[p.name for p in SELF_CONTAINED])
def test_a_page_runs_twice_beside_a_used_store(
    md: Path, tmp_path: Path, page_tmpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user runs the page twice in one session, on a machine whose default store already
    holds work of theirs, from a folder of their own: both runs pass, the default store is
    left as it was, and the current folder stays empty."""
    users_store = tmp_path / "store"
    monkeypatch.setenv("NIXLET_STORE", str(users_store))
    mine = nixlet.realize(nixlet.instantiate(_users_stage, store=nixlet.store_initialize()))
    before = sorted(users_store.rglob("*"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    stores = [run_page(md)["store"], run_page(md)["store"]]
    assert os.listdir(cwd) == []
    assert sorted(users_store.rglob("*")) == before
    assert nixlet.allrrefs(store=users_store) == [mine]
    # Each run made a store of its own, in a new temporary folder.
    roots = [s.root for s in stores if isinstance(s, nixlet.Store)]
    assert len(set(roots)) == 2 and all(r.is_relative_to(page_tmpdir) for r in roots)


def test_the_harness_refuses_blocks_it_would_skip() -> None:
    assert python_blocks("a\n```python\nx = 1\n```\n```text\ny\n```\n") == [(3, "x = 1\n")]
    for bad in ("  ```python\nx\n  ```\n", "```py\nx\n```\n", "```python\nx\n"):
        with pytest.raises(ValueError):
            python_blocks(bad)


# ---------------------------------------------------------------- reference.md


_ENTRY = re.compile(r"^#{3,4} `(?P<name>[A-Za-z_][A-Za-z0-9_]*)`[ \t]*$")


def reference_entries() -> dict[str, str | None]:
    """Each entry heading of reference.md, with the signature line under it if any."""
    lines = REFERENCE.read_text(encoding="utf-8").splitlines()
    entries: dict[str, str | None] = {}
    for i, line in enumerate(lines):
        m = _ENTRY.match(line)
        if m is None:
            continue
        name = m.group("name")
        assert name not in entries, f"reference.md documents {name} twice"
        following = next((x for x in lines[i + 1 :] if x.strip()), "")
        sig = re.fullmatch(rf"`{name}(\(.*\))(?: -> .*)?`", following.strip())
        entries[name] = sig.group(1) if sig else None
    return entries


def test_reference_documents_every_public_name() -> None:
    entries = reference_entries()
    missing = sorted(set(nixlet.__all__) - set(entries))
    stale = sorted(set(entries) - set(nixlet.__all__))
    assert not missing, f"reference.md has no entry for {missing}"
    assert not stale, f"reference.md documents names that nixlet does not export: {stale}"


def _split_params(text: str) -> list[str]:
    inner, parts, depth, cur = text[1:-1], [], 0, ""
    for ch in inner:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def _documented(param: str) -> tuple[str, str | None]:
    """``"n: int = 1"`` -> ``("n", "1")``; ``"*"`` -> ``("*", None)``."""
    head, _, default = param.partition("=")
    name = head.split(":")[0].strip()
    return name, default.strip() or None


def _actual(obj: object) -> list[tuple[str, str | None]]:
    params = list(inspect.signature(obj).parameters.values())  # type: ignore[arg-type]
    out: list[tuple[str, str | None]] = []
    star_done = False
    for i, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not star_done:
            out.append(("*", None))
            star_done = True
        prefix = "*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else ""
        if p.kind is p.VAR_POSITIONAL:
            star_done = True
        default = None if p.default is p.empty else repr(p.default)
        out.append((prefix + p.name, default))
        if p.kind is p.POSITIONAL_ONLY and (
            i + 1 == len(params) or params[i + 1].kind is not p.POSITIONAL_ONLY
        ):
            out.append(("/", None))
    return out


def test_reference_signatures_match_the_code() -> None:
    checked = 0
    for name, sig in reference_entries().items():
        if sig is None or name not in nixlet.__all__:
            continue
        documented = [_documented(p) for p in _split_params(sig)]
        assert documented == _actual(getattr(nixlet, name)), f"reference.md: {name}{sig}"
        checked += 1
    assert checked >= 40  # most entries are callables with a signature line


# ---------------------------------------------------------------- links between pages


_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def _anchors(md: Path) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces to hyphens."""
    anchors = set()
    in_fence = False
    for line in md.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (m := re.match(r"^#{1,6} (.*)$", line)):
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("md", MARKDOWN, ids=[p.name for p in MARKDOWN])
def test_links_between_pages_resolve(md: Path) -> None:
    for m in _LINK.finditer(md.read_text(encoding="utf-8")):
        target = m.group("target")
        if re.match(r"^[a-z]+:", target):
            continue  # an outside address
        page, _, anchor = target.partition("#")
        path = (md.parent / page).resolve() if page else md
        assert path.exists(), f"{md.name}: broken link {target}"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{md.name}: no heading for {target}"
