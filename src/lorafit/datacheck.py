"""Checks on labeled data before training: split sizes, label counts, imbalance, duplicates, conflicting
labels, leakage between splits, empty rows, and the token-length distribution (which also picks
``max_length="auto"``, and with it ``predict_max_length="auto"``).

:func:`check_data` returns a :class:`DataCheck` that the CLI renders; the library logs its warnings.
Texts are compared after normalisation (:func:`normalize`: case-folded, surrounding and repeated
whitespace removed), so ``"Hello  world"`` and ``"hello world"`` count as the same text.
"""
from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from lorafit.data import LabeledData, Text, encode, is_pairs

logger = logging.getLogger(__name__)

AUTO_QUANTILE = 99.0
"""``max_length="auto"`` covers this percentile of the training texts' token lengths."""
AUTO_MULTIPLE = 8
"""... rounded up to a multiple of this (the batch widths are multiples of 8 too)."""
LENGTH_CAP = 8192
"""Token lengths are measured up to this many tokens when the model states no limit."""
PERCENTILES = (50, 90, 95, 99, 100)
IMBALANCE_WARNING = 10.0
"""Warn when the largest training class has at least this many times the rows of the smallest."""
EXAMPLES = 5
"""Example texts shown per warning."""
_SPACE = re.compile(r"\s+")


def normalize(text: Text) -> str | tuple[str, str]:
    """The form texts are compared in: case-folded, whitespace collapsed and stripped (a pair: each text)."""
    if isinstance(text, tuple):
        return tuple(normalize(part) for part in text)  # type: ignore[return-value]
    return _SPACE.sub(" ", text).strip().casefold()


@dataclass
class SplitCheck:
    """One split (training, validation or test data)."""

    name: str
    source: str
    rows: int
    dropped_empty: int
    label_counts: dict[str, int]
    truncated: int | None = None
    """Rows longer than the length this split is cut at: ``max_length`` for the training data,
    ``predict_max_length`` for the others (None when no tokenizer was given)."""
    overlap_with_train: int = 0
    """Distinct texts of this split that also occur in the training data (leakage; 0 for training)."""
    overlap_examples: list[str] = field(default_factory=list)


@dataclass
class DataCheck:
    """What :func:`check_data` found; ``warnings`` are the sentences also logged."""

    splits: list[SplitCheck]
    duplicates: int
    """Training rows whose text already occurred earlier in the training data."""
    duplicate_examples: list[str]
    conflicting: int
    """Distinct training texts that occur with more than one label."""
    conflicting_examples: list[str]
    imbalance: float
    """Rows of the largest training class over rows of the smallest."""
    length_percentiles: dict[str, int] = field(default_factory=dict)
    """Token lengths of the training texts (special tokens included) at ``PERCENTILES`` (``p100`` is the max)."""
    max_length: int | None = None
    """The ``max_length`` the truncation counts refer to (picked when ``max_length_auto``)."""
    max_length_auto: bool = False
    predict_max_length: int | None = None
    """The length validation and test data (and predictions) are cut at (:func:`predict_length`)."""
    model_limit: int | None = None
    text_pairs: bool = False
    """Whether the rows are (text, text_pair) pairs: duplicates and leakage compare whole pairs, token lengths
    are those of the encoded pair, and a row with either text empty was dropped."""
    warnings: list[str] = field(default_factory=list)

    @property
    def train(self) -> SplitCheck:
        return self.splits[0]

    @property
    def predictions_cut_apart(self) -> bool:
        """Whether validation, test and predictions are cut at another length than training is."""
        return self.predict_max_length not in (None, self.max_length)

    def to_dict(self) -> dict:
        """A JSON-ready dict (stored in ``lorafit.json`` under ``data_check``)."""
        return asdict(self)


def token_lengths(tokenizer, texts: list[Text], limit: int | None) -> np.ndarray:
    """Token counts of ``texts`` or of encoded pairs (special tokens included), measured up to ``limit + 1``."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    cap = (limit or LENGTH_CAP) + 1
    ids = encode(tokenizer, texts, truncation=True, max_length=cap, add_special_tokens=True)["input_ids"]
    return np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))


def auto_max_length(lengths: np.ndarray, limit: int | None) -> int:
    """The 99th percentile of ``lengths`` (the shortest length that 99% of the texts fit in), rounded up
    to a multiple of 8, at least 8, at most ``limit``; so at most about 1% of the texts are truncated.

    Example:
        >>> auto_max_length(np.array([10] * 99 + [300]), limit=512)
        16
    """
    if len(lengths) == 0:
        return min(AUTO_MULTIPLE, limit or AUTO_MULTIPLE)
    quantile = float(np.percentile(lengths, AUTO_QUANTILE, method="inverted_cdf"))
    picked = max(AUTO_MULTIPLE, int(math.ceil(quantile / AUTO_MULTIPLE) * AUTO_MULTIPLE))
    return min(picked, limit) if limit else picked


def predict_length(setting: int | str, max_length: int, max_length_auto: bool, limit: int | None) -> int:
    """``predict_max_length`` resolved: a given length as it is; ``"auto"`` is the model's ``limit`` when
    ``max_length`` was automatic (it only saves training time: the texts it cuts still fit the model), else
    ``max_length`` (a cut the user chose holds everywhere; also when the model states no limit).

    Example:
        >>> predict_length("auto", 48, True, 512), predict_length("auto", 128, False, 512)
        (512, 128)
    """
    if setting != "auto":
        return int(setting)
    return limit if max_length_auto and limit else max_length


def _duplicates(data: LabeledData, keys: list) -> tuple[int, list[str], int, list[str]]:
    """(repeated rows, examples, texts with conflicting labels, examples) within ``data``, whose texts
    normalise to ``keys``."""
    seen: dict[str, set[str]] = {}
    first: dict[str, str] = {}
    repeated = 0
    for text, key, label in zip(data.texts, keys, data.labels):
        if key in seen:
            repeated += 1
        else:
            first[key] = text
        seen.setdefault(key, set()).add(label)
    repeats = [first[k] for k, n in Counter(keys).most_common(EXAMPLES) if n > 1]
    conflicts = [k for k, labels in seen.items() if len(labels) > 1]
    return repeated, repeats, len(conflicts), [first[k] for k in conflicts[:EXAMPLES]]


def _split(name: str, data: LabeledData, train_keys: set[str] | None,
           count_labels: Callable[[list[str]], dict[str, int]]) -> SplitCheck:
    check = SplitCheck(name, data.source, len(data), data.dropped_empty, count_labels(data.labels))
    if train_keys is not None:
        shared = {}
        for text in data.texts:
            key = normalize(text)
            if key in train_keys:
                shared.setdefault(key, text)
        check.overlap_with_train, check.overlap_examples = len(shared), list(shared.values())[:EXAMPLES]
    return check


def check_data(train: LabeledData, others: dict[str, LabeledData | None] | None = None, tokenizer=None,
               max_length: int | str = "auto", model_limit: int | None = None,
               predict_max_length: int | str = "auto",
               count_labels: Callable[[list[str]], dict[str, int]] | None = None) -> DataCheck:
    """Check ``train`` and the ``others`` splits (e.g. ``{"validation": ..., "test": ...}``).

    ``count_labels`` turns a split's label cells into rows per label (default: one label per row; a
    multi-label or regression task passes its own, see :mod:`lorafit.tasks`).

    With a ``tokenizer`` the training texts' token lengths give the percentiles, ``max_length="auto"``
    is resolved (:func:`auto_max_length`), then ``predict_max_length`` (:func:`predict_length`), and every
    split's truncated rows are counted: the training data's at ``max_length``, the others' at
    ``predict_max_length``.

    Example:
        >>> check = check_data(LabeledData(["a", "A ", "b"], ["x", "y", "x"], "t.csv"))
        >>> check.duplicates, check.conflicting
        (1, 1)
    """
    keys = [normalize(t) for t in train.texts]  # once: the duplicate and overlap checks both compare these
    train_keys = set(keys)
    count_labels = count_labels or (lambda labels: dict(Counter(labels)))
    splits = [_split("training", train, None, count_labels)]
    splits += [_split(name, data, train_keys, count_labels) for name, data in (others or {}).items()
               if data is not None]
    repeated, repeats, conflicting, conflicts = _duplicates(train, keys)
    counts = splits[0].label_counts
    check = DataCheck(splits, repeated, repeats, conflicting, conflicts,
                      imbalance=max(counts.values()) / max(1, min(counts.values())) if counts else 1.0,
                      model_limit=model_limit, text_pairs=is_pairs(train.texts))
    if tokenizer is not None:
        _measure_lengths(check, tokenizer, [train] + [d for d in (others or {}).values() if d is not None],
                         max_length, model_limit, predict_max_length)
    check.warnings = _warnings(check)
    for warning in check.warnings:
        logger.warning(warning)
    return check


def _measure_lengths(check: DataCheck, tokenizer, datasets: list[LabeledData], max_length: int | str,
                     limit: int | None, predict_max_length: int | str) -> None:
    lengths = [token_lengths(tokenizer, d.texts, limit) for d in datasets]
    train = lengths[0]
    check.length_percentiles = {f"p{q}": int(np.percentile(train, q, method="inverted_cdf")) for q in PERCENTILES} \
        if len(train) else {}
    check.max_length_auto = max_length == "auto"
    check.max_length = auto_max_length(train, limit) if check.max_length_auto else int(max_length)
    check.predict_max_length = predict_length(predict_max_length, check.max_length, check.max_length_auto, limit)
    for split, split_lengths in zip(check.splits, lengths):
        cut = check.max_length if split is check.train else check.predict_max_length
        split.truncated = int((split_lengths > cut).sum())


def _warnings(check: DataCheck) -> list[str]:
    """Sentences about what may hurt training or make its metrics misleading."""
    found = []
    train = check.train
    if check.imbalance >= IMBALANCE_WARNING:
        largest, smallest = max(train.label_counts.items(), key=lambda kv: kv[1]), \
            min(train.label_counts.items(), key=lambda kv: kv[1])
        found.append(f"imbalanced classes: {largest[0]!r} has {largest[1]} training rows, {smallest[0]!r} "
                     f"{smallest[1]} ({check.imbalance:.0f}x); consider --class-weights auto and --metric macro_f1")
    if check.duplicates:
        kind = "pair" if check.text_pairs else "text"
        found.append(f"{check.duplicates} training row(s) repeat a {kind} seen earlier in the training data, "
                     f"e.g. {check.duplicate_examples[0]!r}")
    if check.conflicting:
        found.append(f"{check.conflicting} training text(s) occur with more than one label, "
                     f"e.g. {check.conflicting_examples[0]!r}; the model cannot get both right")
    for split in check.splits[1:]:
        if split.overlap_with_train:
            found.append(f"leakage: {split.overlap_with_train} {split.name} text(s) also occur in the training "
                         f"data, e.g. {split.overlap_examples[0]!r}; their metrics will look better than they are")
    for split in check.splits:
        if split.dropped_empty:
            found.append(f"{split.dropped_empty} {split.name} row(s) with an empty text"
                         f"{' or second text' if check.text_pairs else ''} were dropped")
    found += _truncation_warnings(check)
    return found


def _truncation_warnings(check: DataCheck) -> list[str]:
    """What ``max_length`` cuts in training and ``predict_max_length`` in the other splits: one sentence when the
    two are the same length."""
    auto = " (auto keeps about 99% whole)" if check.max_length_auto else ""
    if not check.predictions_cut_apart:
        cut = [f"{s.truncated} of {s.rows} {s.name}" for s in check.splits if s.truncated]
        return [f"{', '.join(cut)} text(s) are longer than max_length={check.max_length} tokens and will be "
                f"truncated{auto}"] if cut else []
    found = []
    if check.train.truncated:
        found.append(f"{check.train.truncated} of {check.train.rows} training text(s) are longer than "
                     f"max_length={check.max_length} tokens and will be truncated for training{auto}; "
                     f"predictions read up to {check.predict_max_length} tokens")
    cut = [f"{s.truncated} of {s.rows} {s.name}" for s in check.splits[1:] if s.truncated]
    if cut:
        found.append(f"{', '.join(cut)} text(s) are longer than predict_max_length={check.predict_max_length} "
                     "tokens and will be truncated")
    return found
