"""Soak test of `lorafit serve`: bounded loopback load, with bad requests mixed in, and the service's resident
memory before and after. Stops by itself and stops the service.

The service runs as a child process (`lorafit serve RUN_DIR`). After a warm-up block (so every batch shape
has been met once), the script sends BLOCKS blocks of valid requests (1-16 texts each, from the data file,
CONCURRENCY clients) and, after each block, a round of bad requests (malformed JSON, wrong types, a text
over the limit, an unknown model, a body over the limit) that must all get a 4xx. It records the
service's RSS (from /proc) after the warm-up and after each block; errors are any 5xx, failed request or
wrong answer.

    .venv/bin/python bench/serve_soak.py /tmp/servebench examples/banking77/test.csv \
        bench/results/serve_soak.jsonl --blocks 6 --requests 300
Results: BENCHMARKS.md, "The service under load".
"""
from __future__ import annotations

import argparse
import asyncio
import sys

import httpx
import pandas as pd

from common import Sink
from serve_load import drive, start_service

BAD = [(b'{"texts": ["unterminated', "application/json"), (b'{"texts": "one string"}', "application/json"),
       (b'{"texts": [1, 2]}', "application/json"), (b'{"texts": ["x"], "model": "../../etc/passwd"}', "application/json"),
       (b'{"texts": []}', "application/json"), (b"texts=a", "application/x-www-form-urlencoded"),
       (b'{"texts": ["' + b"a" * 30000 + b'"]}', "application/json"),
       (b'{"texts": ["' + b"b" * 3_000_000 + b'"]}', "application/json")]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def bad_round(url: str) -> tuple[int, int]:
    """Send every bad request once; returns (sent, answered with something other than a 4xx)."""
    wrong = 0
    with httpx.Client(base_url=url, timeout=60) as client:
        for body, content_type in BAD:
            try:
                status = client.post("/v1/classify", content=body, headers={"content-type": content_type}).status_code
            except httpx.HTTPError:
                status = 0
            wrong += not 400 <= status < 500
    return len(BAD), wrong


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir"); p.add_argument("texts"); p.add_argument("out")
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--requests", type=int, default=300, help="valid requests per block")
    p.add_argument("--concurrency", type=int, default=16)
    a = p.parse_args()
    texts = pd.read_csv(a.texts, keep_default_na=False, dtype=str)["text"].tolist()
    sink = Sink(a.out, "python bench/serve_soak.py " + " ".join(sys.argv[1:]))
    proc, url = start_service(a.run_dir, [])
    try:
        sizes = [1, 2, 4, 8, 16]
        asyncio.run(drive(url, texts[: 8 * 100], a.concurrency, 8))  # warm-up: batch shapes met once
        before = rss_mb(proc.pid)
        rss, errors, bad_sent, bad_wrong, sent = [], 0, 0, 0, 0
        for block in range(a.blocks):
            per = sizes[block % len(sizes)]
            chunk = [texts[(block * 997 + i) % len(texts)] for i in range(a.requests * per)]
            result = asyncio.run(drive(url, chunk, a.concurrency, per))
            errors, sent = errors + result["errors"], sent + result["requests"]
            n, wrong = bad_round(url)
            bad_sent, bad_wrong = bad_sent + n, bad_wrong + wrong
            rss.append(round(rss_mb(proc.pid), 1))
            print(f"block {block + 1}: {result['requests']} requests of {per} texts, {result['errors']} errors, "
                  f"{wrong} bad requests not refused with a 4xx, RSS {rss[-1]:.0f} MiB", flush=True)
        sink.keep({"run_dir": a.run_dir, "requests": sent, "errors": errors, "bad_requests": bad_sent,
                   "bad_not_4xx": bad_wrong, "service_alive": proc.poll() is None, "rss_after_warmup_mb": round(before, 1),
                   "rss_after_blocks_mb": rss, "rss_growth_mb": round(rss[-1] - before, 1),
                   "concurrency": a.concurrency})
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
