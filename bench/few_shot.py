"""Few-shot benchmark: N labeled examples per class, several data seeds, on each data set: `lorafit train`
(defaults) vs the reference frozen-encoder probe (`probe_recipe.py`) vs TF-IDF + logistic regression.
Each seed draws its own N rows per class from the full training file (the probe recipe's sampling, with
the seed as random_state); the same rows go to every tool, which is then scored on the full test file.

Usage: python bench/few_shot.py OUT.jsonl [--per-class 8] [--seeds 0 1 2 3 4]
           [--data banking77=TRAIN.csv,TEST.csv ...] [--lorafit-args "..."]
Prints a Markdown table of mean and standard deviation per data set and tool.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import pandas as pd

from common import Sink, lorafit, model_dir, probe

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
DEFAULT_DATA = [f"banking77={SHARED}/banking77/train.csv,{SHARED}/banking77/test.csv",
                f"sst2={SHARED}/sst2/train.csv,{SHARED}/sst2/validation.csv"]


def sample(train: str, per_class: int, seed: int) -> pd.DataFrame:
    frame = pd.read_csv(train, keep_default_na=False, dtype=str)
    return frame.sample(frac=1, random_state=seed).groupby("label").head(per_class)


def tfidf(train: pd.DataFrame, test: str) -> dict:
    """TF-IDF of word 1-2 grams + logistic regression (C=10, as the probe)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    start = time.perf_counter()
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          LogisticRegression(C=10, max_iter=3000)).fit(train["text"], train["label"])
    wall = time.perf_counter() - start
    frame = pd.read_csv(test, keep_default_na=False, dtype=str)
    accuracy = float((model.predict(frame["text"]) == frame["label"].values).mean())
    return {"tool": "tfidf_logreg", "train_wall_s": round(wall, 2), "test_accuracy": round(accuracy, 4)}


def summary(results: list[dict]) -> str:
    rows = ["| data | tool | runs | test accuracy, mean ± sd | train wall, mean |", "|---|---|---|---|---|"]
    keys = sorted({(r["data"], r["tool"]) for r in results})
    for data, tool in keys:
        these = [r for r in results if (r["data"], r["tool"]) == (data, tool)]
        acc = [100 * r["test_accuracy"] for r in these]
        wall = [r.get("train_process_wall_s", r.get("train_wall_s", 0)) for r in these]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        rows.append(f"| {data} | {tool} | {len(these)} | {statistics.mean(acc):.2f} ± {sd:.2f} % | "
                    f"{statistics.mean(wall):.1f} s |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--per-class", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--data", nargs="+", default=DEFAULT_DATA, help="NAME=TRAIN.csv,TEST.csv")
    p.add_argument("--lorafit-args", default="", help="extra `lorafit train` flags, space-separated")
    p.add_argument("--tools", nargs="+", default=["lorafit", "probe", "tfidf"])
    a = p.parse_args()
    model = model_dir()
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    for spec in a.data:
        name, files = spec.split("=", 1)
        train, test = files.split(",")
        for seed in a.seeds:
            rows = sample(train, a.per_class, seed)
            with tempfile.TemporaryDirectory() as work:
                path = os.path.join(work, "train.csv")
                rows.to_csv(path, index=False)
                common = {"data": name, "seed": seed, "per_class": a.per_class, "train_rows": len(rows)}
                if "lorafit" in a.tools:
                    sink.keep({**lorafit(path, test, work, ["--seed", str(seed), *a.lorafit_args.split()]), **common})
                if "probe" in a.tools:
                    sink.keep({**probe(model, path, test), **common})
                if "tfidf" in a.tools:
                    sink.keep({**tfidf(rows, test), **common})
    print(summary(sink.results))


if __name__ == "__main__":
    main()
