"""How reading a labeled file grows with its rows: CSV and JSONL at 250k to 2M rows (linear, not quadratic).

Each size is read ``--repeats`` times; the median counts (the machine is shared).

    .venv/bin/python bench/read_scaling.py --out bench/results/read_scaling.jsonl
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Sink  # noqa: E402
from lorafit.data import read_labeled  # noqa: E402

WORDS = "card transfer balance top up fee refund pin atm cash exchange rate pending declined".split()


def write(path: Path, rows: int, rng: random.Random) -> None:
    with path.open("w", encoding="utf-8") as handle:
        if path.suffix == ".csv":
            handle.write("text,label\n")
        for i in range(rows):
            text, label = " ".join(rng.choices(WORDS, k=rng.randint(3, 15))), f"class_{i % 77}"
            handle.write(f"{text},{label}\n" if path.suffix == ".csv" else
                         json.dumps({"text": text, "label": label}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="250000,500000,1000000,2000000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench/results/read_scaling.jsonl")
    args = parser.parse_args()
    sink = Sink(args.out, " ".join(["python"] + sys.argv))
    work = Path(tempfile.mkdtemp(prefix="read_scaling-"))
    for rows in map(int, args.rows.split(",")):
        for suffix in (".csv", ".jsonl"):
            path = work / f"data{suffix}"
            write(path, rows, random.Random(rows))
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                data = read_labeled(path)
                times.append(time.perf_counter() - started)
            seconds = statistics.median(times)
            sink.keep({"bench": "read_scaling", "format": suffix[1:], "rows": len(data),
                       "mb": round(path.stat().st_size / 2**20, 1), "seconds": round(seconds, 2), "repeats": args.repeats,
                       "us_per_row": round(1e6 * seconds / rows, 2)})
            path.unlink()


if __name__ == "__main__":
    main()
