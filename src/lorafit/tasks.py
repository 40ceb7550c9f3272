"""What differs between the tasks lorafit learns: single-label classification, multi-label classification
and regression.

A :class:`Task` says, for its task, how label cells (the strings read from the label column) become
targets, how many outputs the head has, the training loss, the validation metrics, the head's probe
initialisation, and how outputs become predictions. Everything else (data reading, the training loop,
the run directory) is shared. :class:`SingleLabel` is lorafit's original behaviour, unchanged.

- single-label: softmax over the labels, cross-entropy, temperature calibration and abstaining.
- multi-label: one sigmoid per label, BCE-with-logits, a threshold per label tuned on validation data
  (maximising that label's F1); a cell holds ``a|b`` (``label_delimiter``) or a JSON list, and an empty
  cell is a row with no labels.
- regression: one output, MSE on the standardised target; the mean and standard deviation are folded
  into the head after training, so the head answers in the target's own units (plain peft included).

Example:
    >>> task = make_task("multi_label_classification", delimiter="|")
    >>> task.classes(["a|b", "b", ""], "label")
    ['a', 'b']
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from lorafit import calibration, metrics
from lorafit.config import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from lorafit.data import LabeledData, check_trainable, label_order, random_split, stratified_split
from lorafit.errors import ConfigError, DataError
from lorafit.inference import sigmoid, softmax
from lorafit.probe import fit_multilabel_probe, fit_probe, fit_ridge_probe

LOWER_IS_BETTER = ("mse", "mae")
"""Metrics where a smaller value is better (the best checkpoint minimises them)."""
DEFAULT_THRESHOLD = 0.5
"""A multi-label threshold where the validation data cannot tune one (no validation data, no positives)."""
MAX_ROWS_NAMED = 5


def _rows(where: str, bad: list[tuple[int, str]], first_line: int) -> str:
    """``"line 2 ('x'), line 7 ('y')"`` for the first few bad ``(index, cell)`` pairs."""
    shown = ", ".join(f"{'line' if first_line > 1 else 'row'} {i + first_line} ({cell!r})"
                      for i, cell in bad[:MAX_ROWS_NAMED])
    return f"{len(bad)} row(s) of {where}: {shown}{', ...' if len(bad) > MAX_ROWS_NAMED else ''}"


class SingleLabel:
    """One label per text: softmax, cross-entropy, accuracy / macro-F1 (lorafit's original task)."""

    name = SINGLE_LABEL
    allows_empty_labels = False
    """Whether an empty label cell is a valid row (multi-label: a row with no labels)."""
    holdout_basis = "smallest class"
    """What :meth:`holdout_rows` counts, in words."""
    split_kind = "stratified"
    """How :meth:`split` holds out validation rows, in words."""

    def cells(self, labels: list) -> list[str]:
        """Python labels as the label cells a file would hold."""
        return [str(x) for x in labels]

    def check_cells(self, cells: list[str], where: str, first_line: int = 1) -> None:
        """Refuse label cells this task cannot read, naming the rows (``first_line``: the number of row 0)."""

    def classes(self, cells: list[str], label_column: str) -> list[str]:
        """The head's outputs by name, in order."""
        return label_order(cells)

    def unseen(self, cells: list[str], classes: list[str]) -> list[str]:
        """Labels in ``cells`` that are not among ``classes``."""
        return sorted(set(cells) - set(classes))

    def check_trainable(self, data: LabeledData) -> None:
        """Refuse training data this task cannot learn from."""
        check_trainable(data)

    def encode(self, cells: list[str], classes: list[str]) -> np.ndarray:
        """The targets of ``cells``: label ids here."""
        index = {label: i for i, label in enumerate(classes)}
        return np.array([index[x] for x in cells])

    def label_counts(self, cells: list[str]) -> dict[str, int]:
        """Rows per label, sorted by label."""
        return dict(sorted(Counter(cells).items()))

    def holdout_rows(self, cells: list[str]) -> int:
        """What ``validation_fraction="auto"`` compares with its minimum: the smallest class's rows."""
        return min(Counter(cells).values())

    def split(self, cells: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices (train, validation) of the validation holdout: stratified by class."""
        return stratified_split(cells, fraction, seed)

    # ------------------------------------------------------------------------------------ training
    def fit_scale(self, targets: np.ndarray) -> None:
        """Learn what :meth:`scale` needs from the training targets (regression: mean and deviation)."""

    def scale(self, targets: np.ndarray) -> np.ndarray:
        """Targets as the loss sees them."""
        return targets

    def target_tensor(self, targets: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(targets, dtype=torch.long)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """The training loss of fp32 ``logits``, summed over the rows (see :meth:`loss_total`)."""
        return torch.nn.functional.cross_entropy(logits, targets, weight=weights, reduction="sum")

    def loss_total(self, targets: torch.Tensor, weights: torch.Tensor | None) -> float | torch.Tensor:
        """What the summed loss of a whole batch with ``targets`` is divided by to give its mean loss (the
        training processes each sum their slice of the batch; see ``Trainer._step``)."""
        return float(len(targets)) if weights is None else weights[targets].sum()

    def class_weights(self, targets: np.ndarray, n_outputs: int) -> np.ndarray:
        """Inverse-frequency weights, ``n / (classes * count)`` (scikit-learn's "balanced"); 0 for absent classes."""
        counts = np.bincount(targets, minlength=n_outputs).astype(np.float64)
        present = counts > 0
        weights = np.zeros_like(counts)
        weights[present] = len(targets) / (present.sum() * counts[present])
        return weights

    def headline(self, targets: np.ndarray, logits: np.ndarray) -> dict[str, float]:
        """The validation metrics recorded at every evaluation (the best checkpoint is picked by one of them)."""
        return metrics.headline(targets, logits.argmax(1), logits.shape[1])

    def fit_probe(self, features: np.ndarray, targets: np.ndarray, n_outputs: int, balanced: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
        """The head's starting weights ``(W, b)`` from the frozen embeddings."""
        return fit_probe(features, targets, n_outputs, balanced=balanced)

    def finish(self, head: torch.nn.Module) -> None:
        """Adjust the trained head for inference (regression: answer in the target's units)."""

    # ----------------------------------------------------------------------------------- inference
    def probabilities(self, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """What ``predict_proba`` answers for a run's ``logits``: the softmax at the run's temperature."""
        return softmax(logits, temperature) if len(logits) else logits.astype(np.float64)

    def decide(self, probabilities: np.ndarray, classes: list[str], threshold: float | None,
               unknown_label: str) -> list:
        """Labels for rows of :meth:`probabilities`: the argmax, or ``unknown_label`` below ``threshold``."""
        return calibration.decide(probabilities, classes, threshold, unknown_label)

    def selection(self, scores: dict[str, float], metric: str) -> float:
        """The value the best checkpoint maximises."""
        return -scores[metric] if metric in LOWER_IS_BETTER else scores[metric]

    def to_manifest(self) -> dict:
        """What ``lorafit.json`` stores of this task beyond its name."""
        return {}


class MultiLabel(SingleLabel):
    """Any number of labels per text: a sigmoid per label, BCE-with-logits, per-label thresholds."""

    name = MULTI_LABEL
    allows_empty_labels = True
    holdout_basis = "rarest label"
    split_kind = "random"

    def __init__(self, delimiter: str, thresholds: list[float] | None = None) -> None:
        self.delimiter = delimiter
        self.thresholds = thresholds
        """Per label, in ``classes_`` order: a label is predicted when its sigmoid is >= its threshold."""

    def parse(self, cell: str) -> list[str]:
        """The labels of one cell: a JSON list, or ``delimiter``-separated names; empty: none."""
        cell = cell.strip()
        if cell.startswith("["):
            try:
                value = json.loads(cell)
            except ValueError:
                value = None
            if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
                raise ValueError(cell)
            parts = [str(v).strip() for v in value]
        else:
            parts = [part.strip() for part in cell.split(self.delimiter)]
        return list(dict.fromkeys(part for part in parts if part))

    def cells(self, labels: list) -> list[str]:
        """Lists of labels (or ready-made cells) as cells; a bare string is a cell as a file holds it."""
        return [x if isinstance(x, str) else json.dumps([str(v) for v in x], ensure_ascii=False) for x in labels]

    def check_cells(self, cells: list[str], where: str, first_line: int = 1) -> None:
        bad = []
        for i, cell in enumerate(cells):
            try:
                self.parse(cell)
            except ValueError:
                bad.append((i, cell))
        if bad:
            raise DataError(f"{_rows(where, bad, first_line)} start with '[' but are not a JSON list of labels; "
                            f"write [\"a\", \"b\"] or a{self.delimiter}b (--label-delimiter)")

    def classes(self, cells: list[str], label_column: str) -> list[str]:
        return label_order([label for cell in cells for label in self.parse(cell)])

    def unseen(self, cells: list[str], classes: list[str]) -> list[str]:
        return sorted(set(self.classes(cells, "")) - set(classes))

    def check_trainable(self, data: LabeledData) -> None:
        if not self.classes(data.labels, ""):
            raise DataError(f"{Path(data.source).name} has no labels at all (every label cell is empty); a "
                            "multi-label classifier needs rows with labels")

    def encode(self, cells: list[str], classes: list[str]) -> np.ndarray:
        """A 0/1 float matrix, shape ``(rows, labels)``; labels not in ``classes`` are ignored."""
        index = {label: i for i, label in enumerate(classes)}
        targets = np.zeros((len(cells), len(classes)), dtype=np.float32)
        for row, cell in enumerate(cells):
            for label in self.parse(cell):
                if label in index:
                    targets[row, index[label]] = 1.0
        return targets

    def label_counts(self, cells: list[str]) -> dict[str, int]:
        """Rows carrying each label (a row counts once per label it has)."""
        return dict(sorted(Counter(label for cell in cells for label in self.parse(cell)).items()))

    def holdout_rows(self, cells: list[str]) -> int:
        """The rarest label's rows."""
        return min(self.label_counts(cells).values(), default=0)

    def split(self, cells: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """A plain seeded random split (label sets do not stratify)."""
        return random_split(len(cells), fraction, seed)

    def target_tensor(self, targets: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(targets, dtype=torch.float32)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=weights,
                                                                    reduction="sum")

    def loss_total(self, targets: torch.Tensor, weights: torch.Tensor | None) -> float:
        return float(targets.numel())  # BCE's mean is over every (row, label); pos_weight does not change it

    def class_weights(self, targets: np.ndarray, n_outputs: int) -> np.ndarray:
        """BCE's ``pos_weight``: negatives / positives per label (1 for a label without positives)."""
        positives = targets.sum(0).astype(np.float64)
        weights = np.ones(n_outputs)
        has = positives > 0
        weights[has] = (len(targets) - positives[has]) / positives[has]
        return weights

    def headline(self, targets: np.ndarray, logits: np.ndarray) -> dict[str, float]:
        """At the default threshold (logit 0) while training; the tuned thresholds come after it."""
        return metrics.multilabel_headline(targets, (logits > 0).astype(int))

    def fit_probe(self, features: np.ndarray, targets: np.ndarray, n_outputs: int, balanced: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
        return fit_multilabel_probe(features, targets, balanced=balanced)

    def tune(self, probabilities: np.ndarray, targets: np.ndarray) -> None:
        """Per label, the threshold that maximises its F1 on validation data (0.5 for a label without
        positives there); the threshold lies halfway between the scores it separates."""
        self.thresholds = [_best_f1_threshold(probabilities[:, j], targets[:, j]) for j in range(targets.shape[1])]

    def decide_matrix(self, probabilities: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """0/1 per row and label: the sigmoid at or above the label's threshold (``threshold``: one for all)."""
        return (probabilities >= np.asarray(self.limits(probabilities.shape[1], threshold))).astype(int)

    def limits(self, labels: int, threshold: float | None = None) -> list[float]:
        """Each label's threshold: ``threshold`` for all when given, else the tuned ones (0.5 untuned)."""
        if threshold is not None:
            return [float(threshold)] * labels
        return list(self.thresholds or [DEFAULT_THRESHOLD] * labels)

    def probabilities(self, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """Each label's sigmoid (rows need not sum to 1; there is no temperature)."""
        return sigmoid(logits)

    def decide(self, probabilities: np.ndarray, classes: list[str], threshold: float | None = None,
               unknown_label: str | None = None) -> list[list[str]]:
        """The labels of each row at or above their thresholds (``threshold``: one for every label)."""
        return [[classes[j] for j in np.flatnonzero(row)] for row in self.decide_matrix(probabilities, threshold)]

    def to_manifest(self) -> dict:
        return {"label_delimiter": self.delimiter, "thresholds": self.thresholds}


def _best_f1_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    positives = float(truth.sum())
    if positives == 0:
        return DEFAULT_THRESHOLD
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], truth[order]
    true_pos = np.cumsum(hits)
    f1 = 2 * true_pos / (np.arange(1, len(ranked) + 1) + positives)
    f1[:-1][ranked[1:] == ranked[:-1]] = -1.0  # a cut must not split tied scores
    best = int(np.argmax(f1))
    below = ranked[best + 1] if best + 1 < len(ranked) else 0.0
    return float((ranked[best] + below) / 2)


class Regression(SingleLabel):
    """A number per text: one output, MSE on the standardised target, MSE / MAE / Pearson / Spearman."""

    name = REGRESSION
    holdout_basis = "a 10% split:"
    split_kind = "random"

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        self.mean, self.std = mean, std
        """The training targets' mean and standard deviation (the loss sees ``(y - mean) / std``)."""

    def cells(self, labels: list) -> list[str]:
        return [repr(float(x)) if isinstance(x, (int, float, np.number)) and not isinstance(x, bool) else str(x)
                for x in labels]

    def check_cells(self, cells: list[str], where: str, first_line: int = 1) -> None:
        bad = [(i, cell) for i, cell in enumerate(cells) if not _finite(cell)]
        if bad:
            raise DataError(f"{_rows(where, bad, first_line)} have a target that is not a finite number; a "
                            "regression target must be a number such as 3 or -0.25 (not empty, text, nan or inf)")

    def classes(self, cells: list[str], label_column: str) -> list[str]:
        """One output, named after the target column."""
        return [label_column]

    def unseen(self, cells: list[str], classes: list[str]) -> list[str]:
        return []

    def check_trainable(self, data: LabeledData) -> None:
        self.check_cells(data.labels, Path(data.source).name)
        if len(set(float(x) for x in data.labels)) < 2:
            raise DataError(f"every target in {Path(data.source).name} has the same value; regression needs "
                            "targets that vary")

    def encode(self, cells: list[str], classes: list[str]) -> np.ndarray:
        return np.array([float(x) for x in cells], dtype=np.float64)

    def label_counts(self, cells: list[str]) -> dict[str, int]:
        """No classes to count."""
        return {}

    def holdout_rows(self, cells: list[str]) -> int:
        """The rows a 10% holdout would have."""
        return len(cells) // 10

    def split(self, cells: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        return random_split(len(cells), fraction, seed)

    def fit_scale(self, targets: np.ndarray) -> None:
        self.mean, self.std = float(np.mean(targets)), float(np.std(targets)) or 1.0

    def scale(self, targets: np.ndarray) -> np.ndarray:
        return (targets - self.mean) / self.std

    def target_tensor(self, targets: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(targets, dtype=torch.float32)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        return torch.nn.functional.mse_loss(logits[:, 0], targets, reduction="sum")

    def loss_total(self, targets: torch.Tensor, weights: torch.Tensor | None) -> float:
        return float(len(targets))

    def class_weights(self, targets: np.ndarray, n_outputs: int) -> np.ndarray:
        raise ConfigError("class_weights 'auto' has no meaning for regression")

    def headline(self, targets: np.ndarray, logits: np.ndarray) -> dict[str, float]:
        """In the target's units: ``targets`` and ``logits`` are standardised while training."""
        return metrics.regression_scores(targets * self.std + self.mean, logits[:, 0] * self.std + self.mean)

    def fit_probe(self, features: np.ndarray, targets: np.ndarray, n_outputs: int, balanced: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
        return fit_ridge_probe(features, targets)

    def probabilities(self, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        raise ConfigError("predict_proba is for classification, and this is a regression run; "
                          "predict(texts) gives the predicted values")

    @staticmethod
    def values(logits: np.ndarray) -> list[float]:
        """The predicted numbers: the head's single output (already in the target's units)."""
        return [float(v) for v in logits[:, 0]]

    def finish(self, head: torch.nn.Module) -> None:
        """Fold the standardisation into the head: ``y = std * (W x + b) + mean``."""
        linear = getattr(head, "modules_to_save", None)
        linear = linear["default"] if linear is not None else head
        with torch.no_grad():
            linear.weight.mul_(self.std)
            linear.bias.mul_(self.std).add_(self.mean)

    def to_manifest(self) -> dict:
        return {"target_mean": self.mean, "target_std": self.std, "folded_into_head": True}


def _finite(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def make_task(name: str, delimiter: str = "|", stored: dict | None = None) -> SingleLabel:
    """The :class:`SingleLabel`, :class:`MultiLabel` or :class:`Regression` for ``name`` (a config's ``task``);
    ``stored``: what a run directory's ``lorafit.json`` holds of it (thresholds, target scale)."""
    stored = stored or {}
    if name == MULTI_LABEL:
        return MultiLabel(stored.get("label_delimiter", delimiter), stored.get("thresholds"))
    if name == REGRESSION:
        return Regression(stored.get("target_mean", 0.0), stored.get("target_std", 1.0))
    return SingleLabel()


def format_metric(name: str, value: float) -> str:
    """A metric as people read it: classification metrics in percent, errors and correlations as numbers.

    Example:
        >>> format_metric("micro_f1", 0.8125), format_metric("mse", 0.01234), format_metric("pearson", 0.9)
        ('81.25%', '0.01234', '0.900')
    """
    if name in LOWER_IS_BETTER or name == "rmse":
        return f"{value:.4g}"
    if name in ("pearson", "spearman"):
        return f"{value:.3f}"
    return f"{100 * value:.2f}%"
