"""Calibration and abstaining: temperature scaling, ECE / Brier, thresholds for a target precision, the
``unknown`` label through predict and the run directory, and inverse-frequency class weights."""
from __future__ import annotations

import logging
import random

import numpy as np
import pytest

from conftest import TINY_TRAIN
from helpers import make_texts
from lorafit import Classifier
from lorafit.calibration import accuracy_at_coverage, brier, choose_threshold, ece, fit_temperature, nll, selective
from lorafit.errors import ConfigError
from lorafit.inference import softmax


def _overconfident(n: int = 3000, classes: int = 4, sharpen: float = 4.0, seed: int = 0):
    """Labels drawn from softmax(true logits); the model reports ``sharpen`` x the true logits."""
    rng = np.random.default_rng(seed)
    true = rng.normal(size=(n, classes)) * 1.5
    p = softmax(true)
    y = np.array([rng.choice(classes, p=row) for row in p])
    return true * sharpen, y


def test_temperature_scaling_undoes_overconfidence() -> None:
    logits, y = _overconfident()
    t = fit_temperature(logits, y)
    assert 3.2 < t < 4.8  # the sharpening factor, recovered
    before, after = softmax(logits), softmax(logits, t)
    assert nll(after, y) < nll(before, y) - 0.2
    assert ece(after, y) < 0.03 < ece(before, y)
    assert (after.argmax(1) == before.argmax(1)).all()  # the ranking never changes


def test_temperature_above_one_never_for_underconfident_logits() -> None:
    logits, y = _overconfident(sharpen=0.5)
    assert 0.35 < fit_temperature(logits, y) < 0.65


def test_ece_and_brier_on_hand_checked_cases() -> None:
    probs = np.tile([0.8, 0.2], (10, 1))
    assert ece(probs, np.array([0] * 8 + [1] * 2)) == pytest.approx(0.0)
    assert ece(probs, np.zeros(10, dtype=int)) == pytest.approx(0.2)
    assert brier(np.array([[1.0, 0.0]]), np.array([0])) == 0.0
    assert brier(np.array([[0.5, 0.5]]), np.array([1])) == pytest.approx(0.5)
    assert ece(np.zeros((0, 2)), np.zeros(0, dtype=int)) == 0.0


def test_threshold_reaches_the_target_precision_with_the_most_coverage() -> None:
    logits, y = _overconfident(n=2000, sharpen=1.0, seed=1)
    probs = softmax(logits)
    for target in (0.8, 0.9, 0.95):
        chosen = choose_threshold(probs, y, target)
        at = selective(probs, y, chosen.threshold)
        assert chosen.reached and at["selective_accuracy"] >= target
        assert at["coverage"] == pytest.approx(chosen.coverage)
        # Any lower threshold (the next confidence below it) answers more rows and misses the target.
        lower = probs.max(1)[probs.max(1) < chosen.threshold].max()
        assert selective(probs, y, lower)["selective_accuracy"] < target


def test_unreachable_precision_gives_the_best_threshold_and_says_so() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    chosen = choose_threshold(probs, np.array([1, 0, 0]), 0.99)
    assert not chosen.reached and chosen.threshold == pytest.approx(0.7) and chosen.precision == pytest.approx(2 / 3)


def test_accuracy_at_coverage_keeps_the_most_confident_rows() -> None:
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.55, 0.45]])
    y = np.array([0, 1, 0, 1])
    assert accuracy_at_coverage(probs, y, 0.5) == 1.0 and accuracy_at_coverage(probs, y, 1.0) == 0.5


# ------------------------------------------------------------------------------ through the Classifier
@pytest.fixture(scope="module")
def noisy() -> tuple[list[str], list[str]]:
    """Learnable texts with a quarter of the labels flipped, so validation has errors to calibrate on."""
    texts, labels = make_texts(40, seed=3)
    rng = random.Random(0)
    names = sorted(set(labels))
    flipped = [rng.choice([n for n in names if n != label]) if rng.random() < 0.25 else label for label in labels]
    return texts, flipped


@pytest.fixture(scope="module")
def abstaining(tiny_model: str, noisy) -> Classifier:
    return Classifier(model=tiny_model, **TINY_TRAIN, abstain=True, target_precision=0.9).fit(*noisy)


def test_fit_calibrates_on_validation_and_the_run_keeps_it(abstaining: Classifier, noisy, tmp_path) -> None:
    cal = abstaining.calibration_
    assert cal["temperature"] == abstaining.temperature != 1.0
    assert cal["calibrated"]["nll"] <= cal["uncalibrated"]["nll"]
    assert abstaining.metrics_["calibration"]["validation_rows"] == cal["validation_rows"] > 0
    loaded = Classifier.load(abstaining.save(tmp_path / "run"))
    assert loaded.temperature == abstaining.temperature and loaded.threshold == abstaining.threshold
    texts = noisy[0][:20]
    np.testing.assert_allclose(loaded.predict_proba(texts), abstaining.predict_proba(texts), atol=1e-6)
    assert loaded.predict(texts) == abstaining.predict(texts)


def test_no_calibrate_keeps_temperature_one(tiny_model: str, noisy) -> None:
    clf = Classifier(model=tiny_model, **TINY_TRAIN, calibrate=False).fit(*noisy)
    assert clf.temperature == 1.0 and clf.threshold is None
    assert clf.calibration_["calibrated"] == clf.calibration_["uncalibrated"]


def test_abstain_threshold_gives_the_precision_on_validation(abstaining: Classifier) -> None:
    chosen = abstaining.calibration_["abstain"]
    assert chosen["target_precision"] == 0.9 and chosen["threshold"] == abstaining.threshold > 0
    if chosen["reached"]:
        assert chosen["precision"] >= 0.9
    assert 0 < chosen["coverage"] <= 1


def test_unknown_flows_through_predict_decide_and_evaluate(abstaining: Classifier, noisy) -> None:
    texts, labels = noisy[0][:30], noisy[1][:30]
    assert set(abstaining.predict(texts, threshold=1.0)) == {"unknown"}
    assert "unknown" not in abstaining.predict(texts, threshold=0.0)
    probs = abstaining.predict_proba(texts)
    answered = [label != "unknown" for label in abstaining.predict(texts)]
    assert answered == list(probs.max(1) >= abstaining.threshold)
    result = abstaining.evaluate(texts, labels, oos_label=labels[0])
    assert {"ece", "brier", "nll", "uncalibrated", "temperature", "accuracy_at_coverage"} <= result.keys()
    a = result["abstain"]
    assert a["coverage"] == pytest.approx(np.mean(answered))
    assert a["oos_label"] == labels[0] and 0 <= a["oos_recall"] <= 1 and 0 <= a["in_scope_accuracy"] <= 1
    # The class metrics stay those of the most probable label.
    assert result["accuracy"] == pytest.approx(np.mean([p == t for p, t in zip(abstaining.predict(texts, 0.0), labels)]))


def test_fixed_threshold_and_unknown_label_name(tiny_model: str, synthetic) -> None:
    clf = Classifier(model=tiny_model, **TINY_TRAIN, threshold=0.999, unknown_label="?",
                     validation_fraction=0).fit(*synthetic)
    assert clf.threshold == 0.999 and clf.train_config.abstain
    assert "?" in clf.predict(synthetic[0][:30])


def test_abstain_without_validation_data_is_a_config_error(tiny_model: str, synthetic) -> None:
    with pytest.raises(ConfigError, match="abstain needs validation data"):
        Classifier(model=tiny_model, **TINY_TRAIN, abstain=True, validation_fraction=0).fit(*synthetic)


@pytest.mark.parametrize("setting", [dict(class_weights="inverse"), dict(target_precision=0),
                                     dict(target_precision=1.5), dict(threshold=2.0), dict(unknown_label=" ")])
def test_bad_values_are_config_errors(setting: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(setting))):
        Classifier(**setting)


def test_class_weights_are_inverse_frequency_and_imbalance_warns(tiny_model: str, caplog) -> None:
    texts, labels = make_texts(30, seed=0)
    rare = [i for i, label in enumerate(labels) if label == labels[0]][:2]  # one class at 2 rows, the others 30
    keep = [i for i, label in enumerate(labels) if label != labels[0] or i in rare]
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    clf = Classifier(model=tiny_model, **TINY_TRAIN, class_weights="auto")
    with caplog.at_level(logging.WARNING, logger="lorafit"):
        clf.fit(texts, labels, validation=(texts, labels))
    assert "imbalanced classes" in caplog.text and "--class-weights auto" in caplog.text
    y = np.array([clf.classes_.index(label) for label in labels])
    weights = clf._class_weights(y)
    counts = np.bincount(y)
    np.testing.assert_allclose(weights * counts, len(y) / len(counts))  # every class weighs the same in total
