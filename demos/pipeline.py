"""The main demo: a small ML pipeline on the default local store.

    dataset ──▶ train (3 random restarts, best chosen by match_best) ──▶ report

Run it twice (`make demo`): the first run builds the three stages, the second finds every
realization in the store, builds nothing, and says so. Both runs end with the folder that
holds the result's files.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shlex
import sys
import time

import nixlet as nx

RESTARTS = 3


def make_dataset(b: nx.Build) -> None:
    """A noisy line y = 3x - 1, from a fixed seed: a deterministic stage."""
    c = nx.build_cattrs(b)
    rng = random.Random(c.seed)
    rows = [
        (x, 3 * x - 1 + rng.gauss(0, c.noise)) for x in (rng.uniform(-1, 1) for _ in range(c.size))
    ]
    (nx.build_outpath(b) / "data.json").write_text(json.dumps(rows))


def dataset(m: nx.Manager) -> nx.DRef:
    """Declare the dataset stage."""
    config = {"name": "dataset", "seed": 7, "size": 400, "noise": 0.3}
    return nx.mkdrv(m, config, nx.match_only(), nx.build_wrapper(make_dataset))


def fit(b: nx.Build) -> None:
    """Stochastic gradient descent from a random start, once per output folder: a
    non-deterministic stage, as training is."""
    c = nx.build_cattrs(b)
    rows = json.loads(nx.build_path(b, [c.data, "data.json"]).read_text())
    for out in nx.build_outpaths(b):
        rng = random.Random()
        w, bias = rng.uniform(-5, 5), rng.uniform(-5, 5)
        for _ in range(c.epochs):
            for x, y in rng.sample(rows, len(rows)):
                err = w * x + bias - y
                w, bias = w - c.lr * err * x, bias - c.lr * err
        mse = sum((w * x + bias - y) ** 2 for x, y in rows) / len(rows)
        (out / "model.json").write_text(json.dumps({"w": w, "b": bias}))
        (out / "score.txt").write_text(f"{-mse:.6f}")


def train(m: nx.Manager) -> nx.DRef:
    """Declare training on the dataset; match_best keeps the run with the best score."""
    config = {
        "name": "train",
        "data": dataset(m),
        "epochs": 3,
        "lr": 0.05,
        "model": [nx.promise, "model.json"],
    }
    return nx.mkdrv(m, config, nx.match_best("score.txt"), nx.build_wrapper(fit, nouts=RESTARTS))


def write_report(b: nx.Build) -> None:
    """Summarise the chosen model."""
    c = nx.build_cattrs(b)
    model = json.loads(nx.build_path(b, [c.model, "model.json"]).read_text())
    score = float(nx.build_path(b, [c.model, "score.txt"]).read_text())
    sign = "-" if model["b"] < 0 else "+"
    text = f"y = {model['w']:.3f} x {sign} {abs(model['b']):.3f}   (rmse {math.sqrt(-score):.3f})\n"
    (nx.build_outpath(b) / "report.txt").write_text(text)


def report(m: nx.Manager) -> nx.DRef:
    """Declare the report on the best model."""
    return nx.mkdrv(
        m, {"name": "report", "model": train(m)}, nx.match_only(), nx.build_wrapper(write_report)
    )


class _BuildCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.built: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("build "):
            self.built.append(record.getMessage().split()[-1])


def main() -> int:
    """Realize the pipeline on the default store and say what was built and where it is."""
    store = nx.store_initialize()
    counter = _BuildCounter()
    logging.getLogger("nixlet.build").addHandler(counter)
    logging.getLogger("nixlet.build").setLevel(logging.INFO)
    print(f"store: {store.root}")
    print("  (the folder where nixlet keeps every build; set NIXLET_STORE to use another)")
    started = time.perf_counter()
    closure = nx.instantiate(report)
    rref = nx.realize(closure)
    elapsed = time.perf_counter() - started
    print(nx.catref(rref, "report.txt"), end="")
    trained = nx.drefrrefs(closure.derivations[1].dref)
    print(f"train has {len(trained)} realizations; match_best chose the best of them")
    if counter.built:
        names = ", ".join(nx.DRef.parse(d).name for d in counter.built)
        print(f"built {len(counter.built)} derivations in {elapsed:.2f} s: {names}")
    else:
        print(f"nothing to build: every realization came from the store ({elapsed:.3f} s)")
    print(f"result: {rref}")
    # A newcomer's next question is where the result is: the folder the build wrote.
    files = nx.rref2path(rref)
    print(f"result files (read-only): {files}")
    print(f"  try: cat {shlex.quote(str(files / 'report.txt'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
