"""How much of lorafit's validation holdout the training part already holds (``lorafit.overlap``), and, given a
trained run, what a temperature fitted on each part of the holdout does on a test set.

For every data set: the holdout lorafit draws with ``validation_overlap="keep"`` (stratified 10%, ``--seed``, default 0), the
share of its rows whose text occurs in a training text, and the time the search took. With ``--run RUN_DIR``
(a run trained on that split with ``--validation-overlap keep``) and ``--test``: the validation accuracy and
fitted temperature of all held-out rows, of the contained ones and of the rest, and the test ECE (15 bins)
at each temperature. Written for SST-2, whose training rows are phrases cut from its sentences.

Usage: python bench/overlap.py OUT.jsonl NAME=TRAIN.csv [NAME=TRAIN.csv ...] [--seed S] [--run RUN_DIR --test TEST.csv]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from common import Sink


def main() -> None:
    from lorafit.data import stratified_split
    from lorafit.overlap import contained

    p = argparse.ArgumentParser()
    p.add_argument("out"); p.add_argument("data", nargs="+")
    p.add_argument("--run"); p.add_argument("--test"); p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    for item in a.data:
        name, path = item.split("=", 1)
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
        texts, labels = frame["text"].tolist(), frame["label"].tolist()
        train, val = stratified_split(labels, 0.1, seed=a.seed)
        start = time.perf_counter()
        found = contained([texts[i] for i in train], [texts[i] for i in val])
        record = {"data": name, "seed": a.seed, "train_rows": len(train), "validation_rows": len(val),
                  "contained": len(found), "contained_share": round(len(found) / len(val), 4),
                  "searched_inside": found.inside, "search_s": round(time.perf_counter() - start, 2)}
        if a.run and a.test:
            record.update(temperatures(a.run, a.test, [texts[i] for i in val], [labels[i] for i in val], found.mask))
        sink.keep(record)


def temperatures(run: str, test_path: str, val_texts: list[str], val_labels: list[str], mask: np.ndarray) -> dict:
    """Validation accuracy and fitted temperature per part of the holdout, and the test ECE at each."""
    from lorafit import Classifier
    from lorafit.calibration import ece, fit_temperature
    from lorafit.inference import softmax

    clf = Classifier.load(run)
    test = pd.read_csv(test_path, keep_default_na=False, dtype=str)
    test_logits = clf._forward(test["text"].tolist())
    test_y = np.array([clf.classes_.index(label) for label in test["label"]])
    logits, y = clf._forward(val_texts), np.array([clf.classes_.index(label) for label in val_labels])
    parts = {"held_all": np.ones(len(y), dtype=bool), "held_contained": mask, "held_rest": ~mask}
    result = {"run": run, "test_accuracy": round(float((test_logits.argmax(1) == test_y).mean()), 4),
              "test_ece_t1": round(ece(softmax(test_logits, 1.0), test_y), 4)}
    for part, rows in parts.items():
        t = fit_temperature(logits[rows], y[rows])
        result[part] = {"rows": int(rows.sum()), "validation_accuracy": round(float((logits[rows].argmax(1) == y[rows]).mean()), 4),
                        "temperature": round(t, 3), "test_ece": round(ece(softmax(test_logits, t), test_y), 4)}
    best = fit_temperature(test_logits, test_y)
    result["fitted_on_test"] = {"temperature": round(best, 3), "test_ece": round(ece(softmax(test_logits, best), test_y), 4)}
    return result


if __name__ == "__main__":
    main()
