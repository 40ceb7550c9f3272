"""Caching frozen bottom blocks: with LoRA only in the top layers, training on cached hidden states must
give the model that token-level inference (predict, evaluate, plain peft) sees."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY_TRAIN
from helpers import LABELS, make_texts
from lorafit import Classifier
from lorafit.batching import collate
from lorafit.config import LoraSettings
from lorafit.data import tokenize
from lorafit.models import build_classifier, load_encoder, pool

from lorafit import cache


def test_split_layer(tiny_model: str) -> None:
    encoder, _ = load_encoder(tiny_model)
    assert cache.split_layer(encoder, [1]) == 1
    assert cache.split_layer(encoder, [0, 1]) == 0
    assert cache.split_layer(encoder, None) == 0
    assert cache.split_layer(torch.nn.Linear(2, 2), [1]) == 0  # no known block list: no caching


def test_cached_forward_equals_token_forward(tiny_model: str) -> None:
    encoder, tokenizer = load_encoder(tiny_model)
    model = build_classifier(encoder, LABELS, "mean", LoraSettings(layers_to_transform=[1]), tiny_model)
    assert model.split == 1
    torch.manual_seed(3)
    with torch.no_grad():  # make LoRA and the head non-trivial
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    texts, _ = make_texts(4, seed=2)
    encoded = tokenize(tokenizer, texts, 64)
    cached, features = cache.build_cache(model.encoder, encoded, 1, tokenizer.pad_token_id, 5, "fp32",
                                         torch.device("cpu"))
    assert features is None
    model.eval()
    index = np.array([3, 0, 7, 11, 1])
    with torch.no_grad():
        from_cache = model(**cached.batch(index, torch.float32))
        from_tokens = model(**collate(encoded, index, tokenizer.pad_token_id))
    torch.testing.assert_close(from_cache, from_tokens, atol=1e-5, rtol=0)


@pytest.mark.parametrize("multiple", [1, 8])
def test_cache_batches_pad_to_the_multiple_asked(tiny_model: str, multiple: int) -> None:
    encoder, tokenizer = load_encoder(tiny_model)
    model = build_classifier(encoder, LABELS, "mean", LoraSettings(layers_to_transform=[1]), tiny_model)
    encoded = tokenize(tokenizer, make_texts(4, seed=2)[0], 64)
    cached, _ = cache.build_cache(model.encoder, encoded, 1, tokenizer.pad_token_id, 5, "fp32", torch.device("cpu"),
                                  multiple=multiple)
    index = np.array([3, 0, 7])
    width = cached.batch(index, torch.float32)["inputs_embeds"].shape[1]
    longest = int(encoded.lengths[index].max())
    assert width == (longest if multiple == 1 else -(-longest // 8) * 8)


def test_padding_multiple_does_not_change_predictions(trained) -> None:
    """Padding is masked: exact lengths (fp32 on a CPU) and multiples of 8 give the same probabilities."""
    from dataclasses import replace

    texts = make_texts(3, seed=5)[0]
    setting = trained.train_config
    try:
        trained.train_config = replace(setting, pad_to_multiple_of=1)
        exact = trained.predict_proba(texts)
        trained.train_config = replace(setting, pad_to_multiple_of=8)
        rounded = trained.predict_proba(texts)
    finally:
        trained.train_config = setting
    np.testing.assert_allclose(exact, rounded, atol=1e-6)


@pytest.mark.parametrize("layers", [None, [1]], ids=["uncached", "cached"])
def test_recorded_validation_metric_is_reproduced_after_training(tiny_model: str, synthetic,
                                                                 layers: list[int] | None) -> None:
    """The best checkpoint's recorded validation scores equal evaluate() on the same data afterwards."""
    val_texts, val_labels = make_texts(8, seed=21)
    clf = Classifier(model=tiny_model, layers_to_transform=layers, **{**TINY_TRAIN, "epochs": 2})
    clf.fit(*synthetic, validation=(val_texts, val_labels))
    assert clf.metrics_.get("cached_layers", 1 if layers else 0) == (1 if layers else 0)
    report = clf.evaluate(val_texts, val_labels)
    assert clf.metrics_["validation"]["accuracy"] == pytest.approx(report["accuracy"])
    assert clf.metrics_["validation"]["macro_f1"] == pytest.approx(report["macro_f1"])


def test_cached_training_trains_the_top_layers_only(tiny_model: str, synthetic) -> None:
    clf = Classifier(model=tiny_model, layers_to_transform=[1], **{**TINY_TRAIN, "epochs": 1, "probe_init": False})
    clf.fit(*synthetic)
    lora_b = {n: p for n, p in clf.model.named_parameters() if "lora_B" in n}
    assert lora_b and all(".layer.1." in n for n in lora_b)
    assert all(p.abs().sum() > 0 for p in lora_b.values())


def test_cache_off_trains_the_same_model(tiny_model: str, synthetic) -> None:
    """The cache is a speed lever only: with it off, the frozen blocks run at every step (in eval mode, as
    the cache pass runs them) and training ends at the same weights."""
    texts, labels = synthetic
    settings = {**TINY_TRAIN, "epochs": 1, "probe_init": True, "layers_to_transform": [1],
                "validation_fraction": 0}
    cached = Classifier(model=tiny_model, **settings).fit(texts, labels)
    uncached = Classifier(model=tiny_model, cache_frozen=False, **settings).fit(texts, labels)
    assert cached.metrics_["cached_layers"] == 1 and uncached.metrics_["cached_layers"] == 0
    assert cached.metrics_["strategy"].startswith("LoRA on encoder block 1; block 0 frozen, computed once and cached")
    assert "block 0 frozen, recomputed at every step" in uncached.metrics_["strategy"]
    np.testing.assert_allclose(cached.predict_proba(texts), uncached.predict_proba(texts), atol=1e-5)


def test_frozen_prefix_stays_in_eval_mode_while_training(tiny_model: str) -> None:
    encoder, _ = load_encoder(tiny_model)
    model = build_classifier(encoder, LABELS, "mean", LoraSettings(layers_to_transform=[1]), tiny_model)
    model.train()
    blocks = model.encoder.encoder.layer
    assert not model.encoder.embeddings.training and not blocks[0].training and blocks[1].training
    model.eval()
    assert not blocks[1].training


def test_every_trainable_parameter_trains_with_caching(tiny_model: str, synthetic) -> None:
    """bias='all' makes every bias trainable, the bottom blocks' included: caching them would freeze them."""
    encoder, _ = load_encoder(tiny_model)
    before = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    clf = Classifier(model=tiny_model, layers_to_transform=[1], bias="all",
                     **{**TINY_TRAIN, "epochs": 1, "probe_init": False})
    clf.fit(*synthetic)
    frozen_but_trainable = [n for n, p in clf.model.named_parameters()
                            if p.requires_grad and ".layer.0." in n and "bias" in n
                            and torch.equal(p.detach().cpu(), before[n.split("base_model.model.", 1)[-1]])]
    assert not frozen_but_trainable, frozen_but_trainable[:3]


def _base_embeddings(tiny_model: str, batch: dict) -> np.ndarray:
    """The plain base model's mean-pooled output for ``batch`` (no peft, no LoRA)."""
    from transformers import AutoModel

    base = AutoModel.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        return pool(base(**batch).last_hidden_state, batch["attention_mask"], "mean").numpy()


def _texts_batch(tokenizer, seed: int) -> tuple:
    """Four made-up texts tokenised (``Encoded``) and collated into one padded batch of all of them."""
    encoded = tokenize(tokenizer, make_texts(4, seed=seed)[0], 64)
    return encoded, collate(encoded, np.arange(len(encoded)), tokenizer.pad_token_id)


def _eval_logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """The model's logits for ``batch`` in eval mode, without gradients."""
    model.eval()
    with torch.no_grad():
        return model(**batch)


def _perturb_lora_b(model: torch.nn.Module, seed: int = 4) -> None:
    """Give every LoRA B matrix seeded random values, so that the adapter branches change the output."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.5)


def test_cache_pass_yields_the_base_embeddings_for_the_probe(tiny_model: str) -> None:
    """With LoRA still the identity, the one cache pass also gives the base model's pooled embeddings."""
    encoder, tokenizer = load_encoder(tiny_model)
    model = build_classifier(encoder, LABELS, "mean", LoraSettings(layers_to_transform=[1]), tiny_model)
    encoded, batch = _texts_batch(tokenizer, seed=5)
    _, features = cache.build_cache(model.encoder, encoded, 1, tokenizer.pad_token_id, 4, "fp32",
                                    torch.device("cpu"), pooling="mean")
    np.testing.assert_allclose(features, _base_embeddings(tiny_model, batch), atol=1e-5)


def test_cache_pass_runs_the_base_model_and_leaves_lora_as_it_was(tiny_model: str) -> None:
    """The pass switches the adapter branches off (faster; the cache and the probe want the base model's
    output) and back on: trained LoRA weights, their requires_grad flags and the model's output are unchanged."""
    encoder, tokenizer = load_encoder(tiny_model)
    model = build_classifier(encoder, LABELS, "mean", LoraSettings(layers_to_transform=[0, 1]), tiny_model)
    _perturb_lora_b(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    encoded, batch = _texts_batch(tokenizer, seed=6)
    before = _eval_logits(model, batch)
    cached, features = cache.build_cache(model.encoder, encoded, 1, tokenizer.pad_token_id, 4, "fp32",
                                         torch.device("cpu"), pooling="mean")
    expected = _base_embeddings(tiny_model, batch)
    after = _eval_logits(model, batch)
    np.testing.assert_allclose(features, expected, atol=1e-5)
    assert not np.allclose(features, pool(model.encoder(**batch).last_hidden_state, batch["attention_mask"],
                                          "mean").detach().numpy(), atol=1e-3)  # LoRA does change the output
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


def test_bottom_only_pass_caches_what_the_full_pass_caches(tiny_model: str) -> None:
    """Without features to pool, only the blocks below ``split`` run; the cached states are the same."""
    encoder, tokenizer = load_encoder(tiny_model)
    model = build_classifier(encoder, LABELS, "mean", LoraSettings(layers_to_transform=[1]), tiny_model)
    texts, _ = make_texts(4, seed=7)
    encoded = tokenize(tokenizer, texts, 64)
    bottom, _ = cache.build_cache(model.encoder, encoded, 1, tokenizer.pad_token_id, 4, "fp32", torch.device("cpu"))
    full, _ = cache.build_cache(model.encoder, encoded, 1, tokenizer.pad_token_id, 4, "fp32", torch.device("cpu"),
                                pooling="mean")
    assert len(cache.bottom_model(model.encoder, 1).encoder.layer) == 1 and len(model.encoder.encoder.layer) == 2
    torch.testing.assert_close(bottom.states, full.states, atol=0, rtol=0)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_uncached_probe_pass_runs_the_base_model_too(tiny_model: str, precision: str, monkeypatch) -> None:
    """With LoRA on every block nothing is cached, and the probe's embeddings come from a pass of their own:
    it too runs the base model (adapter branches off; in bf16 a bf16 copy of it, LoRA layers dropped) and
    leaves the model as it was, LoRA switched on."""
    from peft.tuners.lora import LoraLayer

    from lorafit.config import TrainConfig
    from lorafit.training import Trainer

    copies, make_copy = [], cache.bf16_copy

    def recorded(model, **options):
        copies.append(make_copy(model, **options))
        return copies[-1]

    monkeypatch.setattr(cache, "bf16_copy", recorded)

    encoder, tokenizer = load_encoder(tiny_model)
    model = build_classifier(encoder, LABELS, "mean", LoraSettings(layers_to_transform="all"), tiny_model)
    assert model.split == 0
    _perturb_lora_b(model)  # so that the adapter branches would show
    encoded, batch = _texts_batch(tokenizer, seed=7)
    before = _eval_logits(model, batch)
    trainer = Trainer(model, TrainConfig(model=tiny_model, precision=precision), tokenizer.pad_token_id)
    _, _, features = trainer.prepare(encoded, None, features_needed=True)
    expected = _base_embeddings(tiny_model, batch)
    after = _eval_logits(model.cpu(), batch)  # the Trainer moved it to the GPU where there is one
    np.testing.assert_allclose(features, expected, atol=1e-5 if precision == "fp32" else 0.02)
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    assert len(copies) == (precision == "bf16")
    for lowered in copies:
        assert not any(isinstance(m, LoraLayer) for m in lowered.modules())
        assert {p.dtype for p in lowered.encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_bf16_cache_pass_runs_a_bf16_copy_of_the_base_model(tiny_model: str, monkeypatch) -> None:
    """In bf16 the pass runs a copy of the base model with bf16 weights (LoRA layers dropped, as the adapters
    are off in the pass) instead of autocast: the cache and the probe's embeddings agree with autocast's to
    within bf16's rounding, and the model itself is left as it was (fp32, LoRA on).
    ``LORAFIT_CACHE_BF16_COPY=0`` runs the autocast pass."""
    from peft.tuners.lora import LoraLayer

    encoder, tokenizer = load_encoder(tiny_model)
    model = build_classifier(encoder, LABELS, "mean", LoraSettings(layers_to_transform=[1]), tiny_model)
    _perturb_lora_b(model)  # the copy must not run them
    encoded, batch = _texts_batch(tokenizer, seed=8)
    before = _eval_logits(model, batch)
    copies, make_copy = [], cache.bf16_copy

    def recorded(runner, **options):
        copies.append(make_copy(runner, **options))
        return copies[-1]

    def build() -> tuple[cache.PrefixCache, np.ndarray]:
        return cache.build_cache(model.encoder, encoded, 1, tokenizer.pad_token_id, 4, "bf16", torch.device("cpu"),
                                 pooling="mean")

    monkeypatch.setattr(cache, "bf16_copy", recorded)
    monkeypatch.setenv("LORAFIT_CACHE_BF16_COPY", "0")
    autocast_cache, autocast_features = build()
    assert not copies
    monkeypatch.delenv("LORAFIT_CACHE_BF16_COPY")
    copy_cache, copy_features = build()
    assert len(copies) == 1
    assert not any(isinstance(m, LoraLayer) for m in copies[0].modules())
    assert {p.dtype for p in copies[0].parameters()} == {torch.bfloat16}
    assert copy_cache.states.dtype == autocast_cache.states.dtype == torch.bfloat16
    torch.testing.assert_close(copy_cache.states.float(), autocast_cache.states.float(), atol=0.05, rtol=0.02)
    assert float(np.min(np.sum(copy_features * autocast_features, axis=1))) > 0.999  # unit vectors: cosines
    np.testing.assert_allclose(copy_features, _base_embeddings(tiny_model, batch), atol=0.02)
    torch.testing.assert_close(_eval_logits(model, batch), before, atol=0, rtol=0)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert any(isinstance(m, LoraLayer) for m in model.encoder.modules())
