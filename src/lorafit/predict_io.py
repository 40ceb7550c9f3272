"""Prediction records and writing them to CSV or JSONL (atomically, input order kept)."""
from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

from lorafit.errors import DataError
from lorafit.rundir import current_umask

CHUNK = 4096
"""Texts classified per call, so probabilities of huge files are not all held at once."""


def prediction_records(clf, texts: list[str], top_k: int | None = None, threshold: float | None = None) -> list[dict]:
    """One dict per text: ``text``, ``label``, ``score`` and ``probabilities`` by label name.

    ``probabilities`` holds every label in ``classes_`` order, or the ``top_k`` most probable, best first.
    ``label`` is the run's unknown label where the classifier abstains (see ``Classifier.decide``);
    ``score`` is always the top probability.
    """
    records = []
    for start in range(0, len(texts), CHUNK):
        chunk = texts[start:start + CHUNK]
        probs = clf.predict_proba(chunk)
        for text, row, label in zip(chunk, probs, clf.decide(probs, threshold)):
            order = range(len(row)) if top_k is None else row.argsort()[::-1][:top_k]
            records.append({"text": text, "label": label, "score": float(row.max()),
                            "probabilities": {clf.classes_[i]: float(row[i]) for i in order}})
    return records


def write_predictions(path: str | Path, records: list[dict], labels: list[str]) -> None:
    """Write ``records`` to ``.jsonl`` (objects as printed) or ``.csv`` (text, label, score, p_<label>...).

    The file appears whole or not at all (written to a temporary sibling, then renamed).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise DataError(f"--output must end in .jsonl or .csv, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            if suffix == ".jsonl":
                for record in records:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            else:
                writer = csv.writer(handle)
                writer.writerow(["text", "label", "score"] + [f"p_{label}" for label in labels])
                for r in records:
                    writer.writerow([r["text"], r["label"], f"{r['score']:.6g}"]
                                    + [f"{r['probabilities'].get(label, float('nan')):.6g}" for label in labels])
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
