"""lorafit.probe: the logistic-regression probe and copying it into the (peft-wrapped) head."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lorafit.probe import fit_probe, init_head


def _separable(n_classes: int, per_class: int = 20, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim)) * 5
    y = np.repeat(np.arange(n_classes), per_class)
    x = centers[y] + rng.normal(scale=0.3, size=(len(y), dim))
    return x.astype(np.float32), y


def _predict(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return (x @ weight.T + bias).argmax(1)


def test_probe_classifies_separable_features() -> None:
    x, y = _separable(4)
    weight, bias = fit_probe(x, y, num_labels=4)
    assert weight.shape == (4, 8) and bias.shape == (4,)
    assert weight.dtype == np.float32 and bias.dtype == np.float32
    assert (_predict(x, weight, bias) == y).all()


def test_binary_probe_gives_two_rows_that_classify() -> None:
    x, y = _separable(2)
    weight, bias = fit_probe(x, y, num_labels=2)
    assert weight.shape == (2, 8) and bias.shape == (2,)
    assert (_predict(x, weight, bias) == y).all()
    # Two rows as softmax wants them: symmetric halves of sklearn's single row.
    np.testing.assert_allclose(weight[0], -weight[1])


def test_labels_absent_from_training_rows_are_never_predicted() -> None:
    x, y = _separable(3)
    y = np.where(y == 1, 3, y)  # labels 0, 2, 3 present; 1 absent
    weight, bias = fit_probe(x, y, num_labels=4)
    assert np.all(weight[1] == 0) and bias[1] <= -10
    assert (_predict(x, weight, bias) == y).all()


def test_binary_probe_with_an_absent_label() -> None:
    x, y = _separable(2)
    y = np.where(y == 1, 2, y)  # labels 0 and 2 of 3
    weight, bias = fit_probe(x, y, num_labels=3)
    assert (_predict(x, weight, bias) == y).all()


def test_init_head_copies_into_plain_and_wrapped_linear() -> None:
    weight = np.arange(6, dtype=np.float32).reshape(3, 2)
    bias = np.array([1, 2, 3], dtype=np.float32)
    plain = torch.nn.Linear(2, 3)
    init_head(plain, weight, bias)
    np.testing.assert_array_equal(plain.weight.detach().numpy(), weight)
    np.testing.assert_array_equal(plain.bias.detach().numpy(), bias)

    class Wrapped(torch.nn.Module):  # the shape of peft's ModulesToSaveWrapper
        def __init__(self) -> None:
            super().__init__()
            self.original_module = torch.nn.Linear(2, 3)
            self.modules_to_save = torch.nn.ModuleDict({"default": torch.nn.Linear(2, 3)})

    wrapped = Wrapped()
    before = wrapped.original_module.weight.detach().clone()
    init_head(wrapped, weight, bias)
    np.testing.assert_array_equal(wrapped.modules_to_save["default"].weight.detach().numpy(), weight)
    assert torch.equal(wrapped.original_module.weight, before)


def _noisy(n_classes: int, per_class: int = 60, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping classes (unit-variance noise around centres one unit apart): the regularised optimum is
    finite, so two solvers can be compared on it."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim))
    y = rng.integers(0, n_classes, n_classes * per_class)
    y[:n_classes] = np.arange(n_classes)
    return (centers[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y


@pytest.mark.parametrize("balanced", [False, True], ids=["plain", "balanced"])
@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_probe_is_scikit_learns_logistic_regression(n_classes: int, balanced: bool) -> None:
    """The torch solver fits scikit-learn's model: ``LogisticRegression(C=10)``'s probabilities to within
    the two solvers' stopping tolerance, binary, multinomial and class-balanced alike."""
    from sklearn.linear_model import LogisticRegression

    x, y = _noisy(n_classes)
    if balanced:
        y[: len(y) // 2] = 0  # class 0 holds over half the rows
    weight, bias = fit_probe(x, y, num_labels=n_classes, balanced=balanced)
    reference = LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced" if balanced else None).fit(x, y)
    ours = torch.softmax(torch.from_numpy(x @ weight.T + bias).double(), dim=1).numpy()
    np.testing.assert_allclose(ours, reference.predict_proba(x), atol=1e-2)
    assert (ours.argmax(1) == reference.predict(x)).mean() >= 0.99
    unbalanced, _ = fit_probe(x, y, num_labels=n_classes)
    assert balanced == (not np.allclose(weight, unbalanced, atol=1e-3))  # the weights do change the fit


def test_multilabel_probe_is_one_logistic_regression_per_label() -> None:
    from sklearn.linear_model import LogisticRegression

    from lorafit.probe import fit_multilabel_probe

    x, y = _noisy(3)
    targets = np.stack([y == 0, y != 1, np.zeros_like(y, dtype=bool)], axis=1).astype(np.int64)
    weight, bias = fit_multilabel_probe(x, targets)
    for j in range(2):
        reference = LogisticRegression(C=10.0, max_iter=2000).fit(x, targets[:, j])
        ours = 1.0 / (1.0 + np.exp(-(x @ weight[j] + bias[j])))
        np.testing.assert_allclose(ours, reference.predict_proba(x)[:, 1], atol=1e-2)
    assert np.all(weight[2] == 0) and bias[2] < 0  # never present: the smoothed rate


def test_probe_on_a_single_class_always_answers_it() -> None:
    x, _ = _separable(2)
    weight, bias = fit_probe(x, np.full(len(x), 1), num_labels=3)
    assert np.all(weight == 0) and bias[1] == 0 and bias[0] <= -10 and bias[2] <= -10
    assert (_predict(x, weight, bias) == 1).all()
