"""Accuracy of a trained run on a test file when its texts are cut at the run's training ``max_length`` against
read whole (up to the model's limit: ``predict_max_length="auto"``), the same trained model both ways.

One JSON line: rows, how many test texts are longer than ``max_length``, and the accuracy either way.

Usage: python bench/predict_length.py RUN_DIR TEST.csv OUT.jsonl
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np
import pandas as pd

from common import Sink


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run"); p.add_argument("test"); p.add_argument("out")
    a = p.parse_args()
    from lorafit import Classifier

    clf = Classifier.load(a.run)
    test = pd.read_csv(a.test, keep_default_na=False, dtype=str)
    texts, truth = test["text"].tolist(), np.array(test["label"].tolist())
    cut, whole = clf.train_config.max_length, clf.model.encoder.config.max_position_embeddings
    lengths = np.array([len(ids) for ids in clf.tokenizer(texts)["input_ids"]])
    record = {"run": a.run, "test": a.test, "rows": len(texts), "max_length": cut, "longer": int((lengths > cut).sum())}
    for name, length in (("cut", cut), ("whole", whole)):
        clf.train_config = dataclasses.replace(clf.train_config, predict_max_length=length)
        record[f"accuracy_{name}_{length}"] = round(float((np.array(clf.predict(texts)) == truth).mean()), 4)
    Sink(a.out, " ".join(["python", *sys.argv])).keep(record)
    print(record)


if __name__ == "__main__":
    main()
