"""Training steps with and without the frozen weights held in bf16 (`lorafit.frozen`), alternating step by step.

One batch-16 fit of lorafit's defaults; every other optimisation step runs without the cast copies (autocast
then casts the frozen weights itself), so both kinds of step see the same machine, the same batches in turn
and the same model. The steps compute the same numbers either way; only their time differs. Stops after
``--steps`` steps. One JSON line: the median milliseconds of each kind of step and their ratio.

Usage: python bench/frozen_casts.py TRAIN.csv OUT.jsonl [--steps 500]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import pandas as pd

from common import Sink


class _Enough(Exception):
    pass


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("train"); p.add_argument("out"); p.add_argument("--steps", type=int, default=500)
    args = p.parse_args()
    import lorafit.training as training
    from lorafit import Classifier
    from lorafit.frozen import FrozenCasts

    seconds: dict[bool, list[float]] = {True: [], False: []}
    step = training.Trainer._step

    def alternating(self, *a, **k):
        cast = len(seconds[True]) <= len(seconds[False])
        kept = self.frozen_casts
        if not cast:
            self.frozen_casts = FrozenCasts([], "fp32")
        started = time.perf_counter()
        try:
            return step(self, *a, **k)
        finally:
            seconds[cast].append(time.perf_counter() - started)
            self.frozen_casts = kept
            if len(seconds[True]) + len(seconds[False]) >= args.steps:
                raise _Enough

    training.Trainer._step = alternating
    train = pd.read_csv(args.train, keep_default_na=False, dtype=str)
    try:
        Classifier(batch_size=16, epochs=1).fit(train["text"].tolist(), train["label"].tolist())
    except _Enough:
        pass
    on, off = (statistics.median(seconds[kind][5:]) * 1e3 for kind in (True, False))
    Sink(args.out, "python bench/frozen_casts.py " + " ".join(sys.argv[1:])).keep(
        {"steps": args.steps, "ms_per_step_cast_weights": round(on, 2), "ms_per_step_autocast_casts": round(off, 2),
         "ratio": round(off / on, 3)})


if __name__ == "__main__":
    main()
