"""Calibration and abstaining on real data: ECE / Brier / NLL of the test set before and after temperature
scaling, accuracy at 90% and 80% coverage, and the abstention threshold chosen on validation for a target
precision, applied to the test set. lorafit's defaults plus ``abstain=True`` (which only adds the threshold).

Usage: python bench/calibration.py OUT.jsonl NAME=TRAIN.csv,TEST.csv [NAME=TRAIN.csv,TEST.csv ...]
       [--target-precision 0.95] [--max-train N] [--keep DIR]
Results: bench/results/calibration.jsonl, summarised in BENCHMARKS.md ("Calibration and abstaining").
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

import sys

from common import Sink


def run(name: str, train_path: str, test_path: str, target: float, max_train: int, keep: str | None) -> dict:
    from lorafit import Classifier

    train = pd.read_csv(train_path, keep_default_na=False, dtype=str)
    if max_train and len(train) > max_train:
        train = train.sample(n=max_train, random_state=0)
    test = pd.read_csv(test_path, keep_default_na=False, dtype=str)
    started = time.perf_counter()
    clf = Classifier(abstain=True, target_precision=target).fit(train["text"].tolist(), train["label"].tolist())
    train_s = time.perf_counter() - started
    result = clf.evaluate(test["text"].tolist(), test["label"].tolist())
    if keep:
        clf.save(f"{keep}/{name}", overwrite=True)
    return {"dataset": name, "train_rows": len(train), "test_rows": len(test), "train_s": round(train_s, 1),
            "accuracy": result["accuracy"], "temperature": clf.temperature,
            "test_calibrated": {k: result[k] for k in ("ece", "brier", "nll")},
            "test_uncalibrated": result["uncalibrated"],
            "validation": clf.calibration_, "accuracy_at_coverage": result["accuracy_at_coverage"],
            "abstain_test": result["abstain"]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("data", nargs="+", help="NAME=TRAIN.csv,TEST.csv")
    p.add_argument("--target-precision", type=float, default=0.95)
    p.add_argument("--max-train", type=int, default=0, help="sample at most N training rows (0: all)")
    p.add_argument("--keep", help="save each trained run directory as DIR/NAME")
    a = p.parse_args()
    sink = Sink(a.out, "python bench/calibration.py " + " ".join(sys.argv[1:]))
    for item in a.data:
        name, paths = item.split("=", 1)
        train_path, test_path = paths.split(",")
        record = run(name, train_path, test_path, a.target_precision, a.max_train, a.keep)
        sink.keep(record)
        before, after = record["test_uncalibrated"], record["test_calibrated"]
        print(f"| {name} | {record['train_rows']} | {100 * record['accuracy']:.2f}% | {record['temperature']:.3f} | "
              f"{before['ece']:.4f} -> {after['ece']:.4f} | {before['brier']:.4f} -> {after['brier']:.4f} | "
              f"{100 * record['accuracy_at_coverage']['90%']:.2f}% / {100 * record['accuracy_at_coverage']['80%']:.2f}% | "
              f"{record['abstain_test']['threshold']:.3f}: coverage {100 * record['abstain_test']['coverage']:.1f}%, "
              f"accuracy {100 * record['abstain_test']['selective_accuracy']:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
