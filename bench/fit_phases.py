"""Where a `Classifier.fit` with lorafit's defaults spends its time, by phase (BENCHMARKS.md, ninth session).

Wraps the Trainer's phases with timers: the caching pass (``prepare``: the frozen blocks' output, and the
probe's embeddings), the probe fit, the validation passes (``_record``), and the optimisation steps
(``loop_seconds`` from the run's own metrics). One JSON line: each phase in seconds, and the whole fit.

Usage: python bench/fit_phases.py TRAIN.csv OUT.jsonl [setting=value ...]   (settings as in run_lorafit.py)
"""
from __future__ import annotations

import argparse
import sys
import time

import pandas as pd

from common import Sink
from run_lorafit import parse_value


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("train"); p.add_argument("out"); p.add_argument("settings", nargs="*")
    args = p.parse_args()
    settings = {k: parse_value(k, v) for k, v in (s.split("=", 1) for s in args.settings)}
    import lorafit.training as training
    from lorafit import Classifier

    seconds: dict[str, float] = {}

    def timed(name: str, method):
        def wrapper(*a, **k):
            started = time.perf_counter()
            try:
                return method(*a, **k)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
        return wrapper

    for name, attribute in (("caching_pass", "prepare"), ("probe", "init_head_from_probe"),
                            ("validation_passes", "_record")):
        setattr(training.Trainer, attribute, timed(name, getattr(training.Trainer, attribute)))
    train = pd.read_csv(args.train, keep_default_na=False, dtype=str)
    started = time.perf_counter()
    clf = Classifier(**settings).fit(train["text"].tolist(), train["label"].tolist())
    fit = time.perf_counter() - started
    m = clf.metrics_
    sink = Sink(args.out, "python bench/fit_phases.py " + " ".join(sys.argv[1:]))
    sink.keep({"settings": settings, "train_rows": len(train), "fit_s": round(fit, 1),
               **{f"{k}_s": round(v, 1) for k, v in seconds.items()},
               "steps_s": round(m["loop_seconds"], 1), "steps": m["steps"],
               "ms_per_step": round(m["loop_seconds"] / max(m["steps"], 1) * 1000, 1),
               "train_wall_s": round(m["train_wall_seconds"], 1), "precision": m["precision"]})


if __name__ == "__main__":
    main()
