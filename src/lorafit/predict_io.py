"""Prediction records and writing them to CSV or JSONL (atomically, input order kept)."""
from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from lorafit import distributed
from lorafit.errors import DataError
from lorafit.rundir import atomic_file

CHUNK = 4096
"""Texts classified per call, so probabilities of huge inputs are not all held at once."""


def iter_predictions(clf, chunks: Iterable[list[str]], top_k: int | None = None,
                     threshold: float | None = None) -> Iterator[dict]:
    """Prediction records for chunks of texts, lazily and in input order (see :func:`prediction_records`).

    Each call to ``clf.predict_proba`` sorts its texts by length into batches and gives rows back in input
    order; only one chunk's probabilities are held at a time, so files larger than memory stream through.
    Under ``torchrun`` / ``accelerate launch`` each process classifies a slice of every chunk and every
    process gets all the records, in input order (:func:`sharded_proba`).
    """
    for texts in chunks:
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start:start + CHUNK]
            probs = sharded_proba(clf, chunk)
            for text, row, label in zip(chunk, probs, clf.decide(probs, threshold)):
                order = range(len(row)) if top_k is None else row.argsort()[::-1][:top_k]
                yield {"text": text, "label": label, "score": float(row.max()),
                       "probabilities": {clf.classes_[i]: float(row[i]) for i in order}}


def sharded_proba(clf, texts: list[str]) -> np.ndarray:
    """``clf.predict_proba(texts)``; with several processes each computes a contiguous slice, and the
    slices are gathered back into input order on every process."""
    if not distributed.launched():
        return clf.predict_proba(texts)
    rows = distributed.shard(len(texts), distributed.rank(), distributed.world_size())
    return distributed.gather_rows(clf.predict_proba(texts[rows[0]:rows[-1] + 1] if len(rows) else []))


def prediction_records(clf, texts: list[str], top_k: int | None = None, threshold: float | None = None) -> list[dict]:
    """One dict per text: ``text``, ``label``, ``score`` and ``probabilities`` by label name.

    ``probabilities`` holds every label in ``classes_`` order, or the ``top_k`` most probable, best first.
    ``label`` is the unknown label where the classifier abstains (``clf.decide``; ``threshold`` overrides
    the run's own); ``score`` is always the top probability.
    """
    return list(iter_predictions(clf, [texts], top_k, threshold))


def check_prediction_output(path: Path) -> str:
    """The suffix of a prediction output file (``.jsonl`` or ``.csv``), else a DataError."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise DataError(f"--output must end in .jsonl or .csv, got {path.name}")
    return suffix


def write_predictions(path: str | Path, records: Iterable[dict], labels: list[str]) -> int:
    """Write ``records`` to ``.jsonl`` (objects as printed) or ``.csv`` (text, label, score, p_<label>...).

    ``records`` may be a generator: each record is written as it comes. The file appears whole or not at
    all (written to a temporary sibling, then renamed). Returns the number of records written.
    """
    path = Path(path)
    suffix = check_prediction_output(path)
    count = 0
    with atomic_file(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        if suffix == ".csv":
            writer.writerow(["text", "label", "score"] + [f"p_{label}" for label in labels])
        for r in records:
            if suffix == ".jsonl":
                handle.write(json.dumps(r, ensure_ascii=False) + "\n")
            else:
                writer.writerow([r["text"], r["label"], f"{r['score']:.6g}"]
                                + [f"{r['probabilities'].get(label, float('nan')):.6g}" for label in labels])
            count += 1
    return count
