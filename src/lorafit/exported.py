"""Classifiers over lorafit's export directories, and one loader for anything ``lorafit predict`` takes.

:class:`ExportedClassifier` gives an export the inference verbs of :class:`lorafit.Classifier`
(``classes_``, ``predict_proba``, ``predict``) with the same tokenisation (truncation at the ``max_length`` of
the export's manifest: the run's prediction length) and the same length-sorted batches; subclasses only say
how one padded batch becomes logits. :class:`MergedClassifier` runs a merged export in torch; the ONNX one is
in :mod:`lorafit.onnx_model`. :func:`load_predictor` opens a run directory or either export.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lorafit.batching import pad_multiple
from lorafit.classifier import Classifier
from lorafit.config import SINGLE_LABEL
from lorafit.data import check_pairs, check_texts, tokenize
from lorafit.errors import RunDirError
from lorafit.export import EXPORT_MANIFEST
from lorafit.inference import INFERENCE_PRECISION, InferenceModels, autocast, check_inference_precision, \
    map_sorted, resolve_precision, token_batches
from lorafit.rundir import MANIFEST
from lorafit.tasks import Regression, make_task

BATCH_SIZE = 256
"""Texts per batch (the batches are also bounded to about 4096 tokens, as for run directories)."""


def read_export_manifest(path: str | Path) -> dict:
    """``lorafit_export.json`` of an export directory, with a clear error when it is not one."""
    path = Path(path)
    file = path / EXPORT_MANIFEST
    if not file.is_file():
        raise RunDirError(f"{path} is not a lorafit export (no {EXPORT_MANIFEST}); pass the --out directory of "
                          "`lorafit export`")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunDirError(f"{file} is not valid JSON ({exc}); the export is damaged") from None


def export_tokenizer(path: str | Path):
    """The tokenizer of an export, read without consulting its ``config.json`` (so no custom code runs)."""
    from transformers import AutoTokenizer, PretrainedConfig

    return AutoTokenizer.from_pretrained(str(path), config=PretrainedConfig())


class ExportedClassifier:
    """The inference verbs of :class:`lorafit.Classifier` over an export directory.

    The export's logits are already divided by the run's calibration temperature, so the
    probabilities equal the run directory's ``Classifier.predict_proba``.
    """

    def __init__(self, path: str | Path, manifest: dict, tokenizer, batch_size: int = BATCH_SIZE) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.classes_: list[str] = list(manifest["labels"])
        self.tokenizer = tokenizer
        self.max_length = int(manifest["max_length"])
        self.text_column: str = manifest.get("text_column", "text")
        """The training data's text column (the default column ``lorafit predict --input`` reads)."""
        self.text_pair_column: str | None = manifest.get("text_pair_column")
        """The training data's second-text column of a run on pairs (else None)."""
        self.pairs_ = bool(manifest.get("text_pairs", False))
        """Whether the model takes ``(text, text_pair)`` pairs, as :attr:`lorafit.Classifier.pairs_`."""
        self.batch_size = batch_size
        abstain = manifest.get("abstain") or {}
        self.threshold: float | None = abstain.get("threshold")
        """The run's abstention threshold on the top probability (None: never abstains)."""
        self.unknown_label: str = abstain.get("unknown_label", "unknown")
        self.task = make_task(manifest.get("task", SINGLE_LABEL), stored=manifest.get("task_settings"))
        """The run's task, with its multi-label thresholds (see :mod:`lorafit.tasks`)."""

    def _batch_logits(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        raise NotImplementedError

    def _pad_multiple(self) -> int:
        """Batches are padded to a multiple of this many tokens: exact lengths unless a subclass's kernels
        want rounding."""
        return 1

    def logits(self, texts: list[str]) -> np.ndarray:
        """Calibrated logits, shape ``(len(texts), len(classes_))``, in input order (``texts`` are
        ``(text, text_pair)`` pairs for a model trained on pairs)."""
        texts = check_texts(texts)
        check_pairs(texts, self.pairs_)
        if not texts:
            return np.zeros((0, len(self.classes_)), dtype=np.float32)
        encoded = tokenize(self.tokenizer, texts, self.max_length)
        return map_sorted(encoded.lengths, token_batches(encoded, self.tokenizer.pad_token_id, self._pad_multiple()),
                          self.batch_size, self._batch_logits)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Softmax probabilities, shape ``(len(texts), len(classes_))``, columns in ``classes_`` order
        (multi-label: sigmoid scores; regression: a ConfigError), as :meth:`lorafit.Classifier.predict_proba`."""
        return self.task.probabilities(self.logits(texts))

    def predict(self, texts: list[str], threshold: float | None = None) -> list:
        """The most probable label of each text, or ``unknown_label`` below the run's abstention threshold
        (``threshold`` overrides it; 0: never abstain), as :meth:`lorafit.Classifier.predict` (multi-label:
        label lists; regression: numbers)."""
        if isinstance(self.task, Regression):
            return self.task.values(self.logits(texts))
        return self.decide(self.predict_proba(texts), threshold)

    def decide(self, probs: np.ndarray, threshold: float | None = None) -> list:
        """Labels for rows of :meth:`predict_proba` (see :meth:`lorafit.Classifier.decide`)."""
        return self.task.decide(probs, self.classes_, self.threshold if threshold is None else threshold,
                                self.unknown_label)


class MergedClassifier(ExportedClassifier):
    """A merged export (``lorafit export --format merged``) run in torch on the CPU; fp32 unless
    ``inference_precision`` is ``bf16``/``auto`` (as for :class:`lorafit.Classifier`: bf16 runs a copy of
    the model with bf16 weights, see :class:`lorafit.inference.InferenceModels`)."""

    def __init__(self, path: str | Path, manifest: dict, tokenizer, model: torch.nn.Module) -> None:
        super().__init__(path, manifest, tokenizer)
        self.model = model.eval()
        self.inference_precision = INFERENCE_PRECISION
        self._models = InferenceModels(head="classifier")

    def _precision(self) -> str:
        return resolve_precision(check_inference_precision(self.inference_precision), torch.device("cpu"))

    def _pad_multiple(self) -> int:
        return pad_multiple("auto", self._precision(), torch.device("cpu"))

    @torch.inference_mode()
    def _batch_logits(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        model, autocast_precision = self._models.get(self.model, self._precision())
        with autocast(autocast_precision, torch.device("cpu")):
            return model(**batch).logits.float().numpy()


def load_merged(path: str | Path) -> MergedClassifier:
    """Open a merged export with lorafit's own copy of its modeling code (no remote code is run)."""
    from lorafit.modeling_lorafit import LorafitForSequenceClassification

    manifest = read_export_manifest(path)
    if manifest.get("format") != "merged":
        raise RunDirError(f"{path} is a {manifest.get('format')!r} export, not a merged one")
    model = LorafitForSequenceClassification.from_pretrained(str(path), dtype=torch.float32)
    return MergedClassifier(path, manifest, export_tokenizer(path), model)


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is an export directory (``lorafit export``) rather than a run directory."""
    return (Path(path) / EXPORT_MANIFEST).is_file() and not (Path(path) / MANIFEST).is_file()


def load_predictor(path: str | Path, trust_remote_code: bool = False) -> Classifier | ExportedClassifier:
    """A run directory (:class:`Classifier`), an ONNX export or a merged export, recognised by its files.

    Example:
        >>> load_predictor("exports/banking-onnx").predict(["I lost my card"])  # doctest: +SKIP
    """
    path = Path(path)
    if is_export(path):
        fmt = read_export_manifest(path).get("format")
        if fmt == "onnx":
            from lorafit.onnx_model import load_onnx

            return load_onnx(path)
        if fmt == "merged":
            return load_merged(path)
        raise RunDirError(f"{path} is an export of unknown format {fmt!r}; this lorafit reads merged and onnx")
    return Classifier.load(path, trust_remote_code=trust_remote_code)
