"""Weight averaging: does an average of the trainable weights along the training path (an exponential moving
average, or a uniform average over the last part of training, as in SWA) score better on the test data
than the checkpoint lorafit keeps, for one training per seed?

Trains with the given settings, and alongside the optimiser keeps, for every trainable weight (LoRA's A and
B, the head), exponential moving averages at a few decays (started from the weights after the first step) and
uniform averages over the last half and the last quarter of the steps. After training, each of them, the
kept checkpoint and the last state are scored on the test data and on lorafit's validation holdout.

With ``--update-cost STEPS`` it only times lorafit's own moving average (``lorafit.averaging``) on the
default model's trainable weights: STEPS updates, 5 rounds, the median.

Usage: python bench/averaging.py TRAIN.csv TEST.csv OUT.jsonl [setting=value ...] [--seeds 0 1 2]
       python bench/averaging.py - - OUT.jsonl --update-cost 564
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd
import torch

from common import Sink
from run_lorafit import parse_value

DECAYS = (0.99, 0.995, 0.998)
TAILS = {"uniform_last_half": 0.5, "uniform_last_quarter": 0.25}


class Averages:
    """The running averages, updated after every optimisation step."""

    def __init__(self) -> None:
        self.total = 0
        self.step = 0
        self.names: list[str] = []
        self.ema: dict[float, list[torch.Tensor]] = {}
        self.sums: dict[str, list[torch.Tensor]] = {}
        self.counts = dict.fromkeys(TAILS, 0)
        self.last: list[torch.Tensor] = []

    def start(self, model: torch.nn.Module) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.ema = {d: [p.detach().clone() for _, p in named] for d in DECAYS}
        self.sums = {k: [torch.zeros_like(p) for _, p in named] for k in TAILS}

    def update(self, model: torch.nn.Module) -> None:
        if not self.names:
            self.start(model)
        params = dict(model.named_parameters())
        current = [params[n].detach() for n in self.names]
        self.step += 1
        with torch.no_grad():
            for d, avg in self.ema.items():
                for a, p in zip(avg, current):
                    a.mul_(d).add_(p, alpha=1 - d)
            for key, share in TAILS.items():
                if self.step > self.total * (1 - share):
                    for s, p in zip(self.sums[key], current):
                        s.add_(p)
                    self.counts[key] += 1
        self.last = [p.clone() for p in current]

    def states(self) -> dict[str, list[torch.Tensor]]:
        out = {"last": self.last}
        out.update({f"ema_{d}": avg for d, avg in self.ema.items()})
        out.update({k: [s / self.counts[k] for s in self.sums[k]] for k in TAILS if self.counts[k]})
        return out


def one_seed(train: pd.DataFrame, test: pd.DataFrame, settings: dict, seed: int) -> dict:
    from lorafit import Classifier, training

    averages = Averages()
    original_step, original_schedule = training.Trainer._step, training._schedule

    def step(self, *args, **kwargs):
        loss = original_step(self, *args, **kwargs)
        averages.update(self.model)
        return loss

    def schedule(optimizer, total, warmup_ratio):
        averages.total = total
        return original_schedule(optimizer, total, warmup_ratio)

    training.Trainer._step, training._schedule = step, schedule
    try:
        t0 = time.perf_counter()
        clf = Classifier(**{**settings, "seed": seed}).fit(train["text"].tolist(), train["label"].tolist())
        wall = time.perf_counter() - t0
    finally:
        training.Trainer._step, training._schedule = original_step, original_schedule
    params = dict(clf.model.named_parameters())
    kept = [params[n].detach().clone() for n in averages.names]
    test_y = np.array([clf.classes_.index(label) for label in test["label"]])
    vp = clf.validation_predictions
    val_y = None if vp is None else np.array([clf.classes_.index(label) for label in vp.labels])
    record = {"settings": settings, "seed": seed, "train_rows": len(train), "fit_s": round(wall, 1),
              "steps": averages.step, "best_step": clf.metrics_["best_step"], "states": {}}
    for name, state in {"kept": kept, **averages.states()}.items():
        with torch.no_grad():
            for n, value in zip(averages.names, state):
                params[n].copy_(value)
        scores = {"test": float((clf._forward(test["text"].tolist()).argmax(1) == test_y).mean())}
        if vp is not None:
            scores["val"] = float((clf._forward(list(vp.texts)).argmax(1) == val_y).mean())
        record["states"][name] = scores
    return record


def update_cost(steps: int) -> dict:
    from lorafit.averaging import WeightAverage
    from lorafit.config import LoraSettings
    from lorafit.models import build_classifier, load_encoder, resolve_model

    encoder, _ = load_encoder(resolve_model("minilm"))
    model = build_classifier(encoder, [str(i) for i in range(77)], "mean", LoraSettings(), "minilm")
    average = WeightAverage(model, 0.995)
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(steps):
            average.update()
        rounds.append(time.perf_counter() - started)
    return {"update_cost_steps": steps, "tensors": len(average.state),
            "values": sum(v.numel() for v in average.state.values()), "seconds_median": round(sorted(rounds)[2], 4)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("train"); p.add_argument("test"); p.add_argument("out"); p.add_argument("settings", nargs="*")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--update-cost", type=int, default=0, help="only time STEPS updates of the moving average")
    a = p.parse_args()
    if a.update_cost:
        Sink(a.out, " ".join(["python", *sys.argv])).keep(update_cost(a.update_cost))
        return
    settings = {k: parse_value(k, v) for k, v in (s.split("=", 1) for s in a.settings)}
    train = pd.read_csv(a.train, keep_default_na=False, dtype=str)
    test = pd.read_csv(a.test, keep_default_na=False, dtype=str)
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    for seed in a.seeds:
        sink.keep(one_seed(train, test, settings, seed))


if __name__ == "__main__":
    main()
