"""``OnnxClassifier``: an ONNX export (``lorafit export --format onnx``) run by onnxruntime.

It has the inference verbs of :class:`lorafit.Classifier` (``classes_``, ``predict_proba``,
``predict``), with the same tokenisation and length-sorted batches, and needs neither peft nor the
base model's weights: only ``model.onnx``, the tokenizer files and ``lorafit_export.json``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from lorafit.errors import ModelError, RunDirError
from lorafit.exported import ExportedClassifier, export_tokenizer, read_export_manifest

logger = logging.getLogger(__name__)


class OnnxClassifier(ExportedClassifier):
    """An fp32 or int8 ONNX export; ``session`` is the ``onnxruntime.InferenceSession``.

    Example:
        >>> clf = load_onnx("exports/banking-int8")     # doctest: +SKIP
        >>> clf.classes_[:2], clf.predict(["I lost my card"])  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, manifest: dict, tokenizer, session) -> None:
        super().__init__(path, manifest, tokenizer)
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.quantize: str | None = manifest.get("quantize")

    def _batch_logits(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        feed = {name: batch[name].numpy() if name in batch else np.zeros_like(batch["input_ids"].numpy())
                for name in self.input_names}
        return self.session.run(["logits"], feed)[0]


def load_onnx(path: str | Path, threads: int | None = None) -> OnnxClassifier:
    """Open an ONNX export directory; ``threads`` sets onnxruntime's intra-op threads (default: its own).

    Example:
        >>> load_onnx("exports/banking-onnx").predict_proba(["hi"]).shape  # doctest: +SKIP
        (1, 77)
    """
    import onnxruntime as ort

    path = Path(path)
    manifest = read_export_manifest(path)
    if manifest.get("format") != "onnx":
        raise RunDirError(f"{path} is a {manifest.get('format')!r} export, not an ONNX one")
    model_file = path / manifest.get("onnx_file", "model.onnx")
    if not model_file.is_file():
        raise RunDirError(f"{path} is incomplete: missing {model_file.name}")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for damaged files
        raise ModelError(f"onnxruntime could not open {model_file}: {exc}") from None
    return OnnxClassifier(path, manifest, export_tokenizer(path), session)
