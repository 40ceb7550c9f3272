"""Micro-benchmarks behind three statements in BENCHMARKS.md ("2026-11-29"), on this machine's CPU:

1. fp32 vs bf16 matrix products (512x384 @ 384x1536, what a MiniLM feed-forward block multiplies): where
   the CPU has no native bf16, torch emulates it;
2. one dropout forward + backward on a 32x16x384 activation: torch's ``nn.functional.dropout``, lorafit's
   fast dropout as first written (a boolean mask cast in the product) and as committed
   (:class:`lorafit.dropout.FastDropout`, one scaled float mask); three interleaved rounds, the best of each;
3. how long one :func:`lorafit.flops.matmul_peak_gflops` measurement takes (what a training run spends on it).

Usage: python bench/cpu_micro.py OUT.jsonl
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from common import Sink


def matmul_gflops(dtype: torch.dtype, repeats: int = 50) -> float:
    a, b = torch.randn(512, 384).to(dtype), torch.randn(384, 1536).to(dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * 512 * 384 * 1536 * repeats / (time.perf_counter() - start) / 1e9


def dropout_ms(drop, repeats: int = 300) -> float:
    """Milliseconds per forward + backward of ``drop`` on a 32x16x384 activation."""
    x, grad = torch.randn(32, 16, 384, requires_grad=True), torch.randn(32, 16, 384)
    drop(x).backward(grad)
    start = time.perf_counter()
    for _ in range(repeats):
        drop(x).backward(grad)
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    from lorafit.dropout import FastDropout, keep_mask
    from lorafit.flops import matmul_peak_gflops

    p = argparse.ArgumentParser()
    p.add_argument("out")
    a = p.parse_args()
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    sink.keep({"check": "matmul 512x384x1536", "fp32_gflops": round(matmul_gflops(torch.float32), 1),
               "bf16_gflops": round(matmul_gflops(torch.bfloat16), 1)})
    fast = FastDropout(0.1).train()
    variants = {"torch dropout": lambda x: torch.nn.functional.dropout(x, 0.1, True),
                "fast, boolean mask (first version)": lambda x: x.mul(keep_mask(x.shape, 0.1)).mul_(1 / 0.9),
                "fast, scaled float mask (committed)": fast}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(3):
        for name, drop in variants.items():
            times[name].append(dropout_ms(drop))
    sink.keep({"check": "dropout forward+backward, 32x16x384, p=0.1, best of 3 rounds (ms)",
               **{name: round(min(t), 3) for name, t in times.items()}})
    start = time.perf_counter()
    matmul_peak_gflops("fp32", torch.device("cpu"))
    sink.keep({"check": "one matmul_peak_gflops('fp32') call (s)", "seconds": round(time.perf_counter() - start, 3)})


if __name__ == "__main__":
    main()
