"""The Classifier API: fit / predict / predict_proba / evaluate, input checks, and learning for real."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_TRAIN
from helpers import LABELS, make_texts
from lorafit import Classifier, ConfigError, DataError, LoraSettings, RunDirError, TrainConfig


# ------------------------------------------------------------------------------------------ fitting
def test_fit_returns_self_with_integer_labels_and_explicit_validation(tiny_model: str) -> None:
    texts, labels = make_texts(10, seed=4)
    ids = [LABELS.index(x) * 5 for x in labels]  # integer labels 0, 5, 10
    val_texts, val_labels = make_texts(3, seed=5)
    clf = Classifier(model=tiny_model, **{**TINY_TRAIN, "epochs": 1})
    assert clf.fit(texts, ids, validation=(val_texts, [LABELS.index(x) * 5 for x in val_labels])) is clf
    assert clf.classes_ == ["0", "5", "10"]  # numeric order, as strings
    predicted = clf.predict(texts[:5])
    assert all(isinstance(p, str) and p in clf.classes_ for p in predicted)
    assert clf.data_summary["train"]["rows"] == 30 and clf.data_summary["validation"]["rows"] == 9


def test_settings_as_keywords_or_dataclasses() -> None:
    clf = Classifier(TrainConfig(epochs=7), LoraSettings(r=4), epochs=2, lora_alpha=8, text_column="t")
    assert clf.train_config.epochs == 2 and clf.lora.r == 4 and clf.lora.lora_alpha == 8
    assert clf.data_config.text_column == "t"


def test_unknown_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'epoch'"):
        Classifier(epoch=3)


def test_bad_setting_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="metric"):
        Classifier(metric="f2")


def test_fit_refuses_a_bare_string() -> None:
    with pytest.raises(TypeError, match="single string"):
        Classifier().fit("pizza", ["food"])


def test_fit_refuses_non_string_texts() -> None:
    with pytest.raises(TypeError, match="int"):
        Classifier().fit(["pizza", 3], ["food", "music"])


def test_fit_refuses_mismatched_lengths() -> None:
    with pytest.raises(DataError, match="2 texts but 3 labels"):
        Classifier().fit(["pizza", "song"], ["food", "music", "food"])


def test_fit_refuses_a_single_class() -> None:
    with pytest.raises(DataError, match="single class"):
        Classifier().fit(["pizza", "bread", "soup"], ["food"] * 3)


def test_fit_refuses_validation_labels_missing_from_training(tiny_model: str) -> None:
    texts, labels = make_texts(4, seed=0, labels=["food", "music"])
    with pytest.raises(DataError, match="'sports'"):
        Classifier(model=tiny_model, **TINY_TRAIN).fit(texts, labels, validation=(["goal"], ["sports"]))


@pytest.mark.parametrize("validation", [(["pizza", "song"], ["food"]), ([], [])])
def test_fit_refuses_bad_validation_data(tiny_model: str, validation: tuple) -> None:
    texts, labels = make_texts(10, seed=0)
    with pytest.raises(DataError):
        Classifier(model=tiny_model, **{**TINY_TRAIN, "epochs": 1}).fit(texts, labels, validation=validation)


def test_max_length_beyond_the_model_is_a_config_error(tiny_model: str) -> None:
    texts, labels = make_texts(10, seed=0)
    texts[0] = " ".join(["pizza"] * 200)
    with pytest.raises(ConfigError, match="max_length"):
        Classifier(model=tiny_model, **{**TINY_TRAIN, "epochs": 1, "max_length": 256}).fit(texts, labels)


def test_predict_max_length_beyond_the_model_is_a_config_error(tiny_model: str) -> None:
    texts, labels = make_texts(10, seed=0)
    with pytest.raises(ConfigError, match="predict_max_length 256 .*--predict-max-length 128"):
        Classifier(model=tiny_model, **{**TINY_TRAIN, "epochs": 1, "predict_max_length": 256}).fit(texts, labels)


def test_predictions_read_texts_whole_past_the_automatic_training_length(tiny_model: str) -> None:
    """``max_length="auto"`` cuts long training texts to save time; predictions read each text whole (up to the
    model's 128 positions). A given ``max_length`` holds for predictions too, as does a given
    ``predict_max_length``."""
    texts, labels = make_texts(12, seed=3)
    long_text = " ".join(["pizza", "song"] * 25)  # 52 tokens
    auto = Classifier(model=tiny_model, **{**TINY_TRAIN, "epochs": 1, "validation_fraction": 0}).fit(texts, labels)
    assert auto.train_config.max_length == 16 and auto.train_config.predict_max_length == 128
    cut = auto.tokenizer.decode(auto.tokenizer(long_text, truncation=True, max_length=16)["input_ids"][1:-1])
    whole, first = auto.predict_proba([long_text, cut])
    assert not np.allclose(whole, first, atol=1e-4)
    for setting in ({"max_length": 16}, {"predict_max_length": 16}):
        fixed = Classifier(model=tiny_model, **{**TINY_TRAIN, "epochs": 1, "validation_fraction": 0, **setting})
        fixed.fit(texts, labels)
        assert fixed.train_config.predict_max_length == 16
        whole, first = fixed.predict_proba([long_text, cut])
        np.testing.assert_allclose(whole, first, atol=1e-6)


def test_unfitted_classifier_cannot_predict_or_save(tmp_path) -> None:
    clf = Classifier()
    with pytest.raises(RunDirError, match="not trained"):
        clf.predict(["pizza"])
    with pytest.raises(RunDirError, match="not trained"):
        clf.save(tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------- predicting
def test_classes_in_label_order(trained) -> None:
    assert trained.classes_ == LABELS


def test_predict_returns_label_strings(trained, synthetic_test) -> None:
    texts, _ = synthetic_test
    predicted = trained.predict(texts)
    assert isinstance(predicted, list) and len(predicted) == len(texts)
    assert all(isinstance(p, str) for p in predicted) and set(predicted) <= set(LABELS)


def test_predict_proba_shape_and_rows_sum_to_one(trained, synthetic_test) -> None:
    texts, _ = synthetic_test
    probs = trained.predict_proba(texts)
    assert isinstance(probs, np.ndarray) and probs.shape == (len(texts), 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert (probs >= 0).all()
    assert [trained.classes_[i] for i in probs.argmax(1)] == trained.predict(texts)


def test_predictions_do_not_depend_on_batch_company(trained, synthetic_test) -> None:
    texts = synthetic_test[0] + ["", " ".join(["pizza"] * 60)]  # an empty text and a long one, too
    together = trained.predict_proba(texts)
    alone = np.vstack([trained.predict_proba([t]) for t in texts])
    reversed_ = trained.predict_proba(texts[::-1])[::-1]
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(together, reversed_, atol=1e-6)


@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_bare_string_is_a_type_error(trained, method: str) -> None:
    with pytest.raises(TypeError, match="wrap it in a list"):
        getattr(trained, method)("pizza and bread")


def test_empty_list_gives_empty_output(trained) -> None:
    assert trained.predict([]) == []
    probs = trained.predict_proba([])
    assert probs.shape == (0, 3)


def test_learnable_data_is_learned(trained, synthetic_test) -> None:
    texts, labels = synthetic_test
    accuracy = np.mean([p == y for p, y in zip(trained.predict(texts), labels)])
    assert accuracy > 0.6, accuracy  # chance is 1/3


def test_training_without_probe_learns(tiny_model: str, synthetic, synthetic_test) -> None:
    """LoRA + head training alone (no probe start) lowers the loss and beats chance."""
    clf = Classifier(model=tiny_model, **{**TINY_TRAIN, "probe_init": False, "epochs": 8, "learning_rate": 1e-2})
    clf.fit(*synthetic)
    history = clf.metrics_["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    texts, labels = synthetic_test
    assert np.mean([p == y for p, y in zip(clf.predict(texts), labels)]) > 0.5


# ----------------------------------------------------------------------------------------- evaluating
def test_evaluate_report(trained, synthetic_test) -> None:
    texts, labels = synthetic_test
    result = trained.evaluate(texts, labels)
    predicted = trained.predict(texts)
    assert result["accuracy"] == pytest.approx(np.mean([p == y for p, y in zip(predicted, labels)]))
    assert set(result) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix", "labels", "unknown_labels"}
    assert result["labels"] == LABELS and result["unknown_labels"] == []
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == len(texts) and np.trace(matrix) == sum(
        p == y for p, y in zip(predicted, labels))
    assert sum(s["support"] for s in result["per_class"].values()) == len(texts)


def test_evaluate_with_unseen_label(trained) -> None:
    result = trained.evaluate(["pizza bread", "guitar song", "tax form"], ["food", "music", "taxes"])
    assert result["unknown_labels"] == ["taxes"]
    assert result["unknown_label_rows"] == 1
    assert result["labels"] == LABELS + ["taxes"]
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (4, 4)
    assert matrix[3].sum() == 1 and matrix[:, 3].sum() == 0  # rows: true label; columns: predicted
    assert result["accuracy"] <= 2 / 3


def test_evaluate_refuses_mismatched_lengths(trained) -> None:
    with pytest.raises(DataError, match="pair up"):
        trained.evaluate(["pizza"], ["food", "music"])


def test_evaluate_bare_string_is_a_type_error(trained) -> None:
    with pytest.raises(TypeError):
        trained.evaluate("pizza", ["food"])


def test_same_seed_same_model(tiny_model: str, synthetic) -> None:
    """The seed covers LoRA's and the head's initialisation, not only the batch order."""
    texts, labels = synthetic
    settings = {**TINY_TRAIN, "epochs": 1, "probe_init": False}
    first = Classifier(model=tiny_model, **settings).fit(texts, labels).predict_proba(texts[:8])
    second = Classifier(model=tiny_model, **settings).fit(texts, labels).predict_proba(texts[:8])
    other = Classifier(model=tiny_model, **{**settings, "seed": 1}).fit(texts, labels).predict_proba(texts[:8])
    np.testing.assert_allclose(first, second, atol=1e-6)
    assert not np.allclose(first, other, atol=1e-4)


def test_embed_gives_unit_vectors_that_the_head_classifies(trained, synthetic_test) -> None:
    texts, _ = synthetic_test
    vectors = trained.embed(texts)
    assert vectors.shape == (len(texts), trained.model.encoder.config.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    head = trained.model.head.modules_to_save["default"]
    logits = vectors @ head.weight.detach().cpu().numpy().T + head.bias.detach().cpu().numpy()
    assert [trained.classes_[i] for i in logits.argmax(1)] == trained.predict(texts)
    assert trained.embed([]).shape == (0, vectors.shape[1])


def test_a_re_fit_lets_the_previous_models_bf16_copy_go(tiny_model: str) -> None:
    """The bf16 prediction copy is dropped with the model it was made from when fit replaces the model."""
    import gc
    import weakref

    texts, labels = make_texts(40, seed=3)
    clf = Classifier(model=tiny_model, **{**TINY_TRAIN, "epochs": 1}).fit(texts, labels)
    clf.inference_precision = "bf16"
    clf.predict(texts[:4])
    old_model, old_copy = weakref.ref(clf.model), weakref.ref(clf._models._bf16)
    clf.fit(texts, labels)
    gc.collect()
    assert old_model() is None and old_copy() is None
    assert clf.predict(texts[:4]) and clf._models._source is clf.model
