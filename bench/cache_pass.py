"""The caching pass of a BANKING77 run, timed on its own: what each of the pass's three changes of
2026-11-29 (session 6) is worth, interleaved in one process.

Variants, each building the cache of blocks 0-3 for the same BANKING77 training texts with lorafit's
defaults (MiniLM, LoRA on blocks 4-5, mean pooling, fp32, batches of 256 sorted by length):

- ``adapters on, trim per batch``: the pass as it was (peft's LoRA branches run in blocks 4-5; they add
  nothing while LoRA B is zero, but cost their matmuls and element-wise ops), ``malloc_trim`` after every batch;
- ``adapters off, trim per batch``: :func:`lorafit.cache.adapters_off` only;
- ``adapters off, trim once`` (committed): :func:`lorafit.cache.build_cache` as it is now;
- for the validation cache (no pooled features): all six blocks vs the bottom four only (committed).

Rounds alternate the order; the line keeps every time and the medians. The cached states are checked to be
identical across variants.

Usage: python bench/cache_pass.py OUT.jsonl [--rows 3000] [--rounds 4]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import pandas as pd
import torch

from common import HERE, Sink, model_dir


def main() -> None:
    from lorafit import cache
    from lorafit.config import LoraSettings
    from lorafit.data import tokenize
    from lorafit.models import build_classifier, load_encoder

    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--rows", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=4)
    a = p.parse_args()
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    frame = pd.read_csv(HERE.parent.parent / "shared/data/banking77/train.csv", keep_default_na=False, dtype=str)
    texts = frame.text.tolist()[:a.rows]
    encoder, tokenizer = load_encoder(model_dir())
    model = build_classifier(encoder, sorted(set(frame.label)), "mean", LoraSettings(), "bench")
    encoded = tokenize(tokenizer, texts, 56)
    inner, trim, adapters_off = model.encoder, cache.release_free_memory, cache.adapters_off

    def build(adapters: bool, trim_each_batch: bool, pooling: str | None = "mean", bottom_only: bool = True):
        def trim_after_batch() -> None:
            if trim_each_batch:
                trim()
        patches = {"release_free_memory": trim_after_batch,
                   "adapters_off": adapters_off if not adapters else lambda m: contextlib.nullcontext(),
                   "bottom_model": cache.bottom_model if bottom_only else lambda m, split: m}
        saved = {name: getattr(cache, name) for name in patches}
        vars(cache).update(patches)
        try:
            return cache.build_cache(inner, encoded, model.split, tokenizer.pad_token_id, 256, "fp32",
                                     torch.device("cpu"), pooling=pooling)
        finally:
            vars(cache).update(saved)
            trim()

    variants = {"adapters on, trim per batch": lambda: build(True, True),
                "adapters off, trim per batch": lambda: build(False, True),
                "adapters off, trim once (committed)": lambda: build(False, False),
                "no features, all six blocks": lambda: build(False, False, None, bottom_only=False),
                "no features, bottom four blocks (committed)": lambda: build(False, False, None)}
    reference = variants["adapters on, trim per batch"]()[0].states
    for name, run in variants.items():
        assert torch.equal(run()[0].states, reference), name
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(a.rounds):
        for name in (list(variants) if r % 2 == 0 else list(reversed(variants))):
            start = time.perf_counter()
            variants[name]()
            times[name].append(round(time.perf_counter() - start, 2))
    medians = {name: statistics.median(t) for name, t in times.items()}
    sink.keep({"check": "BANKING77 cache pass", "rows": a.rows, "tokens": int(encoded.lengths.sum()),
               "seconds": times, "median_s": medians,
               "texts_per_s": {name: round(a.rows / m, 1) for name, m in medians.items()},
               "identical_states": True})


if __name__ == "__main__":
    main()
