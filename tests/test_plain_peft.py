"""A run directory loads with plain transformers + peft and gives lorafit's probabilities.

lorafit's head uses mean pooling, so the adapter's task type is FEATURE_EXTRACTION: peft's standard
sequence-classification loader must refuse it (rather than answer with BERT's CLS-pooler head), and the
short plain code below, as a user would write it, must reproduce ``Classifier.predict_proba``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lorafit import Classifier

TEXTS = ["pizza and bread today", "we heard a new song on the piano", "the coach saw the team score a goal",
         "cheese", "the old guitar and the ball"]


def test_standard_sequence_classification_loader_refuses(run_dir: Path) -> None:
    from peft import AutoPeftModelForSequenceClassification

    with pytest.raises(ValueError, match="PeftModelForFeatureExtraction"):
        AutoPeftModelForSequenceClassification.from_pretrained(str(run_dir))


def plain_predict_proba(run_dir: str, texts: list[str], text_pairs: list[str] | None = None
                        ) -> tuple[np.ndarray, dict[int, str]]:
    """What a user writes to use a lorafit run without lorafit (transformers + peft only); ``text_pairs``: the
    second texts for a run trained on pairs."""
    import json

    import torch

    info = json.load(open(f"{run_dir}/lorafit.json"))
    logits = plain_logits(run_dir, texts, text_pairs)
    probs = torch.softmax(logits / info["calibration"]["temperature"], dim=-1)
    return probs.numpy(), dict(enumerate(info["labels"]))


def plain_logits(run_dir: str, texts: list[str], text_pairs: list[str] | None = None):
    """The head's output for ``texts`` (and ``text_pairs``) with transformers + peft only (a torch tensor, one
    row per text)."""
    import json

    import torch
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    info = json.load(open(f"{run_dir}/lorafit.json"))
    id2label = dict(enumerate(info["labels"]))
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    base = AutoModel.from_pretrained(info["base_model"]["path"])
    base.classifier = torch.nn.Linear(base.config.hidden_size, len(id2label))
    model = PeftModel.from_pretrained(base, run_dir).eval()

    batch = tokenizer(texts, text_pairs, padding=True, truncation=True, max_length=info["predict_max_length"],
                      return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
        if info["pooling"] == "mean":
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)      # mean over real tokens
        else:                                                  # "cls"
            pooled = hidden[:, 0]
        pooled = torch.nn.functional.normalize(pooled, dim=-1)  # L2-normalise
        return model.classifier(pooled)


def test_plain_transformers_and_peft_reproduce_lorafit(run_dir: Path) -> None:
    probs, id2label = plain_predict_proba(str(run_dir), TEXTS)
    clf = Classifier.load(run_dir)
    np.testing.assert_allclose(probs, clf.predict_proba(TEXTS), atol=1e-5)
    assert list(id2label.values()) == clf.classes_
    assert [id2label[i] for i in probs.argmax(1)] == clf.predict(TEXTS)


def test_plain_code_reproduces_a_cls_pooled_run(tiny_model: str, synthetic, tmp_path: Path) -> None:
    from conftest import TINY_TRAIN

    clf = Classifier(model=tiny_model, pooling="cls", **{**TINY_TRAIN, "epochs": 1}).fit(*synthetic)
    run = clf.save(tmp_path / "cls_run")
    probs, _ = plain_predict_proba(str(run), TEXTS)
    np.testing.assert_allclose(probs, clf.predict_proba(TEXTS), atol=1e-5)
    np.testing.assert_allclose(probs, Classifier.load(run).predict_proba(TEXTS), atol=1e-5)


def test_plain_code_uses_the_trained_head_not_a_fresh_one(run_dir: Path) -> None:
    """The head comes from the adapter file: two fresh random heads would give different answers."""
    import torch

    torch.manual_seed(1)
    first, _ = plain_predict_proba(str(run_dir), TEXTS)
    torch.manual_seed(2)
    second, _ = plain_predict_proba(str(run_dir), TEXTS)
    np.testing.assert_allclose(first, second, atol=1e-6)


def test_plain_code_reproduces_an_interpolated_run(tiny_model: str, synthetic, tmp_path: Path) -> None:
    """``wise_alpha`` changes weight values only: the saved adapter still loads as is, and the temperature was
    fitted on the interpolated model's validation logits."""
    from conftest import TINY_TRAIN

    clf = Classifier(model=tiny_model, wise_alpha=0.5, **{**TINY_TRAIN, "epochs": 2}).fit(*synthetic)
    assert clf.metrics_["wise_alpha"] == 0.5
    assert clf.metrics_["validation"] == clf.metrics_["wise_validation"]["interpolated"]
    run = clf.save(tmp_path / "wise_run")
    assert "wise_alpha=0.5 (WiSE-FT)" in (run / "README.md").read_text()
    probs, _ = plain_predict_proba(str(run), TEXTS)
    np.testing.assert_allclose(probs, clf.predict_proba(TEXTS), atol=1e-5)
    loaded = Classifier.load(run)
    np.testing.assert_allclose(probs, loaded.predict_proba(TEXTS), atol=1e-5)
    assert loaded.train_config.wise_alpha == 0.5
