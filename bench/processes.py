"""One process against two (torchrun, gloo) for the same `lorafit train` on one machine, interleaved.

Usage: python bench/processes.py TRAIN.csv TEST.csv OUT.jsonl [--rounds 2] [--processes 2] [-- extra train flags]
Each round runs `lorafit train` once as one process (torch's threads: one per core) and once under
`torch.distributed.run --standalone --nproc_per_node N` (one thread per process), then evaluates both
runs on TEST. Wall time is the whole command. Peak RSS is GNU time's figure for the largest single
process it waited for (for torchrun: one of the training processes, not their sum).
Results: bench/results/banking77_processes.jsonl, summarised in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile

from common import Sink, lorafit


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("train"); p.add_argument("test"); p.add_argument("out")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("extra", nargs="*", help="flags passed to lorafit train (after --)")
    a = p.parse_args()
    sink = Sink(a.out, "python " + " ".join(sys.argv))
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(a.processes))
    for round_ in range(1, a.rounds + 1):
        for name, launcher in (("1 process", ()), (f"{a.processes} processes (torchrun, gloo)", torchrun)):
            with tempfile.TemporaryDirectory() as work:
                sink.keep({"round": round_, "setup": name, **lorafit(a.train, a.test, work, a.extra, launcher)})


if __name__ == "__main__":
    main()
