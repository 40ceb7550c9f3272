"""Each speed/accuracy lever of lorafit switched off on its own, next to the defaults, on one data set:
`lorafit train` with one flag changed, timed as a whole process, scored on TEST. The defaults run
first and last, so drift of the machine during the run shows.

Usage: python bench/levers.py TRAIN.csv TEST.csv OUT.jsonl
"""
from __future__ import annotations

import argparse
import sys
import tempfile

from common import Sink, lorafit

LEVERS = {
    "defaults": [],
    "cls pooling (no mean pooling)": ["--pooling", "cls"],
    "random head (no probe init)": ["--no-probe-init"],
    "no frozen-block cache": ["--no-cache-frozen"],
    "LoRA on every block (no top-third choice, nothing to cache)": ["--layers-to-transform", "all"],
    "no length bucketing": ["--no-length-bucketing"],
    "torch dropout (no fast dropout)": ["--no-fast-dropout"],
    "batches padded to multiples of 8 (no exact lengths)": ["--pad-to-multiple-of", "8"],
    "fp32 training (no bf16 autocast)": ["--precision", "fp32"],
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("train"); p.add_argument("test"); p.add_argument("out")
    p.add_argument("--only", nargs="*", help="lever names to run (default: all)")
    a = p.parse_args()
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    names = [*LEVERS, "defaults"] if not a.only else a.only
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            sink.keep({**lorafit(a.train, a.test, work, LEVERS[name]), "lever": name})
    print("| lever switched off | flag | process wall | train samples/s | MFU | test accuracy | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for r in sink.results:
        print(f"| {r['lever']} | `{' '.join(r['args']) or '-'}` | {r['train_process_wall_s']} s | "
              f"{r['train_samples_per_s']} | {100 * r.get('mfu', 0):.1f}% | {100 * r['test_accuracy']:.2f}% | "
              f"{r['peak_rss_mb']} MiB |")


if __name__ == "__main__":
    main()
