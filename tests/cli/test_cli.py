"""Each command of ``nixlet`` on a real store (click's CliRunner, in this process): the
human output, ``--json`` checked against the library's own answers, abbreviated refs, and
the one-line errors and exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nixlet as nx
from cli_pipeline import Built, lines, run


def test_init_makes_a_store_and_leaves_one_alone(tmp_path: Path) -> None:
    """``init PATH`` makes a store (printing its folder); again, it changes nothing."""
    where = tmp_path / "new-store"
    first = run(None, "init", str(where))
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == str(where)
    assert (where / "format").is_file()
    again = run(None, "init", str(where))
    assert again.exit_code == 0 and nx.alldrefs(store=where) == []


def test_init_with_store_option(tmp_path: Path) -> None:
    """``--store PATH init`` makes the store --store names."""
    where = tmp_path / "s2"
    assert run(where, "init").exit_code == 0
    assert nx.allrrefs(store=where) == []


def test_ls_lists_derivations(built: Built) -> None:
    """``ls`` lists every derivation with its name and number of realizations; --json
    agrees with alldrefs and drefrrefs, and each short form resolves to its ref."""
    result = run(built.store, "ls", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["ref"] for r in rows] == [str(d) for d in nx.alldrefs()]
    for row in rows:
        assert set(row) == {"ref", "short", "name", "realizations"}
        assert row["realizations"] == len(nx.drefrrefs(row["ref"]))
        assert str(nx.resolve_ref(row["short"])) == row["ref"]
    human = run(built.store, "ls")
    assert human.exit_code == 0
    assert sorted(lines(human)) == sorted(
        f"{r['short']}  {r['name']}  {r['realizations']} realization"
        + ("" if r["realizations"] == 1 else "s")
        for r in rows
    )


def test_ls_of_a_derivation_lists_its_realizations_oldest_first(built: Built) -> None:
    """``ls DREF`` lists its realizations, oldest build first, with their build times."""
    short = nx.short_ref(built.train1)
    rows = json.loads(run(built.store, "ls", short, "--json").stdout)
    assert sorted(r["ref"] for r in rows) == [str(r) for r in nx.drefrrefs(built.train1)]
    finished = [r["finished"] for r in rows]
    assert finished == sorted(finished)
    for row in rows:
        start, end = nx.rreftimes(row["ref"])
        assert row["finished"].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(end)))
        assert nx.resolve_ref(row["short"]) == nx.RRef.parse(row["ref"])
    assert len(lines(run(built.store, "ls", short))) == 2


def test_ls_of_a_realization_lists_its_files(built: Built) -> None:
    """``ls RREF`` lists its files as lsref does; ``-r`` at every depth (rreffiles)."""
    assert lines(run(built.store, "ls", str(built.data_rref))) == nx.lsref(built.data_rref)
    deep = json.loads(run(built.store, "ls", "-r", "--json", str(built.data_rref)).stdout)
    assert deep == [{"path": "data/numbers.json"}]
    assert lines(run(built.store, "ls", str(built.runs1[0]))) == ["score.txt", "seed.txt"]


def test_cat_prints_a_file_by_abbreviated_ref(built: Built) -> None:
    """``cat REF PATH`` prints the file, the ref given by a start of its hash, with or
    without the rref: tag, and a path with sub-folders."""
    rref = built.runs2[0]
    short = nx.short_ref(rref)
    for text in (short, "rref:" + short, str(rref)):
        result = run(built.store, "cat", text, "score.txt")
        assert result.exit_code == 0, result.output
        assert result.stdout == nx.catref(rref, "score.txt") == "2.0"
    data = run(built.store, "cat", nx.short_ref(built.data_rref), "data/numbers.json")
    assert json.loads(data.stdout) == list(range(10))


def test_cat_of_a_derivation_names_its_realizations(built: Built) -> None:
    """``cat DREF`` is refused in one line that names the derivation's realizations."""
    result = run(built.store, "cat", nx.short_ref(built.train1), "score.txt")
    assert result.exit_code == 1
    assert result.stderr.startswith("nixlet: error: cat needs a realization")
    assert all(nx.short_ref(r) in result.stderr for r in built.runs1)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["cat", "zzzzzz", "x"], "no derivation or realization in the store"),
        (["cat", "rref:zzzzzz", "x"], "no realization in the store"),
        (["show", "dref:zzzz"], "no derivation in the store"),
        (["show", "zz"], "too short"),
        (["show", "not/a/ref"], "not a reference"),
        (["ls", "dref:" + "z" * 32 + "-gone"], "is not in the store"),
    ],
)
def test_unknown_refs_are_one_line_errors(built: Built, args: list[str], says: str) -> None:
    """An unknown, too short or malformed ref: one line on stderr, exit status 1."""
    result = run(built.store, *args)
    assert result.exit_code == 1
    assert result.stderr.startswith("nixlet: error: ") and says in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_an_ambiguous_abbreviation_lists_its_candidates(built: Built) -> None:
    """The four train realizations share their context half: a start of it is
    ambiguous, and the error lists every candidate."""
    prefix = built.runs1[0].rhash[:6]
    result = run(built.store, "show", prefix)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"nixlet: error: {prefix!r} is ambiguous")
    for r in built.runs1 + built.runs2:
        assert str(r) in result.stderr


def test_a_bad_path_is_one_line(built: Built) -> None:
    """A file a realization does not have, a folder, a path leaving it: one line each."""
    short = nx.short_ref(built.data_rref)
    for path, says in [("nope.txt", "has no file"), ("data", "is a folder"), ("../x", "plain")]:
        result = run(built.store, "cat", short, path)
        assert result.exit_code == 1, path
        assert says in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_missing_store_is_one_line(tmp_path: Path) -> None:
    """``--store`` naming no store: one line, and no store is made there."""
    where = tmp_path / "nowhere"
    result = run(where, "ls")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"nixlet: error: no nixlet store at {where}")
    assert "nixlet init" in result.stderr
    assert not where.exists()


def test_show_a_realization(built: Built) -> None:
    """``show RREF --json``: its derivation, config, context, build times, sizes and
    files, each as the library says."""
    rref = built.runs1[1]
    info = json.loads(run(built.store, "show", nx.short_ref(rref), "--json").stdout)
    assert info["ref"] == str(rref) and info["kind"] == "realization"
    assert info["derivation"] == str(built.train1)
    assert info["config"] == nx.drefcfg(built.train1).to_dict()
    assert info["context"] == {str(built.data): [str(built.data_rref)]}
    assert info["files"] == nx.rreffiles(rref) == ["score.txt", "seed.txt"]
    assert info["size"] == nx.refsize(rref) == nx.du()[built.train1][1][rref]
    assert info["closure_size"] == nx.refsize(rref) + nx.refsize(built.data_rref)
    assert info["started"] <= info["finished"]
    human = run(built.store, "show", str(rref)).stdout
    assert str(built.data_rref) in human and '"lr": 0.1' in human and "seed.txt" in human


def test_show_a_derivation(built: Built) -> None:
    """``show DREF --json``: config, direct dependencies, realizations and sizes."""
    info = json.loads(run(built.store, "show", str(built.train2), "--json").stdout)
    assert info["kind"] == "derivation" and info["name"] == "train"
    assert info["dependencies"] == [str(built.data)]
    assert info["realizations"] == [str(r) for r in nx.drefrrefs(built.train2)]
    assert info["size"] == nx.du()[built.train2][0]
    assert info["closure_size"] == info["size"] + nx.refsize(built.data_rref)


def test_show_says_when_a_closure_has_a_hole(built: Built) -> None:
    """After ``rm`` of a dependency, ``show`` still works: the closure size is null."""
    assert run(built.store, "rm", "--force", str(built.data)).exit_code == 0
    info = json.loads(run(built.store, "show", str(built.runs1[0]), "--json").stdout)
    assert info["closure_size"] is None and info["size"] == nx.refsize(built.runs1[0])
    assert "incomplete" in run(built.store, "show", str(built.runs1[0])).stdout


def test_du_lists_sizes_largest_first_with_the_total(built: Built) -> None:
    """``du --json`` is the library's du, largest first, with the total; the human form
    ends with the total."""
    out = json.loads(run(built.store, "du", "--json").stdout)
    usage = nx.du()
    assert out["total"] == sum(size for size, _ in usage.values())
    assert [row["ref"] for row in out["derivations"]] == [
        str(d) for d in sorted(usage, key=lambda d: (-usage[d][0], d))
    ]
    for row in out["derivations"]:
        size, per = usage[nx.DRef.parse(row["ref"])]
        assert row["size"] == size
        assert row["realizations"] == {str(r): n for r, n in per.items()}
    human = lines(run(built.store, "du"))
    assert human[-1].endswith("total") and len(human) == len(usage) + 1
    total_kib = out["total"] / 1024
    assert human[-1].split() == [f"{total_kib:.1f}", "KiB", "total"]


def test_du_closure(built: Built) -> None:
    """``du --closure REF`` is refsize with and without ``closure``."""
    rref = built.runs2[1]
    out = json.loads(run(built.store, "du", "--closure", nx.short_ref(rref), "--json").stdout)
    assert out == {
        "ref": str(rref),
        "size": nx.refsize(rref),
        "closure_size": nx.refsize(rref, closure=True),
    }
    assert out["closure_size"] == out["size"] + nx.refsize(built.data_rref)


def test_find_by_stage_name_and_file(built: Built) -> None:
    """``find --stage`` filters by derivation name (a glob), ``--name`` by file name."""
    trains = json.loads(run(built.store, "find", "--stage", "tr*", "--json").stdout)
    assert sorted(r["ref"] for r in trains) == sorted(str(r) for r in built.runs1 + built.runs2)
    assert all(set(r) == {"ref", "short", "name", "started", "finished"} for r in trains)
    files = json.loads(run(built.store, "find", "--name", "*.json", "--json").stdout)
    assert [(f["ref"], f["path"]) for f in files] == [(str(built.data_rref), "data/numbers.json")]
    assert run(built.store, "find", "--stage", "nothing").stdout == ""
    assert len(lines(run(built.store, "find"))) == 5


def test_find_by_build_time(built: Built) -> None:
    """``--since`` and ``--until`` compare with build finish times: ages and dates."""
    assert len(json.loads(run(built.store, "find", "--since", "1h", "--json").stdout)) == 5
    assert json.loads(run(built.store, "find", "--until", "1h", "--json").stdout) == []
    assert json.loads(run(built.store, "find", "--since", "2999-01-01", "--json").stdout) == []
    assert len(json.loads(run(built.store, "find", "--until", "2999-01-01", "--json").stdout)) == 5
    bad = run(built.store, "find", "--since", "yesterday-ish")
    assert bad.exit_code == 2 and "not a date" in bad.stderr


def test_diff_of_derivations_and_realizations(built: Built) -> None:
    """``diff --json`` is the library's diff: configs of two derivations; configs and
    files of two realizations."""
    out = json.loads(
        run(built.store, "diff", str(built.train1), str(built.train2), "--json").stdout
    )
    assert out["config"] == {"added": {}, "removed": {}, "changed": {"/lr": [0.1, 0.2]}}
    a, b = built.runs1[0], built.runs2[0]
    out = json.loads(run(built.store, "diff", nx.short_ref(a), nx.short_ref(b), "--json").stdout)
    expected = nx.diff(a, b)
    assert out["files"] == expected.files.to_json()
    assert set(out["files"]["changed"]) == {"score.txt", "seed.txt"}
    assert out["context"] == {"added": {}, "removed": {}, "changed": {}}
    human = run(built.store, "diff", str(a), str(b)).stdout
    assert "~ /lr: 0.1 -> 0.2" in human and "~ score.txt: file 3 B" in human
    same = run(built.store, "diff", str(a), str(a))
    assert same.stdout == "no difference\n"


def test_diff_refuses_a_derivation_against_a_realization(built: Built) -> None:
    """One line, exit 1."""
    result = run(built.store, "diff", str(built.train1), str(built.runs1[0]))
    assert result.exit_code == 1 and "two derivations or two realizations" in result.stderr


def test_rm_removes_by_abbreviation(built: Built) -> None:
    """``rm`` removes each ref it is given, abbreviated; all are resolved first, so an
    unknown one removes nothing."""
    a, b = built.runs1
    bad = run(built.store, "rm", nx.short_ref(a), "zzzzzz")
    assert bad.exit_code == 1 and nx.drefrrefs(built.train1) == sorted([a, b])
    short_a = nx.short_ref(a)
    result = run(built.store, "rm", short_a)
    assert result.exit_code == 0 and result.stdout == f"removed {a}\n"
    assert nx.drefrrefs(built.train1) == [b]
    assert run(built.store, "rm", str(built.train2)).exit_code == 0
    assert built.train2 not in nx.alldrefs()


def test_rm_refuses_what_others_depend_on_unless_forced(built: Built) -> None:
    """``rm`` of a realization others were built from: one line, nothing removed;
    ``rm --force`` removes it."""
    short = nx.short_ref(built.data_rref)
    refused = run(built.store, "rm", short)
    assert refused.exit_code == 1 and refused.stderr.startswith("nixlet: error: ")
    assert len(refused.stderr.splitlines()) == 1
    assert nx.drefrrefs(built.data) == [built.data_rref]
    assert run(built.store, "rm", "-f", short).exit_code == 0
    assert nx.drefrrefs(built.data) == []


def test_gc_keeps_roots_and_links(store: nx.Store, tmp_path: Path) -> None:
    """``gc --dry-run --json`` reports without removing; ``--keep`` and ``link`` roots
    survive a real gc, with what they were built from; the rest goes. The pipeline is
    realized in another process that has ended: a live process's results are roots."""
    tests = Path(__file__).resolve().parent.parent
    code = (
        f"import sys; sys.path.insert(0, {str(tests)!r}); import nixlet as nx\n"
        "from cli_pipeline import realize_pipeline\n"
        "realize_pipeline(nx.store_initialize(sys.argv[1]))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(store.root)], check=True, timeout=120)
    lr = {d: nx.drefcfg(d).to_dict().get("lr") for d in nx.alldrefs()}
    (train1,) = [d for d, v in lr.items() if v == 0.1]
    (train2,) = [d for d, v in lr.items() if v == 0.2]
    (data_rref,) = [r for r in nx.allrrefs() if r.name == "data"]
    keep, linked_rref = nx.drefrrefs(train2)[0], nx.drefrrefs(train1)[1]
    linked = tmp_path / "best"
    made = run(store, "link", nx.short_ref(linked_rref), str(linked))
    assert made.exit_code == 0 and made.stdout.strip() == str(linked)
    assert (linked / "score.txt").read_text() == "1.0"
    doomed = sorted(str(r) for r in [nx.drefrrefs(train1)[0], nx.drefrrefs(train2)[1]])
    dry = run(store, "gc", "--dry-run", "--keep", nx.short_ref(keep), "--json")
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True and sorted(report["rrefs"]) == doomed
    assert report["drefs"] == [] and report["bytes"] > 0
    assert len(nx.allrrefs()) == 5  # a dry run removes nothing
    real = run(store, "gc", "--keep", nx.short_ref(keep))
    assert real.exit_code == 0 and lines(real)[-1].startswith("removed 2 realizations")
    assert sorted(lines(real)[:-1]) == [f"removed {r}" for r in doomed]
    assert nx.allrrefs() == sorted([data_rref, linked_rref, keep])


def test_link_of_a_derivation_is_refused(built: Built, tmp_path: Path) -> None:
    """``link DREF`` names the derivation's realizations, in one line."""
    result = run(built.store, "link", nx.short_ref(built.train1), str(tmp_path / "x"))
    assert result.exit_code == 1 and "link needs a realization" in result.stderr


def test_shell_runs_in_the_ref_folder(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    """``shell REF`` runs $SHELL in the realization's folder and exits with its status."""
    script = built.store.root.parent / "fake-shell"
    script.write_text('#!/bin/sh\nls > "$OUT"\nexit 3\n')
    script.chmod(0o755)
    out = built.store.root.parent / "listing"
    monkeypatch.setenv("SHELL", str(script))
    monkeypatch.setenv("OUT", str(out))
    result = run(built.store, "shell", nx.short_ref(built.runs1[0]))
    assert result.exit_code == 3
    assert out.read_text().split() == ["score.txt", "seed.txt"]


def test_version_and_help() -> None:
    """``--version`` and ``--help`` work without a store."""
    assert nx.__version__ in run(None, "--version").stdout
    assert "find" in run(None, "--help").stdout
