"""Side-by-side benchmark on one data set: `lorafit train` (defaults) vs the expert HF Trainer recipe vs
the frozen-encoder probe, run interleaved in one process tree on this machine, each timed as a whole
process (model load, tokenising and saving included), with its peak resident memory.

Usage: python bench/side_by_side.py TRAIN.csv TEST.csv OUT.jsonl [--rounds 2] [--expert-epochs 3]
Writes one JSON line per run to OUT.jsonl and prints a summary with the medians and ratios.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

from common import HERE, PY, Sink, last_json, lorafit, model_dir, probe, recipe_mfu, run


def expert(model: str, train: str, test: str, work: str, epochs: str) -> dict:
    cmd = [PY, str(HERE / "reference" / "expert_recipe.py"), model, train, test, os.path.join(work, "expert"),
           "--bf16", "--group", "--epochs", epochs]
    wall, stdout, peak = run(cmd)
    result = last_json(stdout)
    return {"tool": "expert_recipe --bf16 --group", "train_process_wall_s": round(wall, 1), "peak_rss_mb": round(peak),
            **result}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("train"); p.add_argument("test"); p.add_argument("out")
    p.add_argument("--rounds", type=int, default=2); p.add_argument("--expert-epochs", default="3")
    p.add_argument("--lorafit-args", default="", help="extra `lorafit train` flags, space-separated")
    a = p.parse_args()
    model = model_dir()
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    with tempfile.TemporaryDirectory() as work:
        for _ in range(a.rounds):
            ours = sink.keep(lorafit(a.train, a.test, work, a.lorafit_args.split()))
            theirs = expert(model, a.train, a.test, work, a.expert_epochs)
            theirs["mfu"] = recipe_mfu(model, a.train, float(a.expert_epochs), theirs["train_wall_s"],
                                       ours["matmul_peak_gflops"])
            sink.keep(theirs)
        sink.keep(probe(model, a.train, a.test))
    results = sink.results
    ours = [r["train_process_wall_s"] for r in results if r["tool"] == "lorafit"]
    theirs = [r["train_process_wall_s"] for r in results if r["tool"].startswith("expert")]
    print(f"median wall: lorafit {statistics.median(ours):.1f} s, expert {statistics.median(theirs):.1f} s, "
          f"ratio {statistics.median(ours) / statistics.median(theirs):.3f}")


if __name__ == "__main__":
    main()
