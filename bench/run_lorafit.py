"""Train lorafit on TRAIN, evaluate on TEST, print one JSON line (wall time, speed, accuracy, memory).

Usage: python bench/run_lorafit.py TRAIN.csv TEST.csv [setting=value ...] [--per-class N] [--seed-data S]
Settings are Classifier fields (epochs=2 r=8 layers_to_transform=3,4,5 ...). The wall time covers what
`lorafit train` does: load the model, tokenise, cache, probe, train, evaluate on validation, save.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import pandas as pd

from common import machine


def parse_value(key: str, value: str):
    if key == "layers_to_transform" and value in ("auto", "all"):
        return value
    if key in ("layers_to_transform", "target_modules"):
        items = [v for v in value.split(",") if v]
        return [int(v) for v in items] if key == "layers_to_transform" else items
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("train"); p.add_argument("test"); p.add_argument("settings", nargs="*")
    p.add_argument("--per-class", type=int, default=0, help="subsample N training rows per class")
    p.add_argument("--seed-data", type=int, default=0, help="seed of that subsample")
    a = p.parse_args()
    settings = dict(s.split("=", 1) for s in a.settings)
    settings = {k: parse_value(k, v) for k, v in settings.items()}
    t0 = time.perf_counter()
    from lorafit import Classifier

    train = pd.read_csv(a.train, keep_default_na=False, dtype=str)
    if a.per_class:
        train = train.sample(frac=1, random_state=a.seed_data).groupby("label").head(a.per_class)
    test = pd.read_csv(a.test, keep_default_na=False, dtype=str)
    clf = Classifier(**settings).fit(train["text"].tolist(), train["label"].tolist())
    with tempfile.TemporaryDirectory() as tmp:
        clf.save(os.path.join(tmp, "run"))
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    scores = clf.evaluate(test["text"].tolist(), test["label"].tolist(), threshold=0)
    acc = scores["accuracy"]
    m = clf.metrics_
    print(json.dumps({"tool": "lorafit", "settings": settings, "per_class": a.per_class, "seed_data": a.seed_data,
                      "train_rows": len(train), "total_wall_s": round(wall, 1),
                      "train_wall_s": round(m["train_wall_seconds"], 1), "prepare_s": round(m["prepare_seconds"], 1),
                      "train_samples_per_s": round(m["train_samples_per_second"], 1), "steps": m["steps"],
                      "best_step": m["best_step"], "val_accuracy": m["validation"].get("accuracy"),
                      "test_accuracy": round(acc, 4), "test_ece": round(scores["ece"], 4),
                      "test_ece_uncalibrated": round(scores["uncalibrated"]["ece"], 4),
                      "temperature": clf.temperature, "predict_samples_per_s": round(len(test) / (time.perf_counter() - t1), 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "cached_layers": m["cached_layers"], "precision": m["precision"], "epochs": m["epochs"],
                      "mfu": round(m["mfu"], 3), "matmul_peak_gflops": round(m["matmul_peak_gflops"]),
                      "loop_s": round(m["loop_seconds"], 1), "max_length": clf.train_config.max_length,
                      "estimated_train_s": round(m.get("estimated_train_seconds") or 0, 1), **machine(),
                      "command": " ".join(["python", *sys.argv])}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
