"""How long the run report's three per-class figures take to draw for BANKING77's 77 classes (confusion matrix,
per-class F1, class distribution): margins set from the widest label (:func:`lorafit.plots._class_figure`, the
committed way) against matplotlib's constrained layout (how they were drawn before 2026-11-29, session 6).
Rounds alternate the order; the line keeps every time and the medians (seconds for the three figures).

Usage: python bench/report_time.py OUT.jsonl [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import pandas as pd

from common import HERE, Sink


def main() -> None:
    from lorafit import plots

    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    frame = pd.read_csv(HERE.parent.parent / "shared/data/banking77/train.csv", keep_default_na=False, dtype=str)
    labels = sorted(set(frame.label))
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 3, (len(labels), len(labels))) + np.eye(len(labels), dtype=int) * 40
    f1 = {label: float(rng.uniform(0.7, 1.0)) for label in labels}
    counts = frame.label.value_counts().to_dict()
    committed = plots._class_figure
    ways = {"margins from the widest label (committed)": committed,
            "constrained layout": lambda width, height, *_, **__: plots._figure(width, height)}

    def draw() -> None:
        plots.confusion_png(matrix, labels)
        plots.f1_png(f1)
        plots.distribution_png(labels, counts, counts, "test")

    draw()  # imports matplotlib and warms its font cache
    times: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(a.rounds):
        for name in (list(ways) if r % 2 == 0 else list(reversed(ways))):
            plots._class_figure = ways[name]
            start = time.perf_counter()
            draw()
            times[name].append(round(time.perf_counter() - start, 2))
    plots._class_figure = committed
    sink.keep({"check": "report figures, 77 classes", "seconds": times,
               "median_s": {name: statistics.median(t) for name, t in times.items()}})


if __name__ == "__main__":
    main()
