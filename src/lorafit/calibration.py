"""Scores that mean what they say: temperature scaling, calibration error, and abstaining below a threshold.

Temperature scaling (Guo et al., 2017) divides every logit by one number ``T`` fitted on validation data by
minimising the negative log-likelihood: the ranking (and so the predicted label) never changes, only how
sure the probabilities are. Abstaining returns an "unknown" label when the top probability is below a
threshold, chosen on validation data for a target precision on the rows that do get an answer.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from lorafit.inference import softmax

logger = logging.getLogger(__name__)

ECE_BINS = 15
TEMPERATURE_RANGE = (0.05, 20.0)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes. ``nll(np.array([[0.5, 0.5]]), np.array([0]))`` is ln 2."""
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)))) if len(y) else 0.0


def ece(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the row-weighted mean gap between confidence and accuracy over
    ``bins`` equal-width bins of the top probability."""
    if not len(y):
        return 0.0
    confidence, correct = probs.max(1), probs.argmax(1) == y
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        in_bin = which == b
        total += in_bin.sum() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total / len(y))


def brier(probs: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score: mean over rows of the squared distance to the one-hot truth (0 is perfect, 2 worst)."""
    if not len(y):
        return 0.0
    onehot = np.zeros_like(probs, dtype=np.float64)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def scores(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``ece``, ``brier`` and ``nll`` of probabilities against label ids."""
    return {"ece": ece(probs, y), "brier": brier(probs, y), "nll": nll(probs, y)}


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature that minimises the NLL of ``softmax(logits / T)`` on ``(logits, y)``.

    The NLL is convex in ``1 / T``, so a bounded scalar search finds the optimum.
    Example:
        >>> fit_temperature(np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0]]), np.array([0, 1, 1])) > 1
        True
    """
    from scipy.optimize import minimize_scalar

    if not len(y):
        return 1.0
    low, high = TEMPERATURE_RANGE
    found = minimize_scalar(lambda inverse: nll(softmax(logits, 1.0 / inverse), y),
                            bounds=(1.0 / high, 1.0 / low), method="bounded", options={"xatol": 1e-4})
    return float(1.0 / found.x)


@dataclass
class Threshold:
    """An abstention threshold chosen on validation data, with what it gave there."""

    threshold: float
    """Top probability below which the answer is the unknown label."""
    precision: float
    """Accuracy on the validation rows that got an answer."""
    coverage: float
    """Share of validation rows that got an answer."""
    reached: bool
    """Whether the target precision was reached (else: the threshold with the best precision)."""


def choose_threshold(probs: np.ndarray, y: np.ndarray, target_precision: float) -> Threshold:
    """The lowest threshold (largest coverage) whose answered validation rows reach ``target_precision``.

    When no threshold reaches it, the one with the highest precision is returned with ``reached`` False.
    Example:
        >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
        >>> choose_threshold(p, np.array([0, 0, 1, 0]), 0.99).threshold
        0.8
    """
    confidence = probs.max(1)
    order = np.argsort(-confidence, kind="stable")
    correct = (probs.argmax(1) == y)[order]
    sorted_conf = confidence[order]
    # A threshold answers every row with at least its confidence: evaluate the cut only after the last of ties.
    last_of_tie = np.append(sorted_conf[1:] < sorted_conf[:-1], True)
    precision = np.cumsum(correct) / np.arange(1, len(y) + 1)
    candidates = np.flatnonzero(last_of_tie & (precision >= target_precision))
    reached = len(candidates) > 0
    if reached:
        k = int(candidates[-1])
    else:
        tie_ends = np.flatnonzero(last_of_tie)
        k = int(tie_ends[np.argmax(precision[tie_ends])])
    return Threshold(float(sorted_conf[k]), float(precision[k]), (k + 1) / len(y), reached)


def decide(probs: np.ndarray, classes: list[str], threshold: float | None, unknown_label: str) -> list[str]:
    """The most probable label of each row of ``probs``, or ``unknown_label`` where the top probability is below
    ``threshold`` (None or 0: never). ``decide(np.array([[0.6, 0.4]]), ["a", "b"], 0.7, "?")`` is ``["?"]``."""
    if not len(probs):
        return []
    labels = [classes[i] for i in probs.argmax(1)]
    if threshold:
        labels = [unknown_label if p < threshold else label for label, p in zip(labels, probs.max(1))]
    return labels


def selective(probs: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    """``coverage`` (share answered) and ``selective_accuracy`` (accuracy on answered rows) at ``threshold``."""
    answered = probs.max(1) >= threshold
    accuracy = float((probs.argmax(1)[answered] == y[answered]).mean()) if answered.any() else 0.0
    return {"threshold": float(threshold), "coverage": float(answered.mean()) if len(y) else 0.0,
            "selective_accuracy": accuracy}


def accuracy_at_coverage(probs: np.ndarray, y: np.ndarray, coverage: float) -> float:
    """Accuracy on the ``coverage`` share of rows with the highest top probability (risk-coverage curve)."""
    keep = max(1, int(round(coverage * len(y))))
    order = np.argsort(-probs.max(1), kind="stable")[:keep]
    return float((probs.argmax(1)[order] == y[order]).mean())


def abstain_report(decided: list, labels: list[str], threshold: float, unknown_label: str,
                   oos_label: str | None = None) -> dict:
    """Coverage and accuracy on the answered rows of predictions ``decided`` (``unknown_label``: abstained);
    with ``oos_label``, in-scope accuracy and out-of-scope recall as in the CLINC150 literature."""
    decided, truth = np.array(decided, dtype=object), np.array(labels, dtype=object)
    answered = decided != unknown_label
    report = {"threshold": threshold, "unknown_label": unknown_label,
              "coverage": float(answered.mean()) if len(truth) else 0.0,
              "selective_accuracy": float((decided[answered] == truth[answered]).mean()) if answered.any() else 0.0}
    if oos_label is not None:
        out_of_scope = truth == oos_label
        said_oos = ~answered | (decided == oos_label)
        report["oos_label"] = oos_label
        report["in_scope_accuracy"] = (float((decided[~out_of_scope] == truth[~out_of_scope]).mean())
                                       if (~out_of_scope).any() else None)
        report["oos_recall"] = float(said_oos[out_of_scope].mean()) if out_of_scope.any() else None
    return report
