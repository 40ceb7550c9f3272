"""How many token positions lorafit's batches pad, with widths rounded up to multiples of 8 and with exact
widths: the inference / caching batches (length-sorted, up to 256 texts and 4096 tokens) and one epoch of
training batches (length-bucketed, batch 32), on each data set's training texts as lorafit tokenises them
(``max_length="auto"``). No model runs; the figures are counts.

Usage: python bench/padding_share.py OUT.jsonl NAME=TRAIN.csv [NAME=TRAIN.csv ...]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd
from common import Sink, model_dir
from transformers import AutoTokenizer

from lorafit.batching import bucketed_batches, padded_width, sorted_batches
from lorafit.datacheck import auto_max_length


def computed(lengths: np.ndarray, batches: list[np.ndarray], multiple: int) -> int:
    """Token positions the batches compute: each batch is as wide as its longest row, rounded up."""
    return int(sum(len(b) * padded_width(int(lengths[b].max()), multiple) for b in batches))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out"); p.add_argument("data", nargs="+", help="NAME=TRAIN.csv")
    a = p.parse_args()
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    tokenizer = AutoTokenizer.from_pretrained(model_dir())
    for item in a.data:
        name, path = item.split("=", 1)
        texts = pd.read_csv(path, keep_default_na=False, dtype=str)["text"].tolist()
        full = np.array([len(ids) for ids in tokenizer(texts)["input_ids"]])
        limit = auto_max_length(full, tokenizer.model_max_length)
        lengths = np.minimum(full, limit)
        real = int(lengths.sum())
        record = {"dataset": name, "rows": len(texts), "max_length": limit, "real_tokens": real}
        for kind, batches in (("inference", sorted_batches(lengths, 256)),
                              ("training", bucketed_batches(lengths, 32, np.random.default_rng(0)))):
            for multiple in (8, 1):
                record[f"{kind}_padded_share_x{multiple}"] = round(computed(lengths, batches, multiple) / real - 1, 4)
        sink.keep(record)


if __name__ == "__main__":
    main()
