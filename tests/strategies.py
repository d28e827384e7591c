"""Shared hypothesis strategies and small stages for the unit and property tests.

Strategies: JSON config values, valid and hostile derivation names, well-formed and hostile
reference strings, and random DAGs of stages. Stages: build functions that count their builds
in a log file *outside* the store (in-memory counters would be part of the code fingerprint),
and a scripted build that writes a file tree taken from a queue file, so that a test decides
what each successive build of one derivation outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
from hypothesis import strategies as st

import nixlet as nx

# ---------------------------------------------------------------- an independent oracle

#: The grammar of names and refs, written down again from the spec (not imported).
NAME_ALPHABET = string.ascii_letters + string.digits + "._+-"
HASH_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_NAME = f"[{re.escape(NAME_ALPHABET)}]{{1,64}}"
_HASH = "[a-z2-7]{32}"
DREF_ORACLE = re.compile(f"dref:{_HASH}-({_NAME})", re.ASCII)
RREF_ORACLE = re.compile(f"rref:{_HASH}-{_HASH}-({_NAME})", re.ASCII)


def valid_dref_text(text: str) -> bool:
    """Whether ``text`` is a well-formed ``dref:`` string, by the spec."""
    m = DREF_ORACLE.fullmatch(text)
    return m is not None and ".." not in m.group(1)


def valid_rref_text(text: str) -> bool:
    """Whether ``text`` is a well-formed ``rref:`` string, by the spec."""
    m = RREF_ORACLE.fullmatch(text)
    return m is not None and ".." not in m.group(1)


# ---------------------------------------------------------------- names and refs

names = st.text(alphabet=NAME_ALPHABET, min_size=1, max_size=64).filter(lambda s: ".." not in s)
hashes = st.text(alphabet=HASH_ALPHABET, min_size=32, max_size=32)
drefs = st.builds(nx.DRef, hashes, names)
rrefs = st.builds(nx.RRef, hashes, hashes, names)

#: Names that must be refused: traversal, separators, empty, too long, unicode, NUL.
HOSTILE_NAMES = [
    "",
    "..",
    "...",
    "a..b",
    "../etc",
    "a/b",
    "/abs",
    "a\\b",
    "a b",
    " a",
    "a\n",
    "a\x00b",
    "\x00",
    "caf\u00e9",
    "\u0661\u0662",  # Arabic-Indic digits: unicode \d, not [0-9]
    "\uff41",  # fullwidth 'a'
    "a" * 65,
    "name:x",
    "a*",
    "~user",
    "$HOME",
    "a;rm -rf",
]


def _is_hostile_name(s: str) -> bool:
    return not (re.fullmatch(_NAME, s, re.ASCII) and ".." not in s)


hostile_names = st.one_of(
    st.sampled_from(HOSTILE_NAMES),
    st.text(max_size=70).filter(_is_hostile_name),
    names.map(lambda s: s + "..").filter(lambda s: len(s) <= 64),
    st.text(alphabet=NAME_ALPHABET, min_size=65, max_size=80),
)


@st.composite
def hostile_ref_texts(draw: st.DrawFn) -> str:
    """Strings close to a valid dref:/rref: string, mostly malformed; whether each is
    valid is for ``valid_dref_text``/``valid_rref_text`` to say."""
    good = draw(st.one_of(drefs.map(str), rrefs.map(str)))
    h = draw(hashes)
    mutation = draw(
        st.sampled_from(
            [
                lambda s: "",
                lambda s: s + "\n",
                lambda s: " " + s,
                lambda s: s + "\x00",
                lambda s: s.upper(),
                lambda s: s.replace(":", "", 1),
                lambda s: ("rref:" if s.startswith("dref:") else "dref:") + s[5:],
                lambda s: s[:5] + s[6:],  # hash one char short
                lambda s: s[:5] + "a" + s[5:],  # hash one char long
                lambda s: s[:5] + "1" + s[6:],  # '1' is not base32
                lambda s: s[:5] + "\u00e9" + s[6:],
                lambda s: s + "/x",
                lambda s: s + "/../x",
                lambda s: s.rsplit("-", 1)[0] + "-..",
                lambda s: s.rsplit("-", 1)[0] + "-../../etc",
                lambda s: s.rsplit("-", 1)[0] + "-",
                lambda s: s.rsplit("-", 1)[0] + "-" + "x" * 65,
                lambda s: s.rsplit("-", 1)[0] + "-caf\u00e9",
                lambda s: f"dref:{h}",
                lambda s: f"rref:{h}-{h}",
                lambda s: "dref:" + h + "-a\x00b",
            ]
        )
    )
    text = mutation(good)
    return text


# ---------------------------------------------------------------- config values

#: Strings that cannot be mistaken for a ref or a promise.
plain_text = st.text(max_size=12).filter(
    lambda s: not s.startswith(("dref:", "rref:")) and s != "__promise__"
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    plain_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(plain_text, inner, max_size=4),
    ),
    max_leaves=12,
)
#: Config keys other than the reserved ``name``.
config_keys = plain_text.filter(lambda k: k != "name")


@st.composite
def configs(draw: st.DrawFn, min_size: int = 0) -> dict[str, Any]:
    """A valid config dict: random JSON values under random keys, and maybe a name."""
    d: dict[str, Any] = draw(
        st.dictionaries(config_keys, json_values, min_size=min_size, max_size=6)
    )
    if draw(st.booleans()):
        d["name"] = draw(names)
    return d


def canonical(value: Any) -> bytes:
    """Canonical JSON of a value, written independently of nixlet.hashing."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


# ---------------------------------------------------------------- stages


def log_build(config: dict[str, Any]) -> None:
    """Append one line to the config's ``log`` file (outside the store), if it has one."""
    log = config.get("log")
    if log:
        with open(log, "a") as f:
            f.write(config.get("name", "unnamed") + "\n")


def builds(log: Path, name: str | None = None) -> int:
    """How many builds a log file records (of ``name``, if given)."""
    if not log.exists():
        return 0
    lines = log.read_text().splitlines()
    return len(lines) if name is None else sum(1 for line in lines if line == name)


def counting_build(b: nx.Build) -> None:
    """Write ``value.txt`` (the config's ``value``) into every output and log the build;
    ``random: true`` adds random bytes (a non-deterministic stage); ``fail`` names a file
    whose existence makes the build raise after writing a partial output."""
    c = nx.build_config(b).to_dict()
    log_build(c)
    for i, out in enumerate(nx.build_outpaths(b)):
        (out / "value.txt").write_text(json.dumps(c.get("value")))
        if len(b.outpaths) > 1:
            (out / "index.txt").write_text(str(i))
        if c.get("random"):
            (out / "random.bin").write_bytes(os.urandom(16))
    fail = c.get("fail")
    if fail and os.path.exists(fail):
        raise RuntimeError(f"asked to fail by {fail}")


def stage(
    m: nx.Manager,
    config: dict[str, Any],
    matcher: nx.Matcher | None = None,
    fn: Any = counting_build,
    nouts: int = 1,
    version: str | None = None,
) -> nx.DRef:
    """Declare one derivation built by ``fn`` (``counting_build`` by default)."""
    return nx.mkdrv(
        m,
        config,
        matcher if matcher is not None else nx.match_only(),
        nx.build_wrapper(fn, nouts),
        version=version,
    )


# A file tree spec: a list of entries {"path": "a/b", one of "file": text | "dir": true |
# "symlink": target | "fifo": true, and optionally "exec": true}.
TreeSpec = list[dict[str, Any]]


def make_tree(root: Path, spec: TreeSpec) -> None:
    """Create the entries of ``spec`` under ``root``."""
    for e in spec:
        path = root / e["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        if "file" in e:
            path.write_text(e["file"])
            os.chmod(path, 0o755 if e.get("exec") else 0o644)
        elif "dir" in e:
            path.mkdir(exist_ok=True)
        elif "symlink" in e:
            os.symlink(e["symlink"], path)
        elif "fifo" in e:
            os.mkfifo(path)
        else:
            raise ValueError(f"bad tree entry {e!r}")


def tree_build(b: nx.Build) -> None:
    """Write the next tree of the config's ``queue`` file (a JSON list of tree specs; the
    last one repeats), and log the build."""
    c = nx.build_config(b).to_dict()
    log_build(c)
    queue = Path(c["queue"])
    specs = json.loads(queue.read_text())
    if len(specs) > 1:
        queue.write_text(json.dumps(specs[1:]))
    make_tree(nx.build_outpath(b), specs[0])


def tree_stage(
    m: nx.Manager, tmp: Path, specs: list[TreeSpec], matcher: nx.Matcher | None = None
) -> nx.DRef:
    """A derivation whose successive builds output the trees of ``specs`` in turn."""
    queue = tmp / "queue.json"
    if not queue.exists():
        queue.write_text(json.dumps(specs))
    return stage(
        m,
        {"name": "tree", "queue": str(queue), "log": str(tmp / "log")},
        nx.match_latest() if matcher is None else matcher,
        tree_build,
    )


def push_tree(tmp: Path, spec: TreeSpec) -> None:
    """Make ``spec`` the tree the next build of ``tree_stage`` writes."""
    (tmp / "queue.json").write_text(json.dumps([spec]))


# ---------------------------------------------------------------- store snapshots


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[Any, ...]]:
    """Every path under ``root`` (except top-level names in ``skip``) with its kind, mode,
    size, mtime and content (bytes of files, targets of symlinks)."""
    out: dict[str, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        if rel_folder == ".":
            dirs[:] = [d for d in dirs if d not in skip]
            files = [f for f in files if f not in skip]
        for name in sorted(dirs + files):
            full = os.path.join(folder, name)
            st_ = os.lstat(full)
            rel = os.path.normpath(os.path.join(rel_folder, name))
            if stat.S_ISLNK(st_.st_mode):
                content: Any = os.readlink(full)
            elif stat.S_ISREG(st_.st_mode):
                content = hashlib.sha256(Path(full).read_bytes()).hexdigest()
            else:
                content = None
            out[rel] = (
                stat.S_IFMT(st_.st_mode),
                stat.S_IMODE(st_.st_mode),
                st_.st_size,
                st_.st_mtime_ns,
                content,
            )
    return out


def store_view(store: nx.Store) -> dict[str, tuple[Any, ...]]:
    """What a store shows its readers: everything but staging and lock files."""
    return snapshot(store.root, skip=(".tmp", ".locks"))


# ---------------------------------------------------------------- random DAGs


@attrs.frozen
class Node:
    """One stage of a random DAG: its direct dependencies (indices of earlier stages),
    whether its build is random, its matcher and extra config values."""

    index: int
    deps: tuple[int, ...]
    random: bool
    matcher: str  # "only", "some1" or "some2" (some2 only for random stages)
    extra: dict[str, Any]

    def make_matcher(self) -> nx.Matcher:
        """The matcher object this node uses."""
        if self.matcher == "only":
            return nx.match_only()
        return nx.match_some(int(self.matcher[-1]))


@attrs.frozen
class Dag:
    """A random DAG of stages, in declaration (topological) order."""

    nodes: tuple[Node, ...]

    def ancestors(self, k: int) -> set[int]:
        """Indices of the stages ``k`` depends on, transitively."""
        seen: set[int] = set()
        todo = list(self.nodes[k].deps)
        while todo:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo.extend(self.nodes[i].deps)
        return seen


@st.composite
def dags(draw: st.DrawFn, max_stages: int = 8) -> Dag:
    """A random DAG of 1 to ``max_stages`` stages with random configs and matchers."""
    n = draw(st.integers(1, max_stages))
    nodes = []
    for i in range(n):
        deps = (
            tuple(sorted(draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3))))
            if i
            else ()
        )
        random_ = draw(st.booleans())
        matcher = draw(
            st.sampled_from(["only", "some1", "some2"] if random_ else ["only", "some1"])
        )
        extra = draw(st.dictionaries(config_keys, json_values, max_size=3))
        nodes.append(Node(i, deps, random_, matcher, extra))
    return Dag(tuple(nodes))


def dag_build(b: nx.Build) -> None:
    """A DAG stage: hash the config with the outputs of every chosen upstream realization,
    plus random bytes for a random stage; log the build."""
    c = nx.build_config(b).to_dict()
    log_build(c)
    h = hashlib.sha256(nx.build_config(b).canonical)
    for dep in c["deps"]:
        for rref in nx.build_context(b)[nx.DRef.parse(dep)]:
            h.update((nx.rref2path(rref, store=b.store) / "out.txt").read_bytes())
    if c["random"]:
        h.update(os.urandom(16))
    (nx.build_outpath(b) / "out.txt").write_text(h.hexdigest())


def dag_stage(m: nx.Manager, dag: Dag, log: str, target: int | None = None) -> nx.DRef:
    """Declare every stage of ``dag`` (in order) and return the DRef of ``target``
    (default: the last stage)."""
    refs: list[nx.DRef] = []
    for node in dag.nodes:
        config = dict(node.extra)
        config.update(
            {
                "name": f"s{node.index}",
                "deps": [refs[i] for i in node.deps],
                "random": node.random,
                "log": log,
            }
        )
        refs.append(nx.mkdrv(m, config, node.make_matcher(), nx.build_wrapper(dag_build)))
    return refs[-1 if target is None else target]


def dag_refs(dag: Dag, store: nx.Store, log: str) -> list[nx.DRef]:
    """The DRef of each stage of ``dag``, in order."""
    return [
        nx.instantiate(dag_stage, dag, log, k, store=store).result for k in range(len(dag.nodes))
    ]


def walk_files(root: Path) -> Iterator[Path]:
    """Every path under ``root`` (folders and files, symlinks not followed)."""
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            yield Path(folder) / name


# ---------------------------------------------------------------- a realized diamond


def diamond(m: nx.Manager) -> nx.DRef:
    """a <- b, a <- c, (b, c) <- d: deterministic ``stage``s; a's value is 1000 characters."""
    a = stage(m, {"name": "a", "value": "x" * 1000})
    b = stage(m, {"name": "b", "src": a, "value": 2})
    c = stage(m, {"name": "c", "src": a, "value": 3})
    return stage(m, {"name": "d", "left": b, "right": c, "value": 4})


@attrs.frozen
class Diamond:
    """``diamond``, realized: its DRefs and the one realization of each."""

    a: nx.DRef
    b: nx.DRef
    c: nx.DRef
    d: nx.DRef
    ra: nx.RRef
    rb: nx.RRef
    rc: nx.RRef
    rd: nx.RRef


def realize_diamond() -> Diamond:
    """Realize ``diamond`` in the default store."""
    closure = nx.instantiate(diamond)
    rd = nx.realize(closure)
    a, b, c, d = (x.dref for x in closure.derivations)
    (ra,), (rb,), (rc,) = nx.drefrrefs(a), nx.drefrrefs(b), nx.drefrrefs(c)
    return Diamond(a, b, c, d, ra, rb, rc, rd)
