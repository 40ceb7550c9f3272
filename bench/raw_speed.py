"""Raw training speed at the boilerplate's own settings: batch 16, the same number of epochs, evaluation
only at the end. `lorafit train --batch-size 16 --epochs E` vs `reference_recipe.py` (the PEFT + Trainer
boilerplate as written), interleaved, each timed as a whole process.

lorafit's samples/s is counted two ways: over its optimisation steps (what the HF Trainer's
train_samples_per_second measures), and over its whole training call including the one-off pass that
caches the frozen blocks and fits the probe (the conservative figure the ratio uses). The boilerplate's own
setting is 5 epochs (18 minutes a round here); `--epochs 1` is the quick check. lorafit runs with `--patience 0`
so that it never stops before the last epoch.

Usage: python bench/raw_speed.py TRAIN.csv TEST.csv OUT.jsonl [--rounds 2] [--epochs 5]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile

import pandas as pd

from common import HERE, PY, Sink, last_json, lorafit, model_dir, recipe_mfu, run


def reference(model: str, train: str, test: str, work: str, epochs: int) -> dict:
    steps = math.ceil(len(pd.read_csv(train)) / 16) * epochs  # eval_steps = all steps: evaluate at the end only
    wall, stdout, peak = run([PY, str(HERE / "reference" / "reference_recipe.py"), model, train, test,
                              os.path.join(work, "reference"), str(epochs), "0", str(steps)])
    return {"tool": "reference_recipe", "train_process_wall_s": round(wall, 1), "peak_rss_mb": round(peak),
            **last_json(stdout)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("train"); p.add_argument("test"); p.add_argument("out")
    p.add_argument("--rounds", type=int, default=2); p.add_argument("--epochs", type=int, default=5)
    a = p.parse_args()
    model = model_dir()
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    with tempfile.TemporaryDirectory() as work:
        for _ in range(a.rounds):
            # --patience 0: every epoch runs, as in the boilerplate (lorafit still validates after each one)
            record = lorafit(a.train, a.test, work,
                             ["--batch-size", "16", "--epochs", str(a.epochs), "--patience", "0"])
            record["end_to_end_samples_per_s"] = round(record["train_rows"] * a.epochs / record["train_wall_s"], 1)
            sink.keep(record)
            theirs = reference(model, a.train, a.test, work, a.epochs)
            theirs["mfu"] = recipe_mfu(model, a.train, a.epochs, theirs["train_wall_s"], record["matmul_peak_gflops"])
            sink.keep(theirs)
    ours = statistics.median(r["end_to_end_samples_per_s"] for r in sink.results if r["tool"] == "lorafit")
    loop = statistics.median(r["train_samples_per_s"] for r in sink.results if r["tool"] == "lorafit")
    theirs = statistics.median(r["train_samples_per_s"] for r in sink.results if r["tool"] == "reference_recipe")
    print(f"median samples/s: lorafit {ours:.1f} end to end ({loop:.1f} in its steps), reference {theirs:.1f}; "
          f"ratio {ours / theirs:.1f}x ({loop / theirs:.1f}x)")


if __name__ == "__main__":
    main()
