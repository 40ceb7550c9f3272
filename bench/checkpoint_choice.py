"""Which evaluated checkpoint a run keeps, and what each would have scored on the test data.

Trains lorafit with its defaults on TRAIN, records every validation evaluation's accuracy and loss and the
trainable weights at that point, then scores each of those checkpoints on TEST. Shows what the checkpoint
choice (best validation metric, ties to the lower validation loss) is worth against the alternatives.

Usage: python bench/checkpoint_choice.py TRAIN.csv TEST.csv OUT.jsonl [--seeds 0 1 ...]   (one line per seed)
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd
import torch

from common import Sink


def main() -> None:
    import lorafit.training as training
    from lorafit import Classifier

    p = argparse.ArgumentParser()
    p.add_argument("train"); p.add_argument("test"); p.add_argument("out")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    a = p.parse_args()
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    snapshots: list[tuple[dict, dict]] = []
    record = training.Trainer._record

    def keeping(self, result, *args):
        stop = record(self, result, *args)
        snapshots.append((result.history[-1], training._trainable_state(self.model)))
        return stop

    training.Trainer._record = keeping
    train = pd.read_csv(a.train, keep_default_na=False, dtype=str)
    test = pd.read_csv(a.test, keep_default_na=False, dtype=str)
    for seed in a.seeds:
        snapshots.clear()
        clf = Classifier(seed=seed).fit(train["text"].tolist(), train["label"].tolist())
        params = dict(clf.model.named_parameters())
        kept = clf.metrics_["best_step"]
        rows = []
        for history, state in snapshots:
            with torch.no_grad():
                for name, value in state.items():
                    params[name].copy_(value)
            accuracy = clf.evaluate(test["text"].tolist(), test["label"].tolist())["accuracy"]
            rows.append({"step": history["step"], "val_accuracy": history["val_accuracy"],
                         "val_loss": round(history["val_loss"], 4), "test_accuracy": round(accuracy, 4),
                         "kept": history["step"] == kept})
        sink.keep({"check": "checkpoint choice", "seed": seed, "train": a.train, "test": a.test,
                   "precision": clf.metrics_.get("precision"), "checkpoints": rows})


if __name__ == "__main__":
    main()
