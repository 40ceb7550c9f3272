"""Where a training step's CPU time goes, with torch's dropout and with lorafit's fast dropout.

Trains lorafit (defaults, 1 epoch, no validation) on N rows of TRAIN, profiles optimisation steps 5-44
with torch.profiler, and prints the top operators by self CPU time and the share of the random-mask
operators (bernoulli_, the masks' comparisons and multiplications are in `mul`/`ge`). One JSON line per
setting goes to OUT.jsonl. The profiler's own overhead inflates every operator alike: read shares and
the ratio of the totals, not absolute times.

Usage: python bench/dropout_share.py TRAIN.csv OUT.jsonl [--rows 2000] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd
from torch.profiler import ProfilerActivity, profile

from common import Sink

FIRST, LAST = 5, 44


def profiled_steps(texts: list[str], labels: list[str], batch_size: int, fast_dropout: bool) -> dict:
    """Self CPU seconds per operator over steps FIRST..LAST of one training run."""
    import lorafit.training as training
    from lorafit import Classifier

    original, state = training.Trainer._step, {"step": 0, "profiler": None}

    def step(self, *args, **kwargs):
        state["step"] += 1
        if state["step"] == FIRST:
            state["profiler"] = profile(activities=[ProfilerActivity.CPU])
            state["profiler"].__enter__()
        result = original(self, *args, **kwargs)
        if state["step"] == LAST:
            state["profiler"].__exit__(None, None, None)
        return result

    training.Trainer._step = step
    try:
        Classifier(epochs=1, min_steps=0, batch_size=batch_size, validation_fraction=0,
                   fast_dropout=fast_dropout).fit(texts, labels)
    finally:
        training.Trainer._step = original
    events = state["profiler"].key_averages()
    return {e.key: e.self_cpu_time_total / 1e6 for e in events}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("train"); p.add_argument("out")
    p.add_argument("--rows", type=int, default=2000); p.add_argument("--batch-size", type=int, default=32)
    a = p.parse_args()
    frame = pd.read_csv(a.train, keep_default_na=False, dtype=str).sample(n=a.rows, random_state=0)
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    for fast in (False, True):
        times = profiled_steps(frame["text"].tolist(), frame["label"].tolist(), a.batch_size, fast)
        total = sum(times.values())
        top = sorted(times.items(), key=lambda kv: -kv[1])[:8]
        sink.keep({"fast_dropout": fast, "rows": a.rows, "batch_size": a.batch_size, "steps": LAST - FIRST + 1,
                   "self_cpu_s": round(total, 3), "bernoulli_share": round(times.get("aten::bernoulli_", 0) / total, 4),
                   "top": {k: round(v, 3) for k, v in top}})
    off, on = sink.results
    print(f"steps {FIRST}-{LAST}: torch dropout {off['self_cpu_s']} s (bernoulli_ {100 * off['bernoulli_share']:.1f}%), "
          f"fast dropout {on['self_cpu_s']} s (bernoulli_ {100 * on['bernoulli_share']:.1f}%): "
          f"{off['self_cpu_s'] / on['self_cpu_s']:.2f}x")


if __name__ == "__main__":
    main()
