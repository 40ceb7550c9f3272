"""lorafit.probe: the logistic-regression probe and copying it into the (peft-wrapped) head."""
from __future__ import annotations

import numpy as np
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
