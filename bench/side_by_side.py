"""Side-by-side benchmark on one data set: `lorafit train` (defaults) vs the expert HF Trainer recipe vs
the frozen-encoder probe, run interleaved in one process tree on this machine, each timed as a whole
process (model load, tokenising and saving included), with its peak resident memory.

Usage: python bench/side_by_side.py TRAIN.csv TEST.csv OUT.jsonl [--rounds 2] [--expert-epochs 3]
           [--expert-precision auto|bf16|fp32]
The expert recipe runs with `--bf16 --group` where the CPU has native bf16 (AVX-512 BF16 / AMX: the
expert's choice there) and with `--group` in fp32 elsewhere (`auto`): on a CPU without it torch emulates
bf16 matrix products (1.3 GFLOP/s against fp32's 104 on the AVX2 machine of 2026-11-29, bench/cpu_micro.py), and no expert
would train that way.
Writes one JSON line per run to OUT.jsonl and prints a summary with the medians and ratios.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

from common import HERE, PY, Sink, last_json, lorafit, model_dir, probe, recipe_mfu, run


def expert(model: str, train: str, test: str, work: str, epochs: str, precision: str) -> dict:
    flags = ["--bf16", "--group"] if precision == "bf16" else ["--group"]
    cmd = [PY, str(HERE / "reference" / "expert_recipe.py"), model, train, test, os.path.join(work, "expert"),
           *flags, "--epochs", epochs]
    wall, stdout, peak = run(cmd)
    result = last_json(stdout)
    return {"tool": f"expert_recipe {' '.join(flags)}", "train_process_wall_s": round(wall, 1), "peak_rss_mb": round(peak),
            **result}


def expert_precision(choice: str) -> str:
    """``bf16`` or ``fp32`` for the expert recipe; ``auto``: bf16 where the CPU runs it natively."""
    if choice != "auto":
        return choice
    import torch

    from lorafit.inference import resolve_precision

    return resolve_precision("auto", torch.device("cpu"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("train"); p.add_argument("test"); p.add_argument("out")
    p.add_argument("--rounds", type=int, default=2); p.add_argument("--expert-epochs", default="3")
    p.add_argument("--lorafit-args", default="", help="extra `lorafit train` flags, space-separated")
    p.add_argument("--expert-precision", choices=("auto", "bf16", "fp32"), default="auto")
    a = p.parse_args()
    precision = expert_precision(a.expert_precision)
    model = model_dir()
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    with tempfile.TemporaryDirectory() as work:
        for _ in range(a.rounds):
            ours = sink.keep(lorafit(a.train, a.test, work, a.lorafit_args.split()))
            theirs = expert(model, a.train, a.test, work, a.expert_epochs, precision)
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
