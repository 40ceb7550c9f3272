"""Pure metric functions over label ids (scikit-learn underneath)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of exact matches. ``accuracy([0, 1], [0, 0]) == 0.5``."""
    return float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> float:
    """F1 averaged over the classes present in ``y_true`` (classes absent from the data do not count)."""
    present = sorted(set(np.asarray(y_true).tolist()))
    if not present:
        return 0.0
    return float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))


def headline(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> dict[str, float]:
    """The two model-selection metrics: ``accuracy`` and ``macro_f1``."""
    return {"accuracy": accuracy(y_true, y_pred), "macro_f1": macro_f1(y_true, y_pred, n_labels)}


def report(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix, by label name.

    ``labels`` orders the matrix: the model's labels first, then any label only the data has.
    Example:
        >>> r = report(["a", "b"], ["a", "a"], ["a", "b"])
        >>> r["accuracy"], r["confusion_matrix"]
        (0.5, [[1, 0], [1, 0]])
    """
    present = [label for label in labels if label in set(y_true)]
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    per_class = {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for label, p, r, f, s in zip(labels, precision, recall, f1, support)}
    macro = float(np.mean([per_class[label]["f1"] for label in present])) if present else 0.0
    return {"accuracy": accuracy(np.array(y_true), np.array(y_pred)), "macro_f1": macro,
            "per_class": per_class, "labels": list(labels),
            "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
            "n": len(y_true)}
