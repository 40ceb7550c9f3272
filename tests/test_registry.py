"""Several runs in one process: one shared base, each answered by its own adapter and its own head."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_TRAIN
from helpers import make_texts
from lorafit import Classifier, RunDirError
from lorafit.models import pool
from lorafit.registry import load_runs, parse_spec

TEXTS = ["pizza and bread today", "we heard a new song on the piano", "the team saw a goal", "", "🍕 ü\u200b\u0301 ball"]


def test_runs_on_one_base_share_its_weights(served_models) -> None:
    three, two = served_models
    model_a, model_b = three.backend.model, two.backend.model
    assert model_a.shared is model_b.shared and model_a.encoder is model_b.encoder
    name, param = next(iter(model_a.encoder.named_parameters()))
    assert dict(model_b.encoder.named_parameters())[name].data_ptr() == param.data_ptr()
    assert model_a.head is not model_b.head
    assert len(model_a.shared.peft_model.peft_config) == 2 and model_a.adapter_name != model_b.adapter_name


def test_the_served_adapters_are_trained_and_differ(served_models) -> None:
    # Otherwise a wrong adapter switch would go unnoticed by the tests below.
    three, two = served_models
    shared = three.backend.model.shared
    with shared.lock:
        shared.activate(two.backend.model.adapter_name)
        hidden_two = shared.peft_model(**three.backend.tokenizer(TEXTS, padding=True, return_tensors="pt"))
        shared.activate(three.backend.model.adapter_name)
        hidden_three = shared.peft_model(**three.backend.tokenizer(TEXTS, padding=True, return_tensors="pt"))
    assert (hidden_two.last_hidden_state - hidden_three.last_hidden_state).abs().max() > 1e-3


def test_each_run_keeps_its_labels_and_its_probabilities(served_models, three_label_run: Path,
                                                         two_label_run: Path) -> None:
    three, two = served_models
    assert three.labels == ["food", "music", "sports"] and two.labels == ["music", "sports"]
    alone = {"three": Classifier.load(three_label_run).predict_proba(TEXTS),
             "two": Classifier.load(two_label_run).predict_proba(TEXTS)}
    # Alternate between the adapters: a head or adapter left over from the previous call would show here.
    for served in (three, two, two, three, two):
        probs = served.backend.predict_proba(TEXTS)
        assert probs.shape == (len(TEXTS), len(served.labels))
        np.testing.assert_allclose(probs, alone[served.name], atol=1e-5)


def test_adapters_called_from_several_threads_at_once_stay_apart(served_models) -> None:
    expected = {m.name: m.backend.predict_proba(TEXTS) for m in served_models}
    wrong: list[str] = []

    def work(served) -> None:
        for _ in range(8):
            if not np.allclose(served.backend.predict_proba(TEXTS), expected[served.name], atol=1e-5):
                wrong.append(served.name)

    threads = [threading.Thread(target=work, args=(m,)) for m in served_models * 2]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so an unguarded adapter switch would be caught
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []


def test_a_run_that_trains_biases_gets_its_own_base(run_dir: Path, tiny_model: str, tmp_path: Path) -> None:
    texts, labels = make_texts(10, seed=4)
    biased = Classifier(model=tiny_model, bias="all", **TINY_TRAIN).fit(texts, labels).save(tmp_path / "biased")
    plain, own = load_runs([("plain", run_dir), ("biased", biased)])
    assert plain.backend.model.encoder is not own.backend.model.encoder
    np.testing.assert_allclose(own.backend.predict_proba(TEXTS), Classifier.load(biased).predict_proba(TEXTS), atol=1e-5)
    np.testing.assert_allclose(plain.backend.predict_proba(TEXTS), Classifier.load(run_dir).predict_proba(TEXTS),
                               atol=1e-5)


def test_any_model_name_works(three_label_run: Path, two_label_run: Path) -> None:
    served = load_runs([("intents.v1.2", three_label_run), ("ünï code/x", two_label_run)])
    assert [m.name for m in served] == ["intents.v1.2", "ünï code/x"]
    assert served[1].backend.predict_proba(["song"]).shape == (1, 2)


def test_same_name_twice_is_refused(run_dir: Path) -> None:
    with pytest.raises(RunDirError, match="given twice"):
        load_runs([("a", run_dir), ("a", run_dir)])


def test_not_a_run_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not a lorafit run directory"):
        load_runs([("x", tmp_path)])


def test_a_changed_base_is_refused(run_copy: Path) -> None:
    import json

    manifest = json.loads((run_copy / "lorafit.json").read_text())
    manifest["base_model"]["hash"] = "0" * 16
    (run_copy / "lorafit.json").write_text(json.dumps(manifest))
    with pytest.raises(RunDirError, match="weights hash"):
        load_runs([("x", run_copy)])


@pytest.mark.parametrize("spec, expected", [("runs/banking", ("banking", Path("runs/banking"))),
                                            ("intents=runs/banking", ("intents", Path("runs/banking"))),
                                            ("runs/a=b", ("a=b", Path("runs/a=b")))])
def test_parse_spec(spec: str, expected: tuple[str, Path]) -> None:
    assert parse_spec(spec) == expected


@pytest.fixture(scope="module")
def bf16_models(three_label_run: Path, two_label_run: Path):
    """The two runs served together at ``precision="bf16"``."""
    return load_runs([("three", three_label_run), ("two", two_label_run)], precision="bf16")


def test_bf16_serving_turns_the_shared_base_to_bf16_once_and_keeps_it_shared(bf16_models) -> None:
    three, two = bf16_models
    model_a, model_b = three.backend.model, two.backend.model
    assert model_a.shared is model_b.shared and model_a.runs_in == model_b.runs_in == "bf16"
    assert {p.dtype for p in model_a.encoder.parameters()} == {torch.bfloat16}  # base and both adapters
    assert model_a.head.weight.dtype == model_b.head.weight.dtype == torch.float32
    name, param = next(iter(model_a.encoder.named_parameters()))
    assert dict(model_b.encoder.named_parameters())[name].data_ptr() == param.data_ptr()
    assert three.backend._models._bf16 is None  # no per-model copy was made
    three.backend.predict_proba(TEXTS)
    assert three.backend._models._bf16 is None


def test_bf16_serving_answers_each_run_with_its_own_adapter_and_head(bf16_models, served_models) -> None:
    fp32 = {m.name: m.backend.predict_proba(TEXTS) for m in served_models}
    for served in (*bf16_models, *reversed(bf16_models)):
        probs = served.backend.predict_proba(TEXTS)
        assert probs.dtype.kind == "f" and probs.shape == fp32[served.name].shape
        np.testing.assert_allclose(probs, fp32[served.name], atol=3e-2)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    # the adapters differ, so a wrong switch on the bf16 base would move the probabilities by more than bf16 does
    three, two = bf16_models
    shared = three.backend.model.shared
    batch = three.backend.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with shared.lock, torch.no_grad():
        shared.activate(two.backend.model.adapter_name)  # three's head over two's adapter: the pitfall
        hidden = shared.peft_model(**batch).last_hidden_state
        wrong = three.backend.model.head(pool(hidden, batch["attention_mask"], "mean")).softmax(-1).numpy()
    right = three.backend.predict_proba(TEXTS)
    assert np.abs(wrong - right).max() > np.abs(right - fp32["three"]).max()


@pytest.mark.parametrize("precision, words", [("fp16", "fp16 needs a CUDA GPU"), ("int4", "must be one of")])
def test_a_precision_serving_cannot_use_is_refused_before_loading(three_label_run: Path, precision: str,
                                                                   words: str) -> None:
    from lorafit import ConfigError

    with pytest.raises(ConfigError, match=words):
        load_runs([("three", three_label_run)], precision=precision)
