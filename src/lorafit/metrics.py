"""Pure metric functions over label ids (scikit-learn underneath)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, mean_absolute_error, mean_squared_error, \
    precision_recall_fscore_support


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


def multilabel_headline(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """``micro_f1``, ``macro_f1`` (over labels with positives in ``y_true``) and ``subset_accuracy`` (rows whose
    whole label set is right) of 0/1 matrices, shape ``(rows, labels)``.

    Example:
        >>> multilabel_headline(np.array([[1, 0], [1, 1]]), np.array([[1, 0], [1, 0]]))["subset_accuracy"]
        0.5
    """
    if not len(y_true):
        return {"micro_f1": 0.0, "macro_f1": 0.0, "subset_accuracy": 0.0}
    present = np.flatnonzero(np.asarray(y_true).sum(0) > 0)
    macro = float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)) if len(present) else 0.0
    return {"micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)), "macro_f1": macro,
            "subset_accuracy": float(accuracy_score(y_true, y_pred))}


def multilabel_report(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """:func:`multilabel_headline` plus per-label precision/recall/F1/support, by label name."""
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(len(labels))), zero_division=0)
    per_label = {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for label, p, r, f, s in zip(labels, precision, recall, f1, support)}
    return {**multilabel_headline(y_true, y_pred), "per_label": per_label, "labels": list(labels),
            "n": int(len(y_true))}


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """``mse``, ``mae``, ``rmse``, ``pearson`` and ``spearman`` of predicted against true values.

    A correlation is 0.0 where it is undefined (fewer than two rows, or constant values).
    Example:
        >>> regression_scores(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))["mae"]
        0.3333333333333333
    """
    from scipy.stats import pearsonr, spearmanr

    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if not len(y_true):
        return {"mse": 0.0, "mae": 0.0, "rmse": 0.0, "pearson": 0.0, "spearman": 0.0}
    mse = float(mean_squared_error(y_true, y_pred))
    varied = len(y_true) > 1 and np.ptp(y_true) > 0 and np.ptp(y_pred) > 0
    return {"mse": mse, "mae": float(mean_absolute_error(y_true, y_pred)), "rmse": float(np.sqrt(mse)),
            "pearson": float(pearsonr(y_true, y_pred)[0]) if varied else 0.0,
            "spearman": float(spearmanr(y_true, y_pred)[0]) if varied else 0.0}
