"""WiSE-FT interpolation: how accuracy moves between the probe-initialised start (alpha 0) and the trained
model (alpha 1), on the test data and on lorafit's validation holdout, for one training per seed.

Trains with ``wise_alpha=1`` (the weights as trained), keeps the probe head it started from, then scores
``start + alpha * (trained - start)`` for each alpha: LoRA's B matrices times alpha (LoRA's update scaled by
alpha, B starting at zero) and the head between the probe's and the trained one, which is what
``--wise-alpha`` does at the end of training. Also the output ensemble of the two ends (mean softmax), and the
test ECE (15 bins) before and after a temperature fitted on the validation holdout at each alpha.

Usage: python bench/wise.py TRAIN.csv TEST.csv OUT.jsonl [setting=value ...] [--seeds 0 1 2]
           [--per-class N --seed-data S]
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

ALPHAS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def one_seed(train: pd.DataFrame, test: pd.DataFrame, settings: dict, seed: int) -> dict:
    from lorafit import Classifier, training
    from lorafit.calibration import ece, fit_temperature
    from lorafit.inference import softmax

    starts = []
    fit_probe = training.Trainer.init_head_from_probe

    def keep_probe_head(self, *args, **kwargs):
        fit_probe(self, *args, **kwargs)
        starts.append({k: v.detach().clone() for k, v in self.model.head.state_dict().items()})

    training.Trainer.init_head_from_probe = keep_probe_head
    try:
        t0 = time.perf_counter()
        clf = Classifier(**{**settings, "seed": seed, "wise_alpha": 1.0}).fit(train["text"].tolist(),
                                                                              train["label"].tolist())
        wall = time.perf_counter() - t0
    finally:
        training.Trainer.init_head_from_probe = fit_probe
    head, start = clf.model.head, starts[0]
    trained = {k: v.detach().clone() for k, v in head.state_dict().items()}
    lora_b = [p for n, p in clf.model.named_parameters() if ".lora_B." in n]
    trained_b = [p.detach().clone() for p in lora_b]
    vp = clf.validation_predictions
    test_y = np.array([clf.classes_.index(label) for label in test["label"]])
    record = {"settings": settings, "seed": seed, "train_rows": len(train), "fit_s": round(wall, 1),
              "best_step": clf.metrics_["best_step"], "alphas": {}}
    logits = {}
    for alpha in ALPHAS:
        with torch.no_grad():
            for p, b in zip(lora_b, trained_b):
                p.copy_(alpha * b)
            head.load_state_dict({k: start[k] + alpha * (trained[k] - start[k]) for k in trained})
        logits[alpha] = clf._forward(test["text"].tolist())
        scores = {"test": float((logits[alpha].argmax(1) == test_y).mean()),
                  "test_ece": ece(softmax(logits[alpha]), test_y)}
        if vp is not None:
            val_y = np.array([clf.classes_.index(label) for label in vp.labels])
            val_logits = clf._forward(list(vp.texts))
            scores["val"] = float((val_logits.argmax(1) == val_y).mean())
            temperature = fit_temperature(val_logits, val_y)  # what calibration would store at this alpha
            scores["temperature"] = temperature
            scores["test_ece_calibrated"] = ece(softmax(logits[alpha], temperature), test_y)
        record["alphas"][str(alpha)] = scores
    record["output_ensemble_test"] = float(((softmax(logits[0.0]) + softmax(logits[1.0])).argmax(1) == test_y).mean())
    return record


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("train"); p.add_argument("test"); p.add_argument("out"); p.add_argument("settings", nargs="*")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--per-class", type=int, default=0, help="subsample N training rows per class")
    p.add_argument("--seed-data", type=int, default=0, help="seed of that subsample (bench/few_shot.py's sampling)")
    a = p.parse_args()
    settings = {k: parse_value(k, v) for k, v in (s.split("=", 1) for s in a.settings)}
    train = pd.read_csv(a.train, keep_default_na=False, dtype=str)
    if a.per_class:
        train = train.sample(frac=1, random_state=a.seed_data).groupby("label").head(a.per_class)
    test = pd.read_csv(a.test, keep_default_na=False, dtype=str)
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    for seed in a.seeds:
        sink.keep({**one_seed(train, test, settings, seed), "per_class": a.per_class, "seed_data": a.seed_data})


if __name__ == "__main__":
    main()
