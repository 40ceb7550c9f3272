"""The check behind ``AUTO_LABEL_EXAMPLES`` (lorafit.config): a logistic-regression probe on the frozen
MiniLM embeddings of N rows per class (the few-shot benchmark's sampling, seeds 0-4), trained without label
examples, with 1 and with 4 per label ("this sentence is {label}", underscores as spaces), scored on TEST.
Also the zero-shot accuracy of the label texts alone (nearest label text by cosine similarity).

Usage: python bench/label_examples_probe.py OUT.jsonl --data NAME=TRAIN.csv,TEST.csv [...] [--per-class 8]
"""
from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
import pandas as pd
import torch

from common import Sink


def embedder():
    from lorafit.models import load_encoder, pool

    encoder, tokenizer = load_encoder("minilm")
    encoder.eval()

    @torch.inference_mode()
    def embed(texts: list[str]) -> np.ndarray:
        parts = []
        for i in range(0, len(texts), 128):
            batch = tokenizer(texts[i:i + 128], padding=True, truncation=True, max_length=128, return_tensors="pt")
            parts.append(pool(encoder(**batch).last_hidden_state, batch["attention_mask"], "mean"))
        return torch.cat(parts).numpy()
    return embed


def main() -> None:
    from sklearn.linear_model import LogisticRegression

    from lorafit.label_examples import label_text

    p = argparse.ArgumentParser()
    p.add_argument("out"); p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--per-class", type=int, default=8)
    a = p.parse_args()
    sink, embed = Sink(a.out, " ".join(["python", *sys.argv])), embedder()
    for spec in a.data:
        name, files = spec.split("=", 1)
        train_path, test_path = files.split(",")
        train = pd.read_csv(train_path, keep_default_na=False, dtype=str)
        test = pd.read_csv(test_path, keep_default_na=False, dtype=str)
        labels = sorted(set(train["label"]))
        x_test, y_test = embed(test["text"].tolist()), np.array([labels.index(v) for v in test["label"]])
        names = embed([label_text(label, "this sentence is {}") for label in labels])
        unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
        zero_shot = float(((unit(x_test) @ unit(names).T).argmax(1) == y_test).mean())
        scores: dict[int, list[float]] = {0: [], 1: [], 4: []}
        for seed in range(5):
            rows = train.sample(frac=1, random_state=seed).groupby("label").head(a.per_class)
            x, y = embed(rows["text"].tolist()), np.array([labels.index(v) for v in rows["label"]])
            for count in scores:
                xs = np.vstack([x, *[names] * count])
                ys = np.concatenate([y, *[np.arange(len(labels))] * count])
                model = LogisticRegression(C=10, max_iter=3000).fit(xs, ys)
                scores[count].append(float(model.score(x_test, y_test)))
        sink.keep({"data": name, "per_class": a.per_class, "zero_shot_label_texts": round(zero_shot, 4),
                   **{f"probe_{count}_per_label": [round(v, 4) for v in s] for count, s in scores.items()},
                   **{f"probe_{count}_per_label_mean": round(statistics.mean(s), 4) for count, s in scores.items()}})


if __name__ == "__main__":
    main()
