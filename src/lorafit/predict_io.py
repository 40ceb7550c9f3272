"""Prediction records and writing them to CSV or JSONL (atomically, input order kept)."""
from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from lorafit import distributed
from lorafit.config import MULTI_LABEL, REGRESSION
from lorafit.errors import ConfigError, DataError
from lorafit.rundir import atomic_file
from lorafit.tasks import SingleLabel

CHUNK = 4096
"""Texts classified per call, so probabilities of huge inputs are not all held at once."""


def iter_predictions(clf, chunks: Iterable[list[str]], top_k: int | None = None,
                     threshold: float | None = None) -> Iterator[dict]:
    """Prediction records for chunks of texts, lazily and in input order (see :func:`prediction_records`).

    Each call to ``clf.predict_proba`` sorts its texts by length into batches and gives rows back in input
    order; only one chunk's probabilities are held at a time, so files larger than memory stream through.
    Under ``torchrun`` / ``accelerate launch`` each process classifies a slice of every chunk and every
    process gets all the records, in input order (:func:`sharded`).
    """
    task = clf.task.name
    if task == REGRESSION and threshold is not None:
        raise ConfigError("--threshold applies to classification; this is a regression run")
    for texts in chunks:
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start:start + CHUNK]
            if task == REGRESSION:
                yield from ({**_inputs(text), "value": float(value)}
                            for text, value in zip(chunk, sharded(clf.predict, chunk)))
                continue
            probs = sharded(clf.predict_proba, chunk)
            if task == MULTI_LABEL:
                yield from ({**_inputs(text), "labels": labels, "scores": dict(zip(clf.classes_, map(float, row)))}
                            for text, row, labels in zip(chunk, probs, clf.decide(probs, threshold)))
                continue
            for text, row, label in zip(chunk, probs, clf.decide(probs, threshold)):
                order = range(len(row)) if top_k is None else row.argsort()[::-1][:top_k]
                yield {**_inputs(text), "label": label, "score": float(row.max()),
                       "probabilities": {clf.classes_[i]: float(row[i]) for i in order}}


def _inputs(text) -> dict:
    """The input fields of a record: ``text``, and ``text_pair`` for a pair."""
    return {"text": text[0], "text_pair": text[1]} if isinstance(text, tuple) else {"text": text}


def sharded(method, texts: list) -> np.ndarray:
    """``method(texts)`` (``clf.predict_proba``, or ``clf.predict`` of a regression run); with several processes
    each computes a contiguous slice, and the slices are gathered back into input order on every process."""
    if not distributed.launched():
        return np.asarray(method(texts))
    rows = distributed.shard(len(texts), distributed.rank(), distributed.world_size())
    return distributed.gather_rows(np.asarray(method(texts[rows[0]:rows[-1] + 1] if len(rows) else [])))


def prediction_records(clf, texts: list[str], top_k: int | None = None, threshold: float | None = None) -> list[dict]:
    """One dict per text: ``text`` (and ``text_pair`` for pairs), ``label``, ``score`` and ``probabilities``.

    ``probabilities`` holds every label in ``classes_`` order, or the ``top_k`` most probable, best first.
    ``label`` is the unknown label where the classifier abstains (``clf.decide``; ``threshold`` overrides
    the run's own); ``score`` is always the top probability.

    Multi-label runs give ``text``, ``labels`` (those at or above their thresholds; ``threshold``: one for
    every label) and ``scores`` (every label's sigmoid); regression runs give ``text`` and ``value``.
    """
    return list(iter_predictions(clf, [texts], top_k, threshold))


def check_prediction_output(path: Path) -> str:
    """The suffix of a prediction output file (``.jsonl`` or ``.csv``), else a DataError."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise DataError(f"--output must end in .jsonl or .csv, got {path.name}")
    return suffix


def _csv_header(task: str, labels: list[str], texts: list[str]) -> list[str]:
    if task == REGRESSION:
        return texts + ["value"]
    if task == MULTI_LABEL:
        return texts + ["labels"] + [f"p_{label}" for label in labels]
    return texts + ["label", "score"] + [f"p_{label}" for label in labels]


def _csv_row(r: dict, labels: list[str], task: SingleLabel, texts: list[str]) -> list[str]:
    inputs = [r[t] for t in texts]
    if "value" in r:
        return inputs + [f"{r['value']:.6g}"]
    if "labels" in r:
        return inputs + [task.delimiter.join(r["labels"])] + [f"{r['scores'][label]:.6g}" for label in labels]
    return inputs + [r["label"], f"{r['score']:.6g}"] + [f"{r['probabilities'].get(label, float('nan')):.6g}"
                                                        for label in labels]


def write_predictions(path: str | Path, records: Iterable[dict], labels: list[str], task: SingleLabel | None = None,
                      pairs: bool = False) -> int:
    """Write ``records`` to ``.jsonl`` (objects as printed) or ``.csv`` (text, label, score, p_<label>...;
    multi-label: text, labels joined by the task's delimiter, p_<label>...; regression: text, value; with
    ``pairs``, text_pair after text). ``task``: the predictor's :mod:`lorafit.tasks` task (default single-label).

    ``records`` may be a generator: each record is written as it comes. The file appears whole or not at
    all (written to a temporary sibling, then renamed). Returns the number of records written.
    """
    path, task = Path(path), task or SingleLabel()
    suffix = check_prediction_output(path)
    count, texts = 0, ["text", "text_pair"] if pairs else ["text"]
    with atomic_file(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        if suffix == ".csv":
            writer.writerow(_csv_header(task.name, labels, texts))
        for r in records:
            if suffix == ".jsonl":
                handle.write(json.dumps(r, ensure_ascii=False) + "\n")
            else:
                writer.writerow(_csv_row(r, labels, task, texts))
            count += 1
    return count
