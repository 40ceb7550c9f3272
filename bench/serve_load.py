"""Load test of `lorafit serve`: loopback clients at fixed concurrency, a fixed number of requests each run.

Two services on the same run directory are started as separate processes: one with the default
micro-batching and one with batching off (`--max-batch-size 1 --max-wait-ms 0`), so the batcher's
effect is measured side by side; or, with `--compare precision`, one in fp32 (the default) and one with
`--precision bf16`. For each round and each concurrency level (8 and 32 clients by
default), each service gets the same requests (one BANKING77 test text each, in file order), one
service right after the other; the order of the two alternates between rounds. Reported per run:
requests/s, p50/p99 latency, errors (any non-200 answer or failed request). The clients (asyncio +
httpx) run in this process on the same machine as the services. It stops by itself and stops the
services.

    .venv/bin/python bench/serve_load.py /tmp/servebench examples/banking77/test.csv \
        bench/results/serve_load.jsonl --requests 400 --rounds 2
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pandas as pd

from common import PY, Sink

COMPARISONS = {
    "batching": {"batched": [], "unbatched": ["--max-batch-size", "1", "--max-wait-ms", "0"]},
    "precision": {"fp32": [], "bf16": ["--precision", "bf16"]},
}
"""The pairs of services ``--compare`` chooses between (the flags each is started with)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(run_dir: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    """`lorafit serve` in a child process; returns once /health answers."""
    port = free_port()
    proc = subprocess.Popen([PY, "-m", "lorafit", "serve", run_dir, "--port", str(port), *extra],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"lorafit serve exited with {proc.returncode}:\n{proc.stderr.read()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit("lorafit serve did not answer /health within 300 s")


async def drive(url: str, texts: list[str], clients: int, per_request: int) -> dict:
    """Send ``len(texts) // per_request`` requests from ``clients`` concurrent loops; latency and errors."""
    bodies = [{"texts": texts[i:i + per_request]} for i in range(0, len(texts) - per_request + 1, per_request)]
    latencies: list[float] = []
    errors = 0
    next_index = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(session: httpx.AsyncClient) -> None:
        nonlocal next_index, errors
        while next_index < len(bodies):
            body = bodies[next_index]
            next_index += 1
            start = time.perf_counter()
            try:
                response = await session.post("/v1/classify", json=body)
                ok = response.status_code == 200 and len(response.json()["results"]) == len(body["texts"])
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - start)
            errors += not ok

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"requests": len(bodies), "texts_per_request": per_request, "errors": errors, "wall_s": round(wall, 2),
            "requests_per_s": round(len(bodies) / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("texts", help="CSV with a text column (requests cycle through it)")
    parser.add_argument("out", help="JSONL file to append results to")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="batching",
                        help="batching: default vs batching off; precision: fp32 vs --precision bf16 (both batched)")
    args = parser.parse_args()
    flags = COMPARISONS[args.compare]

    pool = pd.read_csv(args.texts, keep_default_na=False, dtype=str)["text"].tolist()
    need = args.requests * args.texts_per_request
    texts = (pool * (need // len(pool) + 1))[:need]
    sink = Sink(args.out, "python " + " ".join(sys.argv))
    services = {name: start_service(args.run_dir, extra) for name, extra in flags.items()}
    try:
        for name, (_, url) in services.items():  # warm-up: first calls build kernels and caches
            asyncio.run(drive(url, texts[:64], 8, 1))
        for round_number in range(1, args.rounds + 1):
            order = list(services) if round_number % 2 else list(services)[::-1]
            for clients in args.clients:
                for name in order:
                    result = asyncio.run(drive(services[name][1], texts, clients, args.texts_per_request))
                    sink.keep({"round": round_number, "service": name, "service_flags": flags[name],
                               "clients": clients, **result, "load_average_1min": round(os.getloadavg()[0], 2)})
    finally:
        for proc, _ in services.values():
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
