"""nixlet vs pylightnix 0.3.0 vs the floor (plain Python doing the same disk work).

Runs every (library, workload, N, repetition) in its own subprocess (benchmarks/worker.py) and
a fresh temporary store, takes the median over repetitions, prints ONE table with the targets
and a PASS/MISS verdict per row, and writes the same table to benchmarks/results.md.

    python benchmarks/run.py            # full run (~5-10 min, pylightnix N=1000 is most of it)
    python benchmarks/run.py --quick    # N=100,1000 nixlet; N=100 pylightnix; 64 MiB big write

Environment: NIXLET_BENCH_QUICK=1 is --quick, NIXLET_BENCH_SKIP_PLX_1000=1 is --no-plx-1000,
NIXLET_BENCH_TMP=DIR is --tmp DIR. See benchmarks/README.md for workloads, floors and targets.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from common import GC_STORE_REFS, same_filesystem

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "worker.py"
RESULTS_MD = HERE / "results.md"
LIBS = ("nixlet", "pylightnix", "floor")
WORKER_TIMEOUT_S = 1800

# ----------------------------------------------------------------------------------------------
# The plan: which jobs run, how often


@dataclass(frozen=True)
class Job:
    """One (library, workload, N) measured ``reps`` times, each in a fresh subprocess and store."""

    lib: str
    workload: str
    n: int
    reps: int
    file_bytes: int = 0


@dataclass(frozen=True)
class Plan:
    """Sizes of one run; ``quick`` shrinks them."""

    chain_ns: tuple[int, ...]
    plx_chain_ns: tuple[int, ...]
    fanin_n: int = 1000
    nondet_k: int = 200
    big_files: int = 16
    big_file_bytes: int = 64 << 20
    sync_n: int = 10000
    quick: bool = False
    gc_store_refs: int = GC_STORE_REFS
    gc_realizations: int = 10000


def make_plan(quick: bool, skip_plx_1000: bool) -> Plan:
    """The full plan, or the quick one (--quick), optionally without pylightnix N=1000."""
    if quick:
        return Plan((100, 1000), (100,), big_file_bytes=4 << 20, sync_n=1000, quick=True)
    return Plan((100, 1000, 10000), (100,) if skip_plx_1000 else (100, 1000))


def reps_for(lib: str, workload: str, n: int) -> int:
    """Medians over a few repetitions where cheap, single runs where expensive."""
    if workload in ("gcstore", "gc10k"):
        return 1 if lib == "pylightnix" else 3  # each fill takes 10-30 s
    if lib == "pylightnix":
        return 3 if (workload != "chain" or n <= 100) and workload != "big" else 1
    if workload == "chain":
        return 5 if n <= 100 else 3
    return 5 if workload == "big" else 3


def make_jobs(plan: Plan) -> list[Job]:
    """Every job of ``plan``, grouped by (workload, N): a group's repetitions are interleaved."""
    jobs: list[Job] = []

    def add(workload: str, n: int, libs: Iterable[str], file_bytes: int = 0) -> None:
        for lib in libs:
            jobs.append(Job(lib, workload, n, reps_for(lib, workload, n), file_bytes))

    for n in plan.chain_ns:
        add("chain", n, ["floor", "nixlet"] + (["pylightnix"] if n in plan.plx_chain_ns else []))
    add("fanin", plan.fanin_n, ["floor", "nixlet", "pylightnix"])
    add("nondet", plan.nondet_k, ["floor", "nixlet", "pylightnix"])
    add("big", plan.big_files, ["floor", "nixlet", "pylightnix"], plan.big_file_bytes)
    add("gcstore", plan.gc_store_refs, ["floor", "nixlet", "pylightnix"])
    add("gc10k", plan.gc_realizations, ["floor", "nixlet"])
    add("sync", plan.sync_n, ["floor", "nixlet"])  # pylightnix has no sync
    return jobs


# ----------------------------------------------------------------------------------------------
# Running jobs


@dataclass
class Outcome:
    """Median metrics of a job, or the error that stopped it."""

    job: Job
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def run_once(job: Job, tmp: Path) -> dict[str, float]:
    """One repetition of ``job`` in its own subprocess; RuntimeError (with stderr) on failure."""
    fd, out_name = tempfile.mkstemp(prefix="nixlet-bench-", suffix=".json", dir=tmp)
    os.close(fd)
    out = Path(out_name)
    cmd = [sys.executable, str(WORKER), "--lib", job.lib, "--workload", job.workload,
           "--n", str(job.n), "--file-bytes", str(job.file_bytes), "--tmp", str(tmp),
           "--out", str(out)]
    os.sync()  # do not let the previous job's write-back leak into this one's timings
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S,
                              cwd=HERE)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip()[-3000:] or f"exit {proc.returncode}")
        result: dict[str, float] = json.loads(out.read_text())
        return result
    finally:
        out.unlink(missing_ok=True)


def run_group(group: list[Job], tmp: Path, log: Callable[[str], None]) -> list[Outcome]:
    """All repetitions of the jobs of one (workload, N), interleaved round by round
    (floor, nixlet, pylightnix, floor, ...) so that a change in the machine's load hits every
    contender alike; the median of each metric (store sizes come from the last repetition)."""
    samples: dict[Job, list[dict[str, float]]] = {job: [] for job in group}
    errors: dict[Job, str] = {}
    for rep in range(max(job.reps for job in group)):
        for job in group:
            if rep >= job.reps or job in errors:
                continue
            tag = f"  {job.lib:<10} {job.workload:<6} N={job.n:<6} rep {rep + 1}/{job.reps}"
            try:
                samples[job].append(run_once(job, tmp))
            except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as exc:
                log(f"{tag}: FAILED")
                errors[job] = str(exc)
                continue
            shown = ", ".join(f"{k}={v:.3f}s" for k, v in samples[job][-1].items()
                              if not k.startswith("store_"))
            log(f"{tag}: {shown}")
    return [Outcome(job, error=errors[job]) if job in errors else median_outcome(job, samples[job])
            for job in group]


def median_outcome(job: Job, samples: list[dict[str, float]]) -> Outcome:
    """Medians of the timings; the store size of the last repetition."""
    metrics = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
    metrics.update({k: v for k, v in samples[-1].items() if k.startswith("store_")})
    return Outcome(job, metrics)


def groups(jobs: list[Job]) -> list[list[Job]]:
    """Consecutive jobs of the same (workload, N)."""
    out: list[list[Job]] = []
    for job in jobs:
        if out and (out[-1][0].workload, out[-1][0].n) == (job.workload, job.n):
            out[-1].append(job)
        else:
            out.append([job])
    return out


# ----------------------------------------------------------------------------------------------
# Rows, targets and the table


@dataclass(frozen=True)
class Row:
    """One line of the table: one metric of one workload at one N."""

    workload: str
    label: str
    metric: str
    n: int
    shows_store: bool = False


Results = dict[tuple[str, str, int], Outcome]  # (lib, workload, n) -> outcome


def value(results: Results, lib: str, row: Row, metric: str | None = None) -> float | None:
    """The median figure of ``lib`` for ``row`` (or another metric of the same job)."""
    outcome = results.get((lib, row.workload, row.n))
    if outcome is None or outcome.error is not None:
        return None
    return outcome.metrics.get(metric or row.metric)


def make_rows(plan: Plan) -> list[Row]:
    """The table's rows, in print order."""
    rows: list[Row] = []
    for n in plan.chain_ns:
        rows += [Row("chain", "chain: instantiate", "instantiate", n),
                 Row("chain", "chain: realize (first)", "realize", n),
                 Row("chain", "chain: realize (cached)", "cached", n, shows_store=True)]
    rows += [Row("fanin", "fan-in: instantiate", "instantiate", plan.fanin_n),
             Row("fanin", "fan-in: realize", "realize", plan.fanin_n, shows_store=True),
             Row("nondet", f"non-det: {plan.nondet_k} forced realizes", "forced", plan.nondet_k),
             Row("nondet", "non-det: match_best realize", "best", plan.nondet_k)]
    size = human_bytes(plan.big_files * plan.big_file_bytes)
    rows.append(Row("big", f"big write: {size} in {plan.big_files} files", "realize",
                    plan.big_files, shows_store=True))
    rows += [Row("gcstore", "store of refs: alldrefs+allrrefs", "list", plan.gc_store_refs),
             Row("gcstore", "store of refs: du", "du", plan.gc_store_refs),
             Row("gcstore", "store of refs: gc (2 roots)", "gc", plan.gc_store_refs),
             Row("gc10k", "realizations: du", "du", plan.gc_realizations),
             Row("gc10k", "realizations: gc (no roots)", "gc", plan.gc_realizations)]
    rows += [Row("sync", "sync to an empty store: local", "local", plan.sync_n),
             Row("sync", "sync to an empty store: ssh", "ssh", plan.sync_n, shows_store=True)]
    return rows


@dataclass(frozen=True)
class Check:
    """A target evaluated on one row: its short name, the figure, and whether it holds."""

    name: str
    figure: str
    ok: bool | None  # None: not measurable in this run


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` or None when either is missing (or b is 0)."""
    return a / b if a is not None and b else None


def checks_for(row: Row, results: Results) -> list[Check]:
    """The targets that apply to ``row``."""
    nx, plx, floor = (value(results, lib, row) for lib in LIBS)
    checks: list[Check] = []
    if (row.workload != "big" and row.metric != "gc"
            and ("pylightnix", row.workload, row.n) in results):
        speedup, reachable = ratio(plx, nx), ratio(plx, floor)
        figure = fmt_x(speedup) + ("" if reachable is None else f" (floor {fmt_x(reachable)})")
        checks.append(Check(">=10x vs plx", figure, None if speedup is None else speedup >= 10))
    if row.workload == "chain" and row.n == 10000:
        small = Row(row.workload, row.label, row.metric, 1000)
        grow = ratio(nx, value(results, "nixlet", small))
        checks.append(Check("t(10k)/t(1k)<=12", fmt_x(grow), None if grow is None else grow <= 12))
        if row.shows_store:
            sgrow = ratio(value(results, "nixlet", row, "store_bytes"),
                          value(results, "nixlet", small, "store_bytes"))
            checks.append(Check("store(10k)/store(1k)<=12", fmt_x(sgrow),
                                None if sgrow is None else sgrow <= 12))
    if row.workload == "chain" and row.n == 1000 and row.metric == "cached":
        checks.append(Check("<0.5s", fmt_s(nx), None if nx is None else nx < 0.5))
    if row.workload == "chain" and row.n == 1000 and row.metric == "realize":
        r = ratio(nx, floor)
        checks.append(Check("<=2x floor", fmt_x(r), None if r is None else r <= 2))
    if row.workload == "big" or row.metric == "gc":
        r = ratio(nx, floor)
        checks.append(Check("<=1.5x floor", fmt_x(r), None if r is None else r <= 1.5))
    if row.workload == "gc10k":
        checks.append(Check("<1s", fmt_s(nx), None if nx is None else nx < 1))
    if row.workload == "sync":
        r = ratio(nx, floor)
        checks.append(Check("<=1.3x rsync -a", fmt_x(r), None if r is None else r <= 1.3))
    return checks


def verdict(checks: list[Check]) -> str:
    """PASS when every target holds, MISS naming the missed ones, '-' when none applies."""
    if not checks:
        return "-"
    missed = [c.name for c in checks if c.ok is False]
    unknown = [c.name for c in checks if c.ok is None]
    if missed:
        return "MISS (" + ", ".join(missed) + ")"
    if unknown:
        return "n/a (" + ", ".join(unknown) + ")"
    return "PASS"


def fmt_s(x: float | None) -> str:
    """Seconds, with enough digits for sub-millisecond figures."""
    if x is None:
        return "-"
    return f"{x:.4f}" if x < 0.1 else f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt_x(x: float | None) -> str:
    """A ratio such as 12.3x."""
    return "-" if x is None else f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def fmt_store(results: Results, lib: str, row: Row) -> str:
    """'<bytes> B / <files> f' of ``lib``'s store after the workload, on rows that show it."""
    if not row.shows_store:
        return ""
    b, f = value(results, lib, row, "store_bytes"), value(results, lib, row, "store_files")
    return "-" if b is None or f is None else f"{int(b):,} B / {int(f):,} f"


HEADER = ["workload", "N", "nixlet s", "pylightnix s", "floor s", "nixlet vs plx",
          "nixlet/floor", "nixlet store", "pylightnix store", "targets", "verdict"]


def failed(results: Results, lib: str, row: Row) -> bool:
    """True when ``lib``'s job for ``row`` ran and failed."""
    outcome = results.get((lib, row.workload, row.n))
    return outcome is not None and outcome.error is not None


def table_cells(rows: list[Row], results: Results) -> list[list[str]]:
    """The table as strings, one list per row (header excluded)."""
    out = []
    for row in rows:
        nx, plx, floor = (value(results, lib, row) for lib in LIBS)
        cell = {lib: "ERR" if failed(results, lib, row) else fmt_s(v)
                for lib, v in zip(LIBS, (nx, plx, floor), strict=True)}
        checks = checks_for(row, results)
        targets = "; ".join(f"{c.name}: {c.figure}" for c in checks)
        out.append([row.label, str(row.n), cell["nixlet"], cell["pylightnix"], cell["floor"],
                    fmt_x(ratio(plx, nx)), fmt_x(ratio(nx, floor)),
                    fmt_store(results, "nixlet", row), fmt_store(results, "pylightnix", row),
                    targets, verdict(checks)])
    return out


def render_text(cells: list[list[str]]) -> str:
    """A fixed-width text table."""
    widths = [max(len(r[i]) for r in [HEADER, *cells]) for i in range(len(HEADER))]
    right = {1, 2, 3, 4, 5, 6, 7, 8}

    def line(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(HEADER), rule, *(line(r) for r in cells)])


def render_markdown(cells: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    align = ["---", *["---:"] * 8, "---", "---"]
    rows = [HEADER, align, *cells]
    return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows)


# ----------------------------------------------------------------------------------------------
# Report


def versions() -> dict[str, str]:
    """Installed versions of the two libraries, read without importing them here."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("nixlet", "pylightnix"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision() -> str:
    """The repository's HEAD commit, with '+ uncommitted changes' when the tree is dirty."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO,
                               text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes in src/" if dirty else "")


def environment_lines(plan: Plan, tmp: Path, load: tuple[float, float]) -> list[str]:
    """What the figures were measured on (``load``: 1-minute load average at start and end)."""
    v = versions()
    fs_note = "same filesystem as the repo" if same_filesystem(tmp, REPO) else "DIFFERENT fs!"
    return [
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- mode: {'quick (--quick)' if plan.quick else 'full'}",
        f"- python {platform.python_version()} on {platform.platform()}, "
        f"{os.cpu_count()} CPUs",
        f"- nixlet {v['nixlet']} at commit {git_revision()}, pylightnix {v['pylightnix']}",
        f"- temporary stores under `{tmp}` ({fs_note})",
        f"- 1-minute load average: {load[0]:.2f} at start, {load[1]:.2f} at end "
        "(other work on the machine inflates and scatters the figures)",
    ]


NOTES = """\
- Seconds are medians over the repetitions listed below (each one a fresh subprocess and a
  fresh store); "nixlet vs plx" is pylightnix s / nixlet s; "nixlet/floor" is nixlet s / floor s.
- "realize (cached)" is a second `realize` of the same chain after a fresh `instantiate`
  (the instantiate is not timed); store sizes are taken after it: the sum of regular files'
  sizes under the temporary store folder and their count (`f`).
- The floor is plain Python doing the same disk work (see benchmarks/README.md): one publish =
  mkdir tmp, write, fsync file, rename into place, fsync parent; instantiate = sha256 of each
  canonical JSON config; cached realize = one stat per output; match_best = read every
  score.txt and take the max.
- Targets: every row but the big write >= 10x faster than pylightnix ("floor Nx" next to the
  figure is how much faster than pylightnix the floor itself is: the most any library doing
  the same durable disk work could reach); nixlet N=10000 / N=1000
  <= 12 for time and store size; cached realize of the 1000-chain < 0.5 s; first realize of the
  1000-chain <= 2x the floor; the big write <= 1.5x the floor; gc within 1.5x of the plain
  removal (`rm -rf` of the same folders); du and gc of 10,000 realizations < 1 s (their
  stores are filled by an earlier process, untimed). `n/a`: a figure is missing in
  this run (e.g. pylightnix is not run at N=10000)."""


def markdown_report(cells: list[list[str]], plan: Plan, tmp: Path, jobs: list[Job],
                    errors: list[Outcome], load: tuple[float, float]) -> str:
    """The whole results.md."""
    reps = ", ".join(f"{j.lib} {j.workload} N={j.n}: {j.reps}" for j in jobs)
    parts = ["# nixlet benchmark results", "",
             "Generated by `make bench` (`python benchmarks/run.py`); do not edit by hand.", "",
             *environment_lines(plan, tmp, load), "", render_markdown(cells), "", "## Notes", "",
             NOTES, f"- Repetitions: {reps}."]
    if errors:
        parts += ["", "## Errors", ""]
        for o in errors:
            parts += [f"### {o.job.lib} {o.job.workload} N={o.job.n}", "", "```",
                      (o.error or "").strip()[-2000:], "```", ""]
    return "\n".join(parts).rstrip() + "\n"


# ----------------------------------------------------------------------------------------------
# Entry point


def env_flag(name: str) -> bool:
    """True when the environment variable ``name`` is set to something other than ''/0/no."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "no", "false")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the driver's command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", default=env_flag("NIXLET_BENCH_QUICK"),
                   help="N=100,1000 nixlet/floor, N=100 pylightnix, 64 MiB big write")
    p.add_argument("--no-plx-1000", action="store_true",
                   default=env_flag("NIXLET_BENCH_SKIP_PLX_1000"),
                   help="skip pylightnix's N=1000 chain (the slow one)")
    p.add_argument("--tmp", type=Path, default=Path(os.environ.get("NIXLET_BENCH_TMP", "/tmp")),
                   help="parent folder of the temporary stores (same filesystem as the repo)")
    p.add_argument("--results", type=Path, default=RESULTS_MD, help="markdown report path")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    """Run the plan, print the table, write results.md; exit 1 if any worker failed."""
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    tmp: Path = args.tmp.resolve()
    if not same_filesystem(tmp, REPO):
        log(f"warning: {tmp} is not on the same filesystem as {REPO}")
    plan = make_plan(args.quick, args.no_plx_1000)
    jobs = make_jobs(plan)
    log(f"nixlet benchmark ({'quick' if plan.quick else 'full'}): {len(jobs)} jobs, "
        f"{sum(j.reps for j in jobs)} subprocesses")
    load_start = os.getloadavg()[0]
    if load_start > 0.5:
        log(f"warning: load average {load_start:.2f}: other work will skew the figures")
    results: Results = {}
    for group in groups(jobs):
        for outcome in run_group(group, tmp, log):
            results[(outcome.job.lib, outcome.job.workload, outcome.job.n)] = outcome

    cells = table_cells(make_rows(plan), results)
    errors = [o for o in results.values() if o.error]
    print()
    print(render_text(cells))
    for o in errors:
        print(f"\nERROR {o.job.lib} {o.job.workload} N={o.job.n}:\n{(o.error or '')[-2000:]}")
    load = (load_start, os.getloadavg()[0])
    args.results.write_text(markdown_report(cells, plan, tmp, jobs, errors, load))
    print(f"\nwrote {args.results}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
