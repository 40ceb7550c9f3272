"""OpenMP's wait policy and lorafit's training steps (BENCHMARKS.md, ninth session): each variant is a fresh
``bench/run_lorafit.py`` process, so libgomp reads its environment anew:
  - ``PASSIVE``: idle OpenMP threads sleep (what `import lorafit` set until the ninth session);
  - ``ACTIVE``: they spin;
  - unset: libgomp's default, spin for a while, then sleep (what `import lorafit` leaves since).
One JSON line per run: run_lorafit's line plus the variant. Run it alone: the policies differ most in how
they share the CPU.

Usage: python bench/wait_policy.py TRAIN.csv TEST.csv OUT.jsonl [--rounds 1] [run_lorafit arguments ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from common import HERE, PY, Sink

VARIANTS = ("PASSIVE", "ACTIVE", "unset")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("train"); p.add_argument("test"); p.add_argument("out")
    p.add_argument("--rounds", type=int, default=1)
    args, extra = p.parse_known_args()
    sink = Sink(args.out, "python bench/wait_policy.py " + " ".join(sys.argv[1:]))
    for _ in range(args.rounds):
        for variant in VARIANTS:
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if variant != "unset":
                env["OMP_WAIT_POLICY"] = variant
            done = subprocess.run([PY, str(HERE / "run_lorafit.py"), args.train, args.test, *extra], env=env,
                                  capture_output=True, text=True, check=True)
            line = json.loads(done.stdout.strip().splitlines()[-1])
            sink.keep({"omp_wait_policy": variant, **line})


if __name__ == "__main__":
    main()
