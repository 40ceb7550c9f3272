"""Training steps with the frozen linear weights cast to bf16 once, against autocast's cast on every step,
alternating step by step (a lever tried in the fourteenth session and not adopted: BENCHMARKS.md).

Under bf16 autocast each linear layer casts its fp32 weight and bias to bf16 on every call; torch caches that cast
only for tensors that require a gradient, so the frozen base weights of the blocks a step runs are cast again at
every step. The variant makes those bf16 copies once and swaps them into the parameters for the step only
(``param.data``): the same numbers, as autocast would make the same casts.

One fit of lorafit's defaults at batch 16 (``--batch-size``); every other optimisation step runs with the copies,
so both kinds of step see the same machine, the same batches in turn and the same model. Stops after ``--steps``
steps. One JSON line: the median milliseconds of each kind of step and their ratio.

Usage: python bench/frozen_casts.py TRAIN.csv OUT.jsonl [--steps 500] [--batch-size 16]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import pandas as pd
import torch
from torch import nn

from common import Sink


class _Enough(Exception):
    pass


def cast_copies(blocks: list[nn.Module]) -> list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]]:
    """``(parameter, its fp32 tensor, a bf16 copy)`` for the frozen weights and biases of the ``nn.Linear`` layers
    (peft's base layers included) in ``blocks``."""
    return [(p, p.data, p.data.to(torch.bfloat16)) for block in blocks for m in block.modules()
            if type(m) is nn.Linear for p in (m.weight, m.bias) if p is not None and not p.requires_grad]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("train"); p.add_argument("out"); p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    import lorafit.training as training
    from lorafit import Classifier
    from lorafit.cache import block_list

    seconds: dict[bool, list[float]] = {True: [], False: []}
    copies: list = []
    step = training.Trainer._step

    def alternating(self, *a, **k):
        if self.precision != "bf16":
            raise SystemExit("this comparison needs bf16 training (a CPU with AVX-512 BF16 or AMX)")
        if not copies:
            found = block_list(self.model.encoder)
            copies.extend(cast_copies(list(getattr(*found))[self.model.split:]))
        cast = len(seconds[True]) <= len(seconds[False])
        started = time.perf_counter()
        try:
            for param, _, low in copies if cast else ():
                param.data = low
            return step(self, *a, **k)
        finally:
            for param, full, _ in copies if cast else ():
                param.data = full
            seconds[cast].append(time.perf_counter() - started)
            if len(seconds[True]) + len(seconds[False]) >= args.steps:
                raise _Enough

    training.Trainer._step = alternating
    train = pd.read_csv(args.train, keep_default_na=False, dtype=str)
    try:
        Classifier(batch_size=args.batch_size, epochs=1).fit(train["text"].tolist(), train["label"].tolist())
    except _Enough:
        pass
    on, off = (statistics.median(seconds[kind][5:]) * 1e3 for kind in (True, False))
    Sink(args.out, "python bench/frozen_casts.py " + " ".join(sys.argv[1:])).keep(
        {"steps": args.steps, "batch_size": args.batch_size, "rows": len(train),
         "ms_per_step_cast_weights": round(on, 2), "ms_per_step_autocast_casts": round(off, 2),
         "ratio": round(off / on, 3)})


if __name__ == "__main__":
    main()
