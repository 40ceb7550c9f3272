"""``Classifier``: the scikit-learn-shaped API over data, models, training and the run directory."""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from lorafit import __version__, calibration, card, distributed, metrics, strategy
from lorafit.batching import pad_multiple
from lorafit.checkpoint import Checkpoints, fingerprint
from lorafit.config import SINGLE_LABEL, DataConfig, LoraSettings, TrainConfig, from_dict, \
    resolve_label_examples, resolve_validation_fraction, selection_metric, to_dict
from lorafit.data import Encoded, LabeledData, check_pairs, check_texts, is_pairs, tokenize
from lorafit.datacheck import DataCheck, check_data
from lorafit.errors import ConfigError, DataError, RunDirError
from lorafit.inference import INFERENCE_PRECISION, InferenceModels, check_inference_precision, forward_all, \
    resolve_precision, sigmoid, softmax, token_batches
from lorafit.label_examples import add_label_examples, announcement
from lorafit.models import build_classifier, load_base, load_classifier, load_encoder, merge_lora, resolve_model, \
    weights_hash
from lorafit.overlap import move_contained
from lorafit.rundir import FORMAT_VERSION, MANIFEST, METRICS, check_writable, predict_length_of, read_manifest, \
    read_metrics, write_atomically, write_json
from lorafit.report import PREDICTIONS_CSV, REPORT_DIR, Predictions, write_run_report
from lorafit.tasks import MultiLabel, Regression, make_task
from lorafit.training import Callback, Trainer

logger = logging.getLogger(__name__)

NOT_FINGERPRINTED = ("checkpoint_every", "trust_remote_code")
"""Settings that may change between an interrupted run and its ``--resume``."""


def _main_only(callback: Callback | None) -> Callback | None:
    """``callback`` in the process that shows progress (rank 0, or the only one); None in the others."""
    return callback if distributed.is_main() else None


def _announce(message: str, callback: Callback | None) -> None:
    """Log a choice lorafit made and show it to the user's callback (the CLI prints it)."""
    logger.info(message)
    if callback:
        callback.on_info(message)


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
    given as keywords or as the dataclasses themselves. Texts are strings, or ``(text, text_pair)`` tuples
    for tasks over two texts (a model trained on pairs takes pairs in every method, see :attr:`pairs_`).

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
        self.task = make_task(self.train_config.task, self.data_config.label_delimiter)
        """What is learnt (:mod:`lorafit.tasks`): with a run's thresholds or target scale once fitted or loaded."""
        self.classes_: list[str] = []
        self.pairs_ = False
        """Whether the model takes ``(text, text_pair)`` pairs (it was trained on pairs) instead of single texts."""
        self.model = None
        self.tokenizer = None
        self.base: dict = {}
        self.temperature = 1.0
        self.threshold: float | None = None
        self.unknown_label = self.train_config.unknown_label
        self.calibration_: dict = {}
        self.inference_precision = INFERENCE_PRECISION
        """Precision of predict/predict_proba/embed: ``fp32`` (default: plain transformers + peft's numbers),
        ``bf16`` or ``auto`` (bf16 where the CPU/GPU runs it natively: faster, labels almost always the same,
        probabilities off by up to about 1e-2). bf16 runs a copy of the model with LoRA merged and bf16
        weights, made on first use (:class:`lorafit.inference.InferenceModels`)."""
        self._models = InferenceModels(head="head", prepare=merge_lora)
        self.metrics_: dict = {}
        self.data_summary: dict = {}
        self.data_check: DataCheck | None = None
        """What :func:`lorafit.datacheck.check_data` found before the last ``fit``."""
        self.validation_predictions = None
        """The kept checkpoint's predictions on the validation data (a :class:`lorafit.report.Predictions`)."""
        self._max_length_setting = self.train_config.max_length
        self._predict_length_setting = self.train_config.predict_max_length
        self._stored_data_check: dict | None = None
        self._train_precision = "fp32"
        self._world_size = 1
        self._checkpoint_plan: tuple[str | Path | None, bool] = (None, False)
        self._checkpoint_dir: Path | None = None
        self._train_smallest = 0
        """The smallest class of the last training data, before any validation holdout (``label_examples``)."""

    # ----------------------------------------------------------------------------------- training
    def fit(self, texts: list[str], labels: list[str] | list[int],
            validation: tuple[list[str], list] | None = None, callback: Callback | None = None,
            test: tuple[list[str], list] | None = None, checkpoint_dir: str | Path | None = None,
            resume: bool = False) -> "Classifier":
        """Fine-tune on ``texts``/``labels``; ``validation`` is ``(texts, labels)`` or a stratified split.

        ``texts`` are strings, or ``(text, text_pair)`` pairs for tasks over two texts (NLI, paraphrase,
        relevance): the model then takes pairs everywhere (predict, predict_proba, evaluate, embed).

        ``test`` (``(texts, labels)``) is only checked for leakage (texts also in the training data).
        Returns ``self``; the best checkpoint on validation (by ``metric``) is the one kept. With
        ``checkpoint_dir``, the training state is written there every ``checkpoint_every`` steps; ``resume``
        continues from the newest intact one (same settings and data required); :meth:`save` removes them.
        """
        self._checkpoint_plan, callback = (checkpoint_dir, resume), _main_only(callback)
        texts = check_texts(texts)
        labels = self._cells(labels, "training data")
        if len(texts) != len(labels):
            raise DataError(f"got {len(texts)} texts but {len(labels)} labels; they must pair up")
        data = LabeledData(texts, labels, "training data")
        self._check_trainable(data)
        if validation is None:
            train_data, val_data = self._holdout(data, callback)
        else:
            val_texts, val_labels = check_texts(validation[0], "validation texts"), self._cells(validation[1],
                                                                                                 "validation data")
            check_pairs(val_texts, is_pairs(texts), "validation texts")
            if len(val_texts) != len(val_labels) or not val_texts:
                raise DataError(f"validation has {len(val_texts)} texts and {len(val_labels)} labels; they must "
                                "pair up, and there must be at least one")
            train_data = data
            val_data = LabeledData(val_texts, val_labels, "validation data")
        test_data = LabeledData(check_texts(test[0], "test texts"), self._cells(test[1], "test data"), "test data") \
            if test is not None else None
        if test_data is not None:
            check_pairs(test_data.texts, is_pairs(texts), "test texts")
        return self._fit(train_data, val_data, test_data, callback)

    def _cells(self, labels: list, where: str) -> list[str]:
        """Labels given in Python (strings, numbers, lists for multi-label) as checked label cells."""
        if isinstance(labels, str):
            raise TypeError(f"labels of the {where} must be a list, got a single string")
        cells = self.task.cells(list(labels))
        self.task.check_cells(cells, f"the {where}")
        return cells

    def fit_files(self, train_path: str | Path, validation_path: str | Path | None = None,
                  callback: Callback | None = None, test_path: str | Path | None = None,
                  checkpoint_dir: str | Path | None = None, resume: bool = False) -> "Classifier":
        """Fine-tune on a labeled file (CSV/TSV/JSONL/Parquet), with an optional validation file.

        ``test_path`` (a labeled file) is read only to check it for leakage from the training data;
        ``checkpoint_dir`` and ``resume`` as in :meth:`fit`.
        """
        self._checkpoint_plan, callback = (checkpoint_dir, resume), _main_only(callback)
        return self._fit(*self._read_files(train_path, validation_path, test_path, callback), callback=callback)

    def inspect_files(self, train_path: str | Path, validation_path: str | Path | None = None,
                      test_path: str | Path | None = None, callback: Callback | None = None) -> DataCheck:
        """The checks ``fit_files`` runs before training (:func:`lorafit.datacheck.check_data`), without training.

        The validation data is the file, or the split ``fit_files`` would hold out (``callback.on_info`` hears
        what the holdout says, as in ``fit_files``); the tokenizer is the base model's, so token lengths and
        ``max_length="auto"`` come out as in training.

        Example:
            >>> Classifier().inspect_files("train.csv", test_path="test.csv").warnings  # doctest: +SKIP
        """
        train, val, test = self._read_files(train_path, validation_path, test_path, callback)
        encoder, self.tokenizer = load_encoder(self.train_config.model, self.train_config.trust_remote_code)
        self._check_data(train, val, test, encoder.config, None)
        return self.data_check

    def _read_files(self, train_path: str | Path, validation_path: str | Path | None, test_path: str | Path | None,
                    callback: Callback | None) -> tuple[LabeledData, LabeledData | None, LabeledData | None]:
        from lorafit.data import read_labeled

        cfg, task = self.data_config, self.task
        train = read_labeled(train_path, cfg.text_column, cfg.label_column, cfg.empty_texts, cfg.text_pair_column,
                             task)
        self._check_trainable(train)
        if validation_path is None:
            train, val = self._holdout(train, callback)
        else:
            val = read_labeled(validation_path, cfg.text_column, cfg.label_column, cfg.empty_texts,
                               cfg.text_pair_column, task)
        test = read_labeled(test_path, cfg.text_column, cfg.label_column, "drop", cfg.text_pair_column, task) \
            if test_path else None
        return train, val, test

    def _check_trainable(self, data: LabeledData) -> None:
        """Refuse training data the task cannot learn from; note its smallest class (before the holdout)."""
        self.task.check_trainable(data)
        self._train_smallest = self.task.holdout_rows(data.labels)

    def _holdout(self, data: LabeledData, callback: Callback | None) -> tuple[LabeledData, LabeledData | None]:
        """A seeded validation split (stratified for single-label, random for the other tasks), or none
        (``validation_fraction`` 0, or ``auto`` on small classes). With ``validation_overlap="move"`` the held-out
        rows whose text the training part already holds go back to training (:mod:`lorafit.overlap`). The count
        of dropped rows stays with the training part."""
        smallest = self.task.holdout_rows(data.labels)
        fraction = resolve_validation_fraction(self.data_config.validation_fraction, smallest)
        if fraction == 0:
            message = (f"no validation data (validation_fraction={self.data_config.validation_fraction}, "
                       f"{self.task.holdout_basis} {smallest} rows): training on all {len(data)} rows and keeping "
                       "the last state")
            _announce(message, callback)
            return data, None
        train_index, val_index = self.task.split(data.labels, fraction, self.train_config.seed)
        split = f"{self.task.split_kind} {fraction:.0%} split"
        if self.data_config.validation_overlap == "move":
            held = len(val_index)
            train_index, val_index, overlap = move_contained(data.texts, train_index, val_index)
            moved = held - len(val_index)
            if len(overlap):
                _announce(overlap.describe(held, moved), callback)
            if moved:
                split += f", less {moved} rows already in training texts"
        train, val = data.subset(train_index), data.subset(val_index)
        train.dropped_empty = data.dropped_empty
        val.source = f"{data.source} ({split})"
        return train, val

    def _fit(self, train: LabeledData, val: LabeledData | None, test: LabeledData | None,
             callback: Callback | None) -> "Classifier":
        self.train_config = cfg = replace(self.train_config, metric=selection_metric(self.train_config))
        self.pairs_ = is_pairs(train.texts)
        if self.data_config.text_pair_column and not self.pairs_:
            raise ConfigError(f"text_pair_column is {self.data_config.text_pair_column!r}, but the training texts "
                              "are single strings; give (text, text_pair) pairs, or leave text_pair_column out")
        task = self.task
        self.classes_ = task.classes(train.labels, self.data_config.label_column)
        unseen = task.unseen(val.labels, self.classes_) if val is not None else []
        if unseen:
            raise DataError(f"validation data has label(s) the training data lacks: {', '.join(map(repr, unseen[:10]))}; "
                            "every validation label needs training examples")
        if cfg.abstain and cfg.threshold is None and val is None:
            raise ConfigError("abstain needs validation data to choose its threshold for target_precision "
                              f"{cfg.target_precision}, and there is none; pass --validation FILE, "
                              "--validation-fraction 0.1, or a fixed --threshold")
        label_examples = resolve_label_examples(cfg.label_examples, task.name, self.pairs_, self.classes_,
                                                self._train_smallest)
        if callback:
            callback.on_phase("load")
        encoder, self.tokenizer = load_encoder(self.train_config.model, self.train_config.trust_remote_code)
        cfg = self._check_data(train, val, test, encoder.config, callback)
        user_train, train = train, self._add_label_examples(train, label_examples, callback)
        self.base = {"name": cfg.model, "path": resolve_model(cfg.model), "hash": weights_hash(encoder)}
        torch.manual_seed(cfg.seed)  # LoRA's A matrices and the head are initialised from torch's RNG
        self._models.clear()  # a re-fit: the previous model's bf16 copy goes with it
        self.model = build_classifier(encoder, self.classes_, cfg.pooling, self.lora, self.base["path"],
                                      cfg.cache_frozen, rows=len(train))
        chosen = strategy.describe(self.lora.layers_to_transform, cfg.epochs, len(train))
        if chosen:
            _announce(chosen, callback)
        if callback:
            callback.on_phase("tokenize")
        train_enc = tokenize(self.tokenizer, train.texts, cfg.max_length)
        val_enc = tokenize(self.tokenizer, val.texts, cfg.predict_max_length) if val is not None else None
        train_y = task.encode(train.labels, self.classes_)
        val_y = task.encode(val.labels, self.classes_) if val is not None else None
        task.fit_scale(train_y)
        weights = self._class_weights(train_y) if cfg.class_weights == "auto" else None
        trainer = Trainer(self.model, cfg, self.tokenizer.pad_token_id, callback, class_weights=weights,
                          checkpoints=self._checkpoints(train, val, callback), task=task)
        self._train_precision = trainer.precision
        result = trainer.fit(train_enc, task.scale(train_y), val_enc, None if val_y is None else task.scale(val_y),
                             len(self.classes_))
        task.finish(self.model.head)
        self._world_size = result.world_size
        self.model.eval()
        self.metrics_ = {"validation": result.kept_validation(),
                         "best_step": result.best_step, "best_epoch": result.best_epoch,
                         **{k: v for k, v in result.to_dict().items() if k not in ("best_step", "best_epoch")}}
        self.metrics_["train_wall_seconds"] = self.metrics_.pop("train_seconds")
        self.metrics_["label_examples"] = label_examples
        self._calibrate(result.val_logits, val_y, callback)
        if self.calibration_:
            self.metrics_["calibration"] = self.calibration_
        self.data_summary = {"train": {**self._summary(user_train, train_enc),
                                       "label_example_rows": len(train) - len(user_train)},
                             "validation": self._summary(val, val_enc) if val is not None else None,
                             "test": {"source": test.source, "rows": len(test)} if test is not None else None}
        self.validation_predictions = None if result.val_logits is None or task.name != SINGLE_LABEL else \
            Predictions.from_logits(val.texts, val.labels, result.val_logits, self.classes_, self.temperature)
        return self

    def _add_label_examples(self, train: LabeledData, count: int, callback: Callback | None) -> LabeledData:
        """The training rows with ``count`` label examples per class appended (announced when there are any)."""
        if not count:
            return train
        cfg = self.train_config
        _announce(announcement(count, self.classes_, cfg.label_template, cfg.label_examples), callback)
        return add_label_examples(train, self.classes_, count, cfg.label_template)

    def _tune_task(self, logits: np.ndarray | None, y: np.ndarray | None, callback: Callback | None) -> None:
        """Multi-label: per-label thresholds tuned on the validation logits; calibration is single-label only."""
        if self.train_config.calibrate:
            _announce(f"calibration (temperature) applies to single-label classification only: skipped for "
                      f"{self.task.name}", callback)
        if not isinstance(self.task, MultiLabel):
            return
        if logits is None or y is None:
            _announce("no validation data: every label keeps the threshold 0.5", callback)
            self.task.thresholds = None
            return
        self.task.tune(sigmoid(logits), y)
        tuned = metrics.multilabel_headline(y, self.task.decide_matrix(sigmoid(logits)))
        self.calibration_ = {"validation_rows": int(len(y)), "thresholds": dict(zip(self.classes_, self.task.thresholds)),
                             "validation_tuned": tuned}

    def _checkpoints(self, train: LabeledData, val: LabeledData | None, callback: Callback | None
                     ) -> Checkpoints | None:
        """The checkpoint plan of this fit (None without a checkpoint directory)."""
        directory, resume = self._checkpoint_plan
        self._checkpoint_plan = (None, False)
        if directory is None:
            return None
        settings = {"train": {k: v for k, v in to_dict(self.train_config).items() if k not in NOT_FINGERPRINTED},
                    "lora": to_dict(self.lora), "data": to_dict(self.data_config)}
        expected = fingerprint(settings, train.texts, train.labels, val.texts if val is not None else None,
                             val.labels if val is not None else None, self.base["hash"])
        self._checkpoint_dir = Path(directory)
        return Checkpoints(directory, self.train_config.checkpoint_every, expected, resume,
                           inform=callback.on_info if callback else None)

    def _class_weights(self, targets: np.ndarray) -> np.ndarray:
        """The loss weights of ``class_weights="auto"`` for these training targets (see the task's)."""
        return self.task.class_weights(targets, len(self.classes_))

    def _calibrate(self, logits: np.ndarray | None, y: np.ndarray | None, callback: Callback | None) -> None:
        """Fit the temperature and the abstention threshold on the kept checkpoint's validation logits
        (single-label); tune the per-label thresholds (multi-label)."""
        cfg = self.train_config
        self.temperature, self.calibration_, self.unknown_label = 1.0, {}, cfg.unknown_label
        self.threshold = cfg.threshold
        if self.task.name != SINGLE_LABEL:
            self._tune_task(logits, y, callback)
            return
        if logits is None or y is None:
            if cfg.calibrate:
                _announce("no validation data: calibration skipped (temperature 1.0)", callback)
            return
        before = calibration.scores(softmax(logits), y)
        if cfg.calibrate and (logits.argmax(1) == y).all():
            # With no errors the likelihood only grows as T -> 0: there is no overconfidence to measure.
            _announce("validation data has no errors: nothing to calibrate on, temperature stays 1.0", callback)
        elif cfg.calibrate:
            self.temperature = calibration.fit_temperature(logits, y)
        probs = softmax(logits, self.temperature)
        self.calibration_ = {"temperature": self.temperature, "validation_rows": int(len(y)),
                             "uncalibrated": before, "calibrated": calibration.scores(probs, y)}
        if cfg.abstain and cfg.threshold is None:
            chosen = calibration.choose_threshold(probs, y, cfg.target_precision)
            self.threshold = chosen.threshold
            self.calibration_["abstain"] = {"target_precision": cfg.target_precision, **vars(chosen)}
            if not chosen.reached:
                logger.warning("no threshold reaches precision %s on validation; using %.4f (precision %.4f, "
                               "coverage %.1f%%)", cfg.target_precision, chosen.threshold, chosen.precision,
                               100 * chosen.coverage)

    def _check_data(self, train: LabeledData, val: LabeledData | None, test: LabeledData | None, model_config,
                    callback: Callback | None) -> TrainConfig:
        """Check the data (:mod:`lorafit.datacheck`), resolve ``max_length`` and ``predict_max_length``
        ``"auto"``; the resolved config."""
        setting, predict, model = self._max_length_setting, self._predict_length_setting, self.train_config.model
        limit = getattr(model_config, "max_position_embeddings", None)
        limit = limit if isinstance(limit, int) else None
        for name, value in (("max-length", setting), ("predict-max-length", predict)):
            if limit and value != "auto" and value > limit:
                raise ConfigError(f"{name.replace('-', '_')} {value} is longer than {model!r} accepts ({limit} "
                                  f"tokens); pass --{name} {limit} or less, or --{name} auto")
        self.data_check = check_data(train, {"validation": val, "test": test}, self.tokenizer, setting, limit,
                                     predict_max_length=predict, count_labels=self.task.label_counts)
        if callback:
            callback.on_data_check(self.data_check)
        self.train_config = replace(self.train_config, max_length=self.data_check.max_length,
                                    predict_max_length=self.data_check.predict_max_length)
        return self.train_config

    def _summary(self, data: LabeledData, encoded: Encoded) -> dict:
        """Rows, labels and what was dropped or truncated (``encoded``: the texts as trained on)."""
        counts = self.task.label_counts(data.labels)
        return {"source": data.source, "rows": len(data), "dropped_empty": data.dropped_empty,
                "truncated": encoded.truncated, "classes": len(counts), "label_counts": counts}

    # ---------------------------------------------------------------------------------- inference
    @property
    def text_column(self) -> str:
        """The training data's text column: where ``lorafit predict --input`` looks for texts by default."""
        return self.data_config.text_column

    @property
    def text_pair_column(self) -> str | None:
        """The training data's second-text column, for a model trained on pairs from a file (else None)."""
        return self.data_config.text_pair_column

    def _require_fitted(self) -> None:
        if self.model is None:
            raise RunDirError("this Classifier is not trained yet; call fit(...) or Classifier.load(run_dir)")

    def _forward(self, texts: list[str], method: str = "forward", **options: object) -> np.ndarray:
        """Logits (``forward``) or pooled embeddings (``embed``) of ``texts``, in fp32, input order."""
        self._require_fitted()
        texts = check_texts(texts)
        check_pairs(texts, self.pairs_)
        if not texts:
            width = len(self.classes_) if method == "forward" else self.model.encoder.config.hidden_size
            return np.zeros((0, width), dtype=np.float32)
        encoded = tokenize(self.tokenizer, texts, self.train_config.predict_max_length)
        device = next(self.model.parameters()).device
        precision = resolve_precision(check_inference_precision(self.inference_precision), device)
        multiple = pad_multiple(self.train_config.pad_to_multiple_of, precision, device)
        model, autocast_precision = self._models.get(self.model, precision)
        return forward_all(model, encoded.lengths, token_batches(encoded, self.tokenizer.pad_token_id, multiple),
                           self.train_config.eval_batch_size, autocast_precision, device, method=method, **options)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Softmax probabilities, shape ``(len(texts), len(classes_))``, columns in ``classes_`` order;
        multi-label: each label's sigmoid (rows need not sum to 1). Regression has none: a ConfigError.

        Example:
            >>> clf.predict_proba(["where is my card?"]).round(2)  # doctest: +SKIP
        """
        return self.task.probabilities(self._forward(texts), self.temperature)

    def predict(self, texts: list[str], threshold: float | None = None) -> list:
        """The most probable label of each text, or ``unknown_label`` where the classifier abstains.

        ``threshold`` overrides the run's abstention threshold (``0`` never abstains). Multi-label: the list
        of labels at or above their tuned thresholds (``threshold``: one threshold for every label);
        regression: the predicted number of each text.
        """
        if isinstance(self.task, Regression):
            return self.task.values(self._forward(texts))
        return self.decide(self.predict_proba(texts), threshold)

    def decide(self, probs: np.ndarray, threshold: float | None = None) -> list:
        """Labels for rows of :meth:`predict_proba`: the argmax, or ``unknown_label`` where the top probability
        is below ``threshold`` (default: the run's own, None if it does not abstain); multi-label: the labels
        at or above their thresholds."""
        return self.task.decide(probs, self.classes_, self.threshold if threshold is None else threshold,
                                self.unknown_label)

    def embed(self, texts: list[str], normalize: bool = True) -> np.ndarray:
        """One vector per text from the fine-tuned encoder, pooled as the head sees it, shape
        ``(len(texts), hidden_size)``; L2-normalised (so dot products are cosine similarities) unless
        ``normalize`` is False.

        Example:
            >>> vectors = clf.embed(["I lost my card", "card missing"])  # doctest: +SKIP
            >>> float(vectors[0] @ vectors[1])                           # cosine similarity  # doctest: +SKIP
        """
        return self._forward(texts, method="embed", normalize=normalize)

    def evaluate(self, texts: list[str], labels: list, threshold: float | None = None,
                 oos_label: str | None = None, probabilities: np.ndarray | None = None) -> dict:
        """Accuracy, macro-F1, per-class metrics, the confusion matrix and calibration on labeled data.

        The class metrics use the most probable label (no abstaining). ``ece``, ``brier`` and ``nll`` are
        for the run's calibrated probabilities, ``uncalibrated`` holds them at temperature 1. With an
        abstention threshold (the run's, or ``threshold``), ``abstain`` reports coverage and accuracy on
        answered rows; with ``oos_label`` (the label that marks out-of-scope rows in the data) also in-scope
        accuracy and out-of-scope recall, where abstaining or predicting ``oos_label`` count as "out of scope".
        Labels the model never saw are listed under ``unknown_labels`` (their rows count as errors).
        ``probabilities``: ``predict_proba(texts)`` if already computed (saves a second pass).

        Multi-label and regression runs answer with their own metrics (see :meth:`_evaluate_task`).
        """
        if self.task.name != SINGLE_LABEL:
            return self._evaluate_task(texts, labels, threshold, probabilities)
        labels = [str(x) for x in labels]
        if len(check_texts(texts)) != len(labels):
            raise DataError(f"got {len(texts)} texts but {len(labels)} labels; they must pair up")
        if probabilities is None:
            logits = self._forward(texts)
            probs = softmax(logits, self.temperature) if len(logits) else logits.astype(np.float64)
        else:  # precomputed predict_proba output: log p = logits / T + c, and softmax ignores c
            probs = np.asarray(probabilities, dtype=np.float64)
            logits = self.temperature * np.log(np.clip(probs, 1e-300, None))
        predicted = self.decide(probs, 0.0)
        unknown = sorted(set(labels) - set(self.classes_))
        result = metrics.report(labels, predicted, self.classes_ + unknown)
        result["unknown_labels"] = unknown
        if unknown:
            result["unknown_label_rows"] = sum(label in set(unknown) for label in labels)
        index = {label: i for i, label in enumerate(self.classes_)}
        known = np.array([label in index for label in labels], dtype=bool)
        y = np.array([index[label] for label in labels if label in index], dtype=int)
        if len(y):
            result.update(calibration.scores(probs[known], y), temperature=self.temperature)
            result["uncalibrated"] = calibration.scores(softmax(logits[known]), y)
            result["accuracy_at_coverage"] = {f"{c:.0%}": calibration.accuracy_at_coverage(probs[known], y, c)
                                              for c in (0.9, 0.8)}
        threshold = self.threshold if threshold is None else threshold
        if threshold or oos_label is not None:
            result["abstain"] = calibration.abstain_report(self.decide(probs, threshold), labels, threshold or 0.0,
                                                             self.unknown_label, oos_label)
        return result

    def _evaluate_task(self, texts: list[str], labels: list, threshold: float | None,
                       probabilities: np.ndarray | None) -> dict:
        """Multi-label: ``micro_f1``, ``macro_f1``, ``subset_accuracy`` and ``per_label`` (with each label's
        threshold) at the run's thresholds (``threshold``: one for all), and labels the run never saw under
        ``unknown_labels``; regression: ``mse``, ``mae``, ``rmse``, ``pearson``, ``spearman``."""
        cells = self._cells(labels, "evaluation data")
        if len(check_texts(texts)) != len(cells):
            raise DataError(f"got {len(texts)} texts but {len(cells)} labels; they must pair up")
        if isinstance(self.task, Regression):
            if threshold is not None:
                raise ConfigError("a threshold applies to classification; this is a regression run")
            return {**metrics.regression_scores(self.task.encode(cells, self.classes_), np.array(self.predict(texts))),
                    "n": len(cells)}
        probs = self.predict_proba(texts) if probabilities is None else np.asarray(probabilities, dtype=np.float64)
        result = metrics.multilabel_report(self.task.encode(cells, self.classes_),
                                           self.task.decide_matrix(probs, threshold), self.classes_)
        for label, limit in zip(self.classes_, self.task.limits(len(self.classes_), threshold)):
            result["per_label"][label]["threshold"] = limit
        result["unknown_labels"] = self.task.unseen(cells, self.classes_)
        result["unknown_label_rows"] = sum(bool(self.task.unseen([cell], self.classes_)) for cell in cells)
        return result

    # ------------------------------------------------------------------------------ persistence
    def manifest(self) -> dict:
        """The ``lorafit.json`` content for this classifier."""
        import peft
        import torch
        import transformers

        return {"format_version": FORMAT_VERSION, "lorafit_version": __version__,
                "task": self.task.name, "task_settings": self.task.to_manifest(), "base_model": self.base,
                "labels": self.classes_,
                "text_column": self.data_config.text_column, "label_column": self.data_config.label_column,
                "text_pair_column": self.data_config.text_pair_column, "text_pairs": self.pairs_,
                "max_length": self.train_config.max_length, "max_length_auto": self._max_length_setting == "auto",
                "predict_max_length": self.train_config.predict_max_length,
                "predict_max_length_auto": self._predict_length_setting == "auto",
                "pooling": self.train_config.pooling, "train_precision": self._train_precision,
                "world_size": self._world_size,
                "calibration": {"temperature": self.temperature, **{k: v for k, v in self.calibration_.items()
                                                                     if k != "temperature"}},
                "abstain": {"threshold": self.threshold, "unknown_label": self.unknown_label},
                "train_config": to_dict(self.train_config), "lora": to_dict(self.model.lora_settings),
                "data_config": to_dict(self.data_config), "data": self.data_summary,
                "data_check": self.data_check.to_dict() if self.data_check else self._stored_data_check,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "versions": {"lorafit": __version__, "torch": torch.__version__,
                             "transformers": transformers.__version__, "peft": peft.__version__}}

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the run directory atomically (a crash leaves no half-written directory).

        After a training run of several processes every process calls ``save``: rank 0 writes, and each
        returns once the directory is there.
        """
        self._require_fitted()
        if not distributed.is_main():
            distributed.barrier()
            return Path(path)
        manifest = self.manifest()

        def fill(tmp: Path) -> None:
            self.model.peft_model.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            write_json(tmp / MANIFEST, manifest)
            write_json(tmp / METRICS, self.metrics_)
            (tmp / "README.md").write_text(card.model_card(manifest, self.metrics_), encoding="utf-8")
            try:
                write_run_report(tmp, manifest, self.metrics_, self.validation_predictions)
            except Exception as exc:  # a figure that fails to draw must not cost the trained model
                logger.warning("the run report could not be drawn (%s: %s); the model is saved, and "
                               "`lorafit report %s` draws the report again", type(exc).__name__, exc, path)

        written = write_atomically(path, fill, overwrite=overwrite)
        if self._checkpoint_dir is not None:  # the run is complete: its checkpoints have served
            shutil.rmtree(self._checkpoint_dir, ignore_errors=True)
            self._checkpoint_dir = None
        distributed.barrier()
        return written

    @staticmethod
    def check_output(path: str | Path, overwrite: bool = False) -> None:
        """Refuse an existing output directory before any training time is spent."""
        check_writable(path, overwrite)

    @classmethod
    def load(cls, path: str | Path, trust_remote_code: bool = False) -> "Classifier":
        """Load a run directory written by :meth:`save` (or ``lorafit train``).

        Weights are read from safetensors only; ``trust_remote_code`` lets a base model with its own code load.

        Example:
            >>> clf = Classifier.load("runs/banking")  # doctest: +SKIP
        """
        manifest = read_manifest(path)
        clf = cls.from_manifest(path, manifest)
        clf.model = load_classifier(load_base(path, clf.base, trust_remote_code), path, clf.classes_,
                                    manifest["pooling"], clf.lora)
        return clf

    @classmethod
    def from_manifest(cls, path: str | Path, manifest: dict) -> "Classifier":
        """Everything of the run directory ``path`` but the model: settings, labels, tokenizer, calibration.

        :meth:`load` adds the model; :mod:`lorafit.registry` adds one that shares its base with other runs.
        """
        from transformers import AutoTokenizer

        settings = {**manifest["train_config"], "predict_max_length": predict_length_of(manifest)}
        clf = cls(train=from_dict(TrainConfig, settings), lora=from_dict(LoraSettings, manifest["lora"]),
                  data=from_dict(DataConfig, manifest.get("data_config", {})))
        clf.classes_ = list(manifest["labels"])
        clf.pairs_ = bool(manifest.get("text_pairs", False))
        clf.task = make_task(manifest.get("task", SINGLE_LABEL), clf.data_config.label_delimiter,
                             manifest.get("task_settings"))
        try:
            clf.tokenizer = AutoTokenizer.from_pretrained(str(path))
        except Exception as exc:  # tokenizers' own exception types vary: name the files whatever they are
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RunDirError(f"the tokenizer files in {path} (tokenizer.json, tokenizer_config.json) cannot be "
                              f"read ({first}); the run directory is damaged") from None
        clf.base = manifest["base_model"]
        clf.temperature = float(manifest.get("calibration", {}).get("temperature", 1.0))
        abstain = manifest.get("abstain") or {}
        clf.threshold = abstain.get("threshold")
        clf.unknown_label = abstain.get("unknown_label", clf.unknown_label)
        clf.calibration_ = dict(manifest.get("calibration", {}))
        clf.metrics_, clf.data_summary = read_metrics(path), manifest.get("data", {})
        clf._train_precision = manifest.get("train_precision", clf._train_precision)
        clf._world_size = int(manifest.get("world_size", 1))
        clf._stored_data_check = manifest.get("data_check")
        clf._max_length_setting = "auto" if manifest.get("max_length_auto") else clf.train_config.max_length
        clf._predict_length_setting = "auto" if manifest.get("predict_max_length_auto") \
            else clf.train_config.predict_max_length
        stored = Path(path) / REPORT_DIR / PREDICTIONS_CSV
        clf.validation_predictions = Predictions.read_csv(stored) if stored.is_file() else None
        return clf

