"""Fuzz the data readers: valid files in every format, mutated at the byte level, must give a table or a
DataError, never another exception or a hang (each read is timed).

Hypothesis drives the inputs (rows, format, mutations); the budget is large, the run is one process.

    .venv/bin/python bench/fuzz_readers.py --examples 20000 --out bench/results/fuzz_readers.jsonl
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Sink  # noqa: E402
from helpers import write_table  # noqa: E402
from lorafit.data import read_labeled  # noqa: E402
from lorafit.errors import DataError  # noqa: E402

SPECIAL = [b"\x00", b"\r", b"\n", b"\r\n", b'"', b",", b"\t", b"\xff", b"\xfe", b"\xef\xbb\xbf", b"\xff\xfe",
           b"{", b"}", b"\\", b"\xe9", b"\x93", b"\xc3", b"text", b"label", b"\xf0\x9f\x98"]
FORMATS = [".csv", ".tsv", ".jsonl", ".parquet"]

mutation = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.sampled_from(SPECIAL) | st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 8)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)))
rows = st.lists(st.tuples(st.text(max_size=30), st.text(max_size=8)), min_size=0, max_size=8)


def mutate(raw: bytes, steps: list[tuple]) -> bytes:
    data = bytearray(raw)
    for kind, where, arg in steps:
        at = where % (len(data) + 1)
        if kind == "insert":
            data[at:at] = arg
        elif kind == "delete":
            del data[at:at + arg]
        elif kind == "truncate":
            del data[at:]
        elif data:
            data[at % len(data)] ^= arg
    return bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20000)
    parser.add_argument("--out", default="bench/results/fuzz_readers.jsonl")
    args = parser.parse_args()
    logging.getLogger("lorafit").setLevel(logging.ERROR)  # the NUL-removal warnings, thousands of them
    stats = {"inputs": 0, "tables": 0, "data_errors": 0, "other_exceptions": 0, "slowest_read_s": 0.0}
    failures: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="fuzz_readers-"))

    @settings(max_examples=args.examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(table=rows, suffix=st.sampled_from(FORMATS), steps=st.lists(mutation, max_size=4))
    def one(table: list[tuple[str, str]], suffix: str, steps: list[tuple]) -> None:
        path = work / f"input{suffix}"
        write_table(path, {"text": [t for t, _ in table], "label": [label for _, label in table]})
        path.write_bytes(mutate(path.read_bytes(), steps))
        stats["inputs"] += 1
        started = time.perf_counter()
        try:
            read_labeled(path)
            stats["tables"] += 1
        except DataError:
            stats["data_errors"] += 1
        except Exception:  # the finding this script looks for
            stats["other_exceptions"] += 1
            if len(failures) < 20:
                failures.append(f"{suffix} {steps}: {traceback.format_exc(limit=3)}")
        stats["slowest_read_s"] = max(stats["slowest_read_s"], time.perf_counter() - started)

    started = time.perf_counter()
    one()
    record = {"bench": "fuzz_readers", **stats, "slowest_read_s": round(stats["slowest_read_s"], 3),
              "seconds": round(time.perf_counter() - started, 1), "failures": failures}
    Sink(args.out, " ".join(["python"] + sys.argv)).keep(record)


if __name__ == "__main__":
    main()
