"""Linear-probe-then-fine-tune: fit a logistic regression on frozen embeddings and start the head from it.

With LoRA's B matrices at zero the adapted encoder equals the base encoder, so the embeddings here are
the base model's; the fitted probe is the head's starting point, and LoRA then improves on it.
"""
from __future__ import annotations

import numpy as np
import torch


def fit_probe(features: np.ndarray, label_ids: np.ndarray, num_labels: int, c: float = 10.0,
              balanced: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on ``features``; returns softmax weights ``(W, b)`` for all labels.

    The estimator is scikit-learn's ``LogisticRegression(C=c)`` (lbfgs, the default): the same objective,
    solved by :func:`_logistic_lbfgs` in torch (see there). ``balanced`` weights each class by its inverse
    frequency (as ``--class-weights auto`` does in training), as ``class_weight="balanced"`` does.

    Labels absent from the training rows get a zero weight row and a very low bias.
    """
    present, y = np.unique(label_ids, return_inverse=True)
    weight = np.zeros((num_labels, features.shape[1]), dtype=np.float32)
    bias = np.full(num_labels, -10.0, dtype=np.float32)
    if len(present) == 1:  # one class: nothing to separate, the head always answers it
        weight[present], bias[present] = 0.0, 0.0
        return weight, bias
    coef, intercept = _logistic_lbfgs(features, y, len(present), c, _class_weights(y, len(present), balanced))
    if len(present) == 2:  # two rows as softmax wants them: symmetric halves of the one logistic row
        coef, intercept = np.vstack([-coef[0] / 2, coef[0] / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    weight[present] = coef
    bias[present] = intercept
    return weight, bias


def _class_weights(y: np.ndarray, classes: int, balanced: bool) -> np.ndarray:
    """Each row's weight: ``rows / (classes * rows of its class)`` when ``balanced`` (scikit-learn's
    ``class_weight="balanced"``), else 1."""
    if not balanced:
        return np.ones(len(y))
    return len(y) / (classes * np.bincount(y, minlength=classes)[y])


def _logistic_lbfgs(features: np.ndarray, y: np.ndarray, classes: int, c: float, sample_weight: np.ndarray,
                    tol: float = 1e-4, max_iter: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's L2 logistic regression (``LogisticRegression(C=c, tol=tol, max_iter=max_iter)``): the
    weighted mean cross-entropy plus ``||W||^2 / (2 c sum(sample_weight))``, the intercept unpenalised;
    multinomial over ``classes`` softmax rows, and for two classes its single logistic row (of class 1 against
    class 0). Solved in float64 by torch's L-BFGS (history 10, strong Wolfe line search), stopping
    as scikit-learn's lbfgs does when no gradient entry exceeds ``tol``, with the gradient written out
    (no autograd). scikit-learn's own solver spent about 4x the time on BANKING77's 10,003 x 384 features
    (numpy's float64 products on OpenBLAS and scipy's L-BFGS-B bookkeeping), for the same labels on 99.9% of
    the training rows (BENCHMARKS.md, "The probe fit in torch")."""
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float64))
    rows = len(y)
    onehot = torch.zeros(rows, classes, dtype=torch.float64)
    onehot[torch.arange(rows), torch.from_numpy(y).long()] = 1.0
    weights = torch.from_numpy(np.asarray(sample_weight, dtype=np.float64))
    total = float(weights.sum())
    scale = (weights / total)[:, None]
    l2 = 1.0 / (c * total)
    binary = classes == 2  # one row of logits against a fixed zero row: scikit-learn's binary model
    w = torch.zeros(1 if binary else classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1 if binary else classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=tol,
                                  tolerance_change=64 * np.finfo(np.float64).eps, history_size=10,
                                  line_search_fn="strong_wolfe")

    @torch.no_grad()
    def loss_and_gradient() -> torch.Tensor:
        logits = torch.addmm(b, x, w.T)
        if binary:
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        norm = torch.logsumexp(logits, dim=1, keepdim=True)
        loss = (scale * (norm - logits) * onehot).sum() + 0.5 * l2 * (w * w).sum()
        grad = torch.exp(logits - norm).sub_(onehot).mul_(scale)
        if binary:
            grad = grad[:, 1:]
        w.grad = torch.addmm(w, grad.T, x, beta=l2)
        b.grad = grad.sum(0)
        return loss

    optimizer.step(loss_and_gradient)
    return w.detach().numpy(), b.detach().numpy()


def init_head(head: torch.nn.Module, weight: np.ndarray, bias: np.ndarray) -> None:
    """Copy probe weights into the (peft-wrapped) linear head."""
    linear = getattr(head, "modules_to_save", None)
    linear = linear["default"] if linear is not None else head
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight))
        linear.bias.copy_(torch.from_numpy(bias))


def fit_multilabel_probe(features: np.ndarray, targets: np.ndarray, c: float = 10.0,
                         balanced: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest logistic regressions on ``features``, one per column of the 0/1 ``targets``; ``(W, b)``.

    A label that is always absent (or always present) gets a zero weight row and the bias of its smoothed
    rate, so the head starts at that rate.
    """
    rows, labels = targets.shape
    weight = np.zeros((labels, features.shape[1]), dtype=np.float32)
    bias = np.zeros(labels, dtype=np.float32)
    features = np.ascontiguousarray(features, dtype=np.float64)  # once: each label's solve then shares it
    for j in range(labels):
        positives = int(targets[:, j].sum())
        if positives in (0, rows):
            rate = (positives + 0.5) / (rows + 1.0)
            bias[j] = np.log(rate / (1.0 - rate))
            continue
        column = targets[:, j].astype(np.int64)
        coef, intercept = _logistic_lbfgs(features, column, 2, c, _class_weights(column, 2, balanced))
        weight[j], bias[j] = coef[0], intercept[0]
    return weight, bias


def fit_ridge_probe(features: np.ndarray, targets: np.ndarray, alpha: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression of the (standardised) ``targets`` on ``features``: the regression head's ``(W, b)``,
    ``W`` of shape ``(1, features)``; ``alpha`` is the logistic probe's ``1 / C``."""
    from sklearn.linear_model import Ridge

    ridge = Ridge(alpha=alpha).fit(features, targets)
    return ridge.coef_.reshape(1, -1).astype(np.float32), np.array([ridge.intercept_], dtype=np.float32)
