"""How far temperature scaling can go on one test set: a trained run's test ECE at temperature 1, at its stored
temperature (fitted on its validation split), at the temperature fitted on the test set itself (the best any
single temperature can do there), with that fit cross-validated on random halves of the test set, and the
ECE a perfectly calibrated model would still show on that many rows (labels drawn from the model's own
calibrated probabilities, 200 draws). Written for SST-2, whose training rows are phrases and whose GLUE
validation rows are whole sentences.

Usage: python bench/calibration_limits.py RUN_DIR TEST.csv OUT.jsonl
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from common import Sink


def main() -> None:
    from lorafit import Classifier
    from lorafit.calibration import ece, fit_temperature
    from lorafit.inference import softmax

    p = argparse.ArgumentParser()
    p.add_argument("run_dir"); p.add_argument("test"); p.add_argument("out")
    a = p.parse_args()
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    clf = Classifier.load(a.run_dir)
    test = pd.read_csv(a.test, keep_default_na=False, dtype=str)
    logits = clf._forward(test["text"].tolist())
    y = np.array([clf.classes_.index(label) for label in test["label"]])
    rng = np.random.default_rng(0)
    best = fit_temperature(logits, y)
    halves = []
    for _ in range(20):
        order = rng.permutation(len(y))
        fit, score = order[:len(y) // 2], order[len(y) // 2:]
        halves.append(ece(softmax(logits[score], fit_temperature(logits[fit], y[fit])), y[score]))
    calibrated = softmax(logits, clf.temperature)
    floor = [ece(calibrated, np.array([rng.choice(len(row), p=row) for row in calibrated])) for _ in range(200)]
    sink.keep({"check": "temperature scaling limits", "run_dir": a.run_dir, "test": a.test, "rows": len(y),
               "accuracy": round(float((logits.argmax(1) == y).mean()), 4),
               "ece_t1": round(ece(softmax(logits, 1.0), y), 4),
               "stored_temperature": round(clf.temperature, 3), "ece_stored": round(ece(calibrated, y), 4),
               "test_fitted_temperature": round(best, 3), "ece_test_fitted": round(ece(softmax(logits, best), y), 4),
               "ece_half_fitted_mean": round(float(np.mean(halves)), 4),
               "ece_if_calibrated_mean": round(float(np.mean(floor)), 4),
               "ece_if_calibrated_p90": round(float(np.percentile(floor, 90)), 4)})


if __name__ == "__main__":
    main()
