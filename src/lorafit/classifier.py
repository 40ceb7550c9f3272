"""``Classifier``: the scikit-learn-shaped API over data, models, training and the run directory."""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from lorafit import __version__, card, metrics
from lorafit.config import DataConfig, LoraSettings, TrainConfig, from_dict, resolve_validation_fraction, to_dict
from lorafit.data import Encoded, LabeledData, check_trainable, label_order, stratified_split, tokenize
from lorafit.errors import ConfigError, DataError, RunDirError
from lorafit.inference import INFERENCE_PRECISION, check_inference_precision, forward_all, resolve_precision, \
    softmax, token_batches
from lorafit.models import build_classifier, load_classifier, load_encoder, resolve_model, weights_hash
from lorafit.rundir import FORMAT_VERSION, MANIFEST, METRICS, check_writable, read_manifest, read_metrics, \
    write_atomically, write_json
from lorafit.training import Callback, Trainer

logger = logging.getLogger(__name__)


def _check_texts(texts: object, name: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, got a single string; wrap it in a list: [text]")
    texts = list(texts)  # type: ignore[arg-type]
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name} must all be strings; got {len(bad)} of type {', '.join(sorted(set(bad)))}")
    return texts


def _split_params(params: dict) -> tuple[dict, dict, dict]:
    groups: tuple[dict, dict, dict] = ({}, {}, {})
    names = [{f.name for f in fields(cls)} for cls in (TrainConfig, LoraSettings, DataConfig)]
    for key, value in params.items():
        for group, known in zip(groups, names):
            if key in known:
                group[key] = value
                break
        else:
            raise ConfigError(f"unknown setting {key!r}; settings are fields of TrainConfig, LoraSettings or "
                              "DataConfig (e.g. epochs, r, lora_alpha, text_column)")
    return groups


class Classifier:
    """A LoRA fine-tuned text classifier.

    Settings are the fields of :class:`TrainConfig`, :class:`LoraSettings` and :class:`DataConfig`,
    given as keywords or as the dataclasses themselves.

    Example:
        >>> clf = Classifier(epochs=2, r=8).fit(texts, labels)          # doctest: +SKIP
        >>> clf.predict(["I lost my card"])                              # doctest: +SKIP
        ['lost_or_stolen_card']
        >>> clf.save("runs/banking")                                     # doctest: +SKIP
        >>> Classifier.load("runs/banking").predict_proba(["hi"]).shape  # doctest: +SKIP
        (1, 77)
    """

    def __init__(self, train: TrainConfig | None = None, lora: LoraSettings | None = None,
                 data: DataConfig | None = None, **params: object) -> None:
        t, l, d = _split_params(params)
        self.train_config = TrainConfig(**{**to_dict(train or TrainConfig()), **t})
        self.lora = LoraSettings(**{**to_dict(lora or LoraSettings()), **l})
        self.data_config = DataConfig(**{**to_dict(data or DataConfig()), **d})
        self.classes_: list[str] = []
        self.model = None
        self.tokenizer = None
        self.base: dict = {}
        self.temperature = 1.0
        self.inference_precision = INFERENCE_PRECISION
        """Precision of predict/predict_proba/embed: ``fp32`` (default: plain transformers + peft's numbers),
        ``bf16`` or ``auto`` (bf16 autocast where the CPU/GPU runs it natively: faster, labels almost always
        the same, probabilities off by up to about 1e-2)."""
        self.metrics_: dict = {}
        self.data_summary: dict = {}
        self._train_precision = "fp32"

    # ----------------------------------------------------------------------------------- training
    def fit(self, texts: list[str], labels: list[str] | list[int],
            validation: tuple[list[str], list] | None = None, callback: Callback | None = None) -> "Classifier":
        """Fine-tune on ``texts``/``labels``; ``validation`` is ``(texts, labels)`` or a stratified split.

        Returns ``self``; the best checkpoint on validation (by ``metric``) is the one kept.
        """
        texts = _check_texts(texts)
        labels = [str(x) for x in labels]
        if len(texts) != len(labels):
            raise DataError(f"got {len(texts)} texts but {len(labels)} labels; they must pair up")
        data = LabeledData(texts, labels, "training data")
        check_trainable(data)
        if validation is None:
            train_data, val_data = self._holdout(data, callback)
        else:
            val_texts, val_labels = _check_texts(validation[0], "validation texts"), [str(x) for x in validation[1]]
            if len(val_texts) != len(val_labels) or not val_texts:
                raise DataError(f"validation has {len(val_texts)} texts and {len(val_labels)} labels; they must "
                                "pair up, and there must be at least one")
            train_data = data
            val_data = LabeledData(val_texts, val_labels, "validation data")
        return self._fit(train_data, val_data, callback)

    def fit_files(self, train_path: str | Path, validation_path: str | Path | None = None,
                  callback: Callback | None = None) -> "Classifier":
        """Fine-tune on a labeled file (CSV/TSV/JSONL/Parquet), with an optional validation file."""
        from lorafit.data import read_labeled

        cfg = self.data_config
        train = read_labeled(train_path, cfg.text_column, cfg.label_column, cfg.empty_texts)
        check_trainable(train)
        if validation_path is None:
            train, val = self._holdout(train, callback)
        else:
            val = read_labeled(validation_path, cfg.text_column, cfg.label_column, cfg.empty_texts)
        return self._fit(train, val, callback)

    def _holdout(self, data: LabeledData, callback: Callback | None) -> tuple[LabeledData, LabeledData | None]:
        """A seeded stratified validation split, or none (``validation_fraction`` 0, or ``auto`` on small
        classes); the count of dropped rows stays with the training part."""
        smallest = min(Counter(data.labels).values())
        fraction = resolve_validation_fraction(self.data_config.validation_fraction, smallest)
        if fraction == 0:
            message = (f"no validation data (validation_fraction={self.data_config.validation_fraction}, smallest "
                       f"class {smallest} rows): training on all {len(data)} rows and keeping the last state")
            logger.info(message)
            if callback:
                callback.on_info(message)
            return data, None
        train_index, val_index = stratified_split(data.labels, fraction, self.train_config.seed)
        train, val = data.subset(train_index), data.subset(val_index)
        train.dropped_empty = data.dropped_empty
        val.source = f"{data.source} (stratified {fraction:.0%} split)"
        return train, val

    def _fit(self, train: LabeledData, val: LabeledData | None, callback: Callback | None) -> "Classifier":
        cfg = self.train_config
        self.classes_ = label_order(train.labels)
        index = {label: i for i, label in enumerate(self.classes_)}
        unseen = sorted(set(val.labels) - set(index)) if val is not None else []
        if unseen:
            raise DataError(f"validation data has label(s) the training data lacks: {', '.join(map(repr, unseen[:10]))}; "
                            "every validation label needs training examples")
        if callback:
            callback.on_phase("load")
        encoder, self.tokenizer = load_encoder(cfg.model)
        limit = getattr(encoder.config, "max_position_embeddings", None)
        if isinstance(limit, int) and cfg.max_length > limit:
            raise ConfigError(f"max_length {cfg.max_length} is longer than {cfg.model!r} accepts ({limit} tokens); "
                              f"pass --max-length {limit} or less")
        self.base = {"name": cfg.model, "path": resolve_model(cfg.model), "hash": weights_hash(encoder)}
        torch.manual_seed(cfg.seed)  # LoRA's A matrices and the head are initialised from torch's RNG
        self.model = build_classifier(encoder, self.classes_, cfg.pooling, self.lora, self.base["path"],
                                      cfg.cache_frozen)
        if callback:
            callback.on_phase("tokenize")
        train_enc = tokenize(self.tokenizer, train.texts, cfg.max_length)
        val_enc = tokenize(self.tokenizer, val.texts, cfg.max_length) if val is not None else None
        for name, encoded in (("training", train_enc), ("validation", val_enc)):
            if encoded is not None and encoded.truncated:
                logger.warning("%d %s text(s) are longer than max_length=%d tokens and were truncated; "
                               "raise --max-length to keep more", encoded.truncated, name, cfg.max_length)
        train_y = np.array([index[x] for x in train.labels])
        val_y = np.array([index[x] for x in val.labels]) if val is not None else None
        trainer = Trainer(self.model, cfg, self.tokenizer.pad_token_id, callback)
        self._train_precision = trainer.precision
        result = trainer.fit(train_enc, train_y, val_enc, val_y, len(self.classes_))
        self.model.eval()
        best = next((h for h in result.history if h["step"] == result.best_step), {})
        self.metrics_ = {"validation": {k[4:]: v for k, v in best.items() if k.startswith("val_")},
                         "best_step": result.best_step, "best_epoch": result.best_epoch,
                         **{k: v for k, v in result.to_dict().items() if k not in ("best_step", "best_epoch")}}
        self.metrics_["train_wall_seconds"] = self.metrics_.pop("train_seconds")
        self.data_summary = {"train": self._summary(train, train_enc),
                             "validation": self._summary(val, val_enc) if val is not None else None}
        return self

    @staticmethod
    def _summary(data: LabeledData, encoded: Encoded) -> dict:
        return {"source": data.source, "rows": len(data), "dropped_empty": data.dropped_empty,
                "truncated": encoded.truncated, "classes": len(set(data.labels))}

    # ---------------------------------------------------------------------------------- inference
    @property
    def text_column(self) -> str:
        """The training data's text column: where ``lorafit predict --input`` looks for texts by default."""
        return self.data_config.text_column

    def _require_fitted(self) -> None:
        if self.model is None:
            raise RunDirError("this Classifier is not trained yet; call fit(...) or Classifier.load(run_dir)")

    def _forward(self, texts: list[str], method: str = "forward", **options: object) -> np.ndarray:
        """Logits (``forward``) or pooled embeddings (``embed``) of ``texts``, in fp32, input order."""
        self._require_fitted()
        texts = _check_texts(texts)
        if not texts:
            width = len(self.classes_) if method == "forward" else self.model.encoder.config.hidden_size
            return np.zeros((0, width), dtype=np.float32)
        encoded = tokenize(self.tokenizer, texts, self.train_config.max_length)
        device = next(self.model.parameters()).device
        return forward_all(self.model, encoded.lengths, token_batches(encoded, self.tokenizer.pad_token_id),
                           self.train_config.eval_batch_size,
                           resolve_precision(check_inference_precision(self.inference_precision), device),
                           device, method=method, **options)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Softmax probabilities, shape ``(len(texts), len(classes_))``, columns in ``classes_`` order.

        Example:
            >>> clf.predict_proba(["where is my card?"]).round(2)  # doctest: +SKIP
        """
        logits = self._forward(texts)
        return softmax(logits, self.temperature) if len(logits) else logits.astype(np.float64)

    def predict(self, texts: list[str]) -> list[str]:
        """The most probable label of each text."""
        probs = self.predict_proba(texts)
        return [self.classes_[i] for i in probs.argmax(1)] if len(probs) else []

    def embed(self, texts: list[str], normalize: bool = True) -> np.ndarray:
        """One vector per text from the fine-tuned encoder, pooled as the head sees it, shape
        ``(len(texts), hidden_size)``; L2-normalised (so dot products are cosine similarities) unless
        ``normalize`` is False.

        Example:
            >>> vectors = clf.embed(["I lost my card", "card missing"])  # doctest: +SKIP
            >>> float(vectors[0] @ vectors[1])                           # cosine similarity  # doctest: +SKIP
        """
        return self._forward(texts, method="embed", normalize=normalize)

    def evaluate(self, texts: list[str], labels: list) -> dict:
        """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix on labeled data.

        Labels the model never saw are listed under ``unknown_labels`` (their rows count as errors).
        """
        labels = [str(x) for x in labels]
        if len(_check_texts(texts)) != len(labels):
            raise DataError(f"got {len(texts)} texts but {len(labels)} labels; they must pair up")
        predicted = self.predict(texts)
        unknown = sorted(set(labels) - set(self.classes_))
        result = metrics.report(labels, predicted, self.classes_ + unknown)
        result["unknown_labels"] = unknown
        if unknown:
            result["unknown_label_rows"] = sum(label in set(unknown) for label in labels)
        return result

    # ------------------------------------------------------------------------------ persistence
    def manifest(self) -> dict:
        """The ``lorafit.json`` content for this classifier."""
        import peft
        import torch
        import transformers

        return {"format_version": FORMAT_VERSION, "lorafit_version": __version__,
                "task": "single_label_classification", "base_model": self.base, "labels": self.classes_,
                "text_column": self.data_config.text_column, "label_column": self.data_config.label_column,
                "max_length": self.train_config.max_length, "pooling": self.train_config.pooling,
                "train_precision": self._train_precision, "calibration": {"temperature": self.temperature},
                "train_config": to_dict(self.train_config), "lora": to_dict(self.model.lora_settings),
                "data_config": to_dict(self.data_config), "data": self.data_summary,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "versions": {"lorafit": __version__, "torch": torch.__version__,
                             "transformers": transformers.__version__, "peft": peft.__version__}}

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the run directory atomically (a crash leaves no half-written directory)."""
        self._require_fitted()
        manifest = self.manifest()

        def fill(tmp: Path) -> None:
            self.model.peft_model.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            write_json(tmp / MANIFEST, manifest)
            write_json(tmp / METRICS, self.metrics_)
            (tmp / "README.md").write_text(card.model_card(manifest, self.metrics_), encoding="utf-8")

        return write_atomically(path, fill, overwrite=overwrite)

    @staticmethod
    def check_output(path: str | Path, overwrite: bool = False) -> None:
        """Refuse an existing output directory before any training time is spent."""
        check_writable(path, overwrite)

    @classmethod
    def load(cls, path: str | Path) -> "Classifier":
        """Load a run directory written by :meth:`save` (or ``lorafit train``).

        Example:
            >>> clf = Classifier.load("runs/banking")  # doctest: +SKIP
        """
        from transformers import AutoTokenizer

        manifest = read_manifest(path)
        clf = cls(train=from_dict(TrainConfig, manifest["train_config"]), lora=from_dict(LoraSettings, manifest["lora"]),
                  data=from_dict(DataConfig, manifest.get("data_config", {})))
        base = manifest["base_model"]
        where = base["path"] if Path(base.get("path", "")).is_dir() else base["name"]
        encoder, _ = load_encoder(where)
        found = weights_hash(encoder)
        if base.get("hash") and found != base["hash"]:
            raise RunDirError(f"{path} was trained on base model {base['name']!r} with weights hash {base['hash']}, "
                              f"but {where} has hash {found}; load it with the same base model")
        clf.classes_ = list(manifest["labels"])
        clf.tokenizer = AutoTokenizer.from_pretrained(str(path))
        clf.model = load_classifier(encoder, path, clf.classes_, manifest["pooling"], clf.lora)
        clf.base, clf.temperature = base, float(manifest.get("calibration", {}).get("temperature", 1.0))
        clf.metrics_, clf.data_summary = read_metrics(path), manifest.get("data", {})
        clf._train_precision = manifest.get("train_precision", clf._train_precision)
        return clf
