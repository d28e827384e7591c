"""Run ONE repetition of ONE workload for ONE library, in a fresh store; write JSON metrics.

The driver (run.py) starts this script as a subprocess per (library, workload, N, repetition),
so the libraries never share an interpreter, imports or global state::

    python benchmarks/worker.py --lib nixlet --workload chain --n 1000 \\
        --tmp /tmp --out /tmp/result.json

The output JSON holds the adapter's timings (seconds) plus ``store_bytes`` / ``store_files``,
the ``du``-like size of the whole temporary store folder after the workload ran.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from common import fresh_dir, make_payload, tree_size, warm_page_cache

LIBS = ("nixlet", "pylightnix", "floor")
WORKLOADS = ("chain", "fanin", "nondet", "big", "sync", "gcstore", "gc10k")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the worker's command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--lib", choices=LIBS, required=True)
    p.add_argument("--workload", choices=WORKLOADS, required=True)
    p.add_argument("--n", type=int, required=True, help="stages, realizations or files")
    p.add_argument("--file-bytes", type=int, default=0, help="big workload: bytes per file")
    p.add_argument("--tmp", type=Path, required=True, help="parent of the fresh store folder")
    p.add_argument("--out", type=Path, required=True, help="where to write the JSON metrics")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Import the adapter, run the workload in a fresh folder, measure the folder, clean up."""
    adapter = importlib.import_module(f"lib_{args.lib}")
    payload = make_payload(args.file_bytes) if args.workload == "big" else b""
    if args.workload == "big":
        warm_page_cache(args.tmp, payload, args.n)
    # Start from a quiet disk: the previous contender's unsynced writes (pylightnix never
    # fsyncs) and the freeing of its removed store would otherwise be written out by the
    # next contender's first sync, and be timed as that contender's cost.
    os.sync()
    with fresh_dir(args.tmp, f"nixlet-bench-{args.lib}-{args.workload}-") as root:
        if args.workload == "big":
            metrics: dict[str, Any] = adapter.big(root, args.n, payload)
        else:
            metrics = getattr(adapter, args.workload)(root, args.n)
        size = tree_size(root)
    metrics.update(store_bytes=size.bytes, store_files=size.files)
    return metrics


def main(argv: list[str]) -> int:
    """Entry point: run the workload and write its metrics to ``--out``."""
    args = parse_args(argv)
    args.out.write_text(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
