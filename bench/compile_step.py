"""torch.compile as a speed lever for lorafit's BANKING77 training step (not adopted; BENCHMARKS.md, ninth session).

The model lorafit trains on BANKING77 (MiniLM-L6, LoRA on blocks 4-5 with blocks 0-3 cached, 77 labels, bf16
autocast where the CPU has native bf16, else fp32), batch 32, fed random hidden states as the cache would be:
  - eager, with lorafit's fast dropout (what `lorafit train` runs);
  - ``torch.compile(model, dynamic=True)`` (inductor; torch's own dropout, which inductor draws inside its
    fused kernels).
Each variant is a fresh process-local model; the same 60 batch widths (multiples of 8, 16-40 tokens) follow a
warm-up over the four distinct widths, which is where compilation happens. One JSON line per variant: the
warm-up seconds and the median step time over the timed steps.

Usage: python bench/compile_step.py OUT.jsonl
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import torch

from common import Sink

WIDTHS = (16, 24, 32, 40)


def build(fast_dropout: bool) -> torch.nn.Module:
    from lorafit.config import LoraSettings
    from lorafit.dropout import use_fast_dropout
    from lorafit.models import build_classifier, load_encoder, resolve_model

    encoder = load_encoder(resolve_model("minilm"))[0]
    model = build_classifier(encoder, [str(i) for i in range(77)], "mean", LoraSettings(layers_to_transform=[4, 5]),
                             "minilm", cache_frozen=True)
    if fast_dropout:
        use_fast_dropout(model)
    return model.train()


def measure(model: torch.nn.Module, forward, widths: list[int], precision: str) -> tuple[float, list[float]]:
    from lorafit.inference import autocast

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    cpu = torch.device("cpu")

    def step(width: int) -> float:
        started = time.perf_counter()
        hidden = torch.randn(32, width, 384)
        mask = torch.ones(32, width, dtype=torch.long)
        mask[:, width - 3:] = 0
        with autocast(precision, cpu):
            logits = forward(attention_mask=mask, inputs_embeds=hidden)
        logits.float().sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    warm = sum(step(w) for w in WIDTHS)
    return warm, [step(w) * 1000 for w in widths]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    args = p.parse_args()
    from lorafit.inference import resolve_precision

    precision = resolve_precision("auto", torch.device("cpu"))
    rng = random.Random(0)
    widths = [rng.choice(WIDTHS) for _ in range(60)]
    sink = Sink(args.out, "python bench/compile_step.py " + " ".join(sys.argv[1:]))
    for variant in ("eager, fast dropout", "torch.compile(dynamic=True)"):
        torch.manual_seed(0)
        model = build(fast_dropout=variant.startswith("eager"))
        forward = model if variant.startswith("eager") else torch.compile(model, dynamic=True)
        warm, steps = measure(model, forward, widths, precision)
        sink.keep({"variant": variant, "precision": precision, "warmup_s": round(warm, 1),
                   "median_step_ms": round(statistics.median(steps), 1), "mean_step_ms": round(statistics.mean(steps), 1),
                   "steps": len(steps), "batch": 32})


if __name__ == "__main__":
    main()
