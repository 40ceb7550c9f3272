"""Linear-probe-then-fine-tune: fit a logistic regression on frozen embeddings and start the head from it.

With LoRA's B matrices at zero the adapted encoder equals the base encoder, so the embeddings here are
the base model's; the fitted probe is the head's starting point, and LoRA then improves on it.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression


def fit_probe(features: np.ndarray, label_ids: np.ndarray, num_labels: int, c: float = 10.0,
              seed: int = 0, balanced: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on ``features``; returns softmax weights ``(W, b)`` for all labels.

    ``balanced`` weights each class by its inverse frequency (as ``--class-weights auto`` does in training).

    Labels absent from the training rows get a zero weight row and a very low bias.
    """
    present = np.unique(label_ids)
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed, class_weight="balanced" if balanced else None)
    clf.fit(features, label_ids)
    coef, intercept = clf.coef_, clf.intercept_
    if len(present) == 2 and coef.shape[0] == 1:  # binary: sklearn keeps one row; softmax needs two
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = np.zeros((num_labels, features.shape[1]), dtype=np.float32)
    bias = np.full(num_labels, -10.0, dtype=np.float32)
    weight[present] = coef
    bias[present] = intercept
    return weight, bias


def init_head(head: torch.nn.Module, weight: np.ndarray, bias: np.ndarray) -> None:
    """Copy probe weights into the (peft-wrapped) linear head."""
    linear = getattr(head, "modules_to_save", None)
    linear = linear["default"] if linear is not None else head
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight))
        linear.bias.copy_(torch.from_numpy(bias))


def fit_multilabel_probe(features: np.ndarray, targets: np.ndarray, c: float = 10.0, seed: int = 0,
                         balanced: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest logistic regressions on ``features``, one per column of the 0/1 ``targets``; ``(W, b)``.

    A label that is always absent (or always present) gets a zero weight row and the bias of its smoothed
    rate, so the head starts at that rate.
    """
    rows, labels = targets.shape
    weight = np.zeros((labels, features.shape[1]), dtype=np.float32)
    bias = np.zeros(labels, dtype=np.float32)
    for j in range(labels):
        positives = int(targets[:, j].sum())
        if positives in (0, rows):
            rate = (positives + 0.5) / (rows + 1.0)
            bias[j] = np.log(rate / (1.0 - rate))
            continue
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed, class_weight="balanced" if balanced else None)
        clf.fit(features, targets[:, j])
        weight[j], bias[j] = clf.coef_[0], clf.intercept_[0]
    return weight, bias


def fit_ridge_probe(features: np.ndarray, targets: np.ndarray, alpha: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression of the (standardised) ``targets`` on ``features``: the regression head's ``(W, b)``,
    ``W`` of shape ``(1, features)``; ``alpha`` is the logistic probe's ``1 / C``."""
    from sklearn.linear_model import Ridge

    ridge = Ridge(alpha=alpha).fit(features, targets)
    return ridge.coef_.reshape(1, -1).astype(np.float32), np.array([ridge.intercept_], dtype=np.float32)
