"""lorafit.models: model resolution, the LoRA classifier's invariants, pooling and the weights hash."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import LABELS
from lorafit.config import LoraSettings
from lorafit.data import tokenize
from lorafit.batching import collate
from lorafit.errors import ConfigError, ModelError
from lorafit.models import (build_classifier, count_parameters, default_target_modules, load_encoder, pool,
                            resolve_model, weights_hash)


@pytest.fixture
def encoder_and_tokenizer(tiny_model: str):
    return load_encoder(tiny_model)


@pytest.fixture
def built(encoder_and_tokenizer, tiny_model: str):
    encoder, tokenizer = encoder_and_tokenizer
    model = build_classifier(encoder, LABELS, "mean", LoraSettings(layers_to_transform="all"), tiny_model)
    return model, tokenizer


def _batch(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    import numpy as np

    encoded = tokenize(tokenizer, texts, 32)
    return collate(encoded, np.arange(len(texts)), tokenizer.pad_token_id)


TEXTS = ["pizza and bread today", "the singer played a song on the piano", "goal", "we saw the team score a goal"]


# --------------------------------------------------------------------------------------- resolution
def test_resolve_minilm_alias_is_an_existing_model_dir() -> None:
    where = Path(resolve_model("minilm"))
    assert where.is_dir() and (where / "config.json").is_file()
    assert resolve_model("MiniLM") == str(where)
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == str(where)


def test_resolve_local_dir(tiny_model_dir: Path) -> None:
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir.resolve())


def test_resolve_hub_id_is_passed_through() -> None:
    assert resolve_model("some-org/some-model") == "some-org/some-model"


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/model", "~/no-such-model-dir", "no/such/model"])
def test_missing_path_like_model_is_a_model_error(name: str) -> None:
    with pytest.raises(ModelError, match="not found"):
        resolve_model(name)


def test_dir_without_config_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="config.json"):
        resolve_model(str(tmp_path))


def test_hub_id_offline_is_a_model_error() -> None:
    with pytest.raises(ModelError) as info:
        load_encoder("nonexistent-org/nonexistent-model-xyz")
    message = str(info.value)
    assert "nonexistent-org/nonexistent-model-xyz" in message
    assert "HF_HUB_OFFLINE" in message and "minilm" in message


def test_load_encoder_gives_a_fast_tokenizer(encoder_and_tokenizer) -> None:
    encoder, tokenizer = encoder_and_tokenizer
    assert tokenizer.is_fast
    assert encoder.config.hidden_size == 32
    assert next(encoder.parameters()).dtype == torch.float32


# ------------------------------------------------------------------------------------- LoRA invariants
def test_default_target_modules_of_bert(encoder_and_tokenizer) -> None:
    encoder, _ = encoder_and_tokenizer
    targets, exclude = default_target_modules(encoder)
    assert targets == ["dense", "key", "query", "value"]
    assert exclude == ["pooler.dense"]


def test_lora_wraps_every_block_linear_but_not_the_pooler(built) -> None:
    model, _ = built
    names = [n for n, _ in model.peft_model.named_parameters()]
    lora_a = {n.split(".lora_A")[0] for n in names if ".lora_A." in n}
    assert not any("pooler" in n for n in lora_a)
    for layer in (0, 1):
        for part in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense", "intermediate.dense", "output.dense"):
            assert any(n.endswith(f"layer.{layer}.{part}") for n in lora_a), (layer, part)
    assert len(lora_a) == 12


def test_only_lora_and_head_parameters_train(built) -> None:
    model, _ = built
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    assert all("lora_" in n or "classifier" in n for n in trainable), trainable
    assert any("classifier" in n for n in trainable) and any("lora_B" in n for n in trainable)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any("word_embeddings" in n for n in frozen) and any("pooler" in n for n in frozen)
    n_trainable, n_total = count_parameters(model)
    assert n_trainable == sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    assert 0 < n_trainable < n_total


def test_lora_encoder_equals_base_encoder_before_training(built, tiny_model_dir: Path) -> None:
    from transformers import AutoModel

    model, tokenizer = built
    base = AutoModel.from_pretrained(tiny_model_dir).eval()
    model.eval()
    batch = _batch(tokenizer, TEXTS)
    with torch.no_grad():
        lora_hidden = model.peft_model(**batch).last_hidden_state
        base_hidden = base(**batch).last_hidden_state
        lora_logits = model(**batch)
        base_logits = model.head(pool(base_hidden, batch["attention_mask"], "mean"))
    torch.testing.assert_close(lora_hidden, base_hidden, atol=1e-6, rtol=0)
    torch.testing.assert_close(lora_logits, base_logits, atol=1e-6, rtol=0)
    assert lora_logits.shape == (len(TEXTS), len(LABELS))


def test_head_is_saved_with_the_adapter(built) -> None:
    model, _ = built
    config = model.peft_model.peft_config["default"]
    assert "classifier" in config.modules_to_save
    assert str(config.task_type).endswith("FEATURE_EXTRACTION")
    assert model.peft_model.base_model.model.config.id2label == dict(enumerate(LABELS))


def test_unknown_target_module_is_a_config_error(encoder_and_tokenizer, tiny_model: str) -> None:
    encoder, _ = encoder_and_tokenizer
    with pytest.raises(ConfigError) as info:
        build_classifier(encoder, LABELS, "mean", LoraSettings(target_modules=["q_proj", "value"]), tiny_model)
    assert "q_proj" in str(info.value) and "query" in str(info.value)


def test_explicit_target_modules(encoder_and_tokenizer, tiny_model: str) -> None:
    encoder, _ = encoder_and_tokenizer
    model = build_classifier(encoder, LABELS, "mean", LoraSettings(target_modules=["query", "value"]), tiny_model)
    wrapped = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A." in n}
    assert wrapped == {"query", "value"}


def test_layers_to_transform(encoder_and_tokenizer, tiny_model: str) -> None:
    encoder, _ = encoder_and_tokenizer
    model = build_classifier(encoder, LABELS, "mean", LoraSettings(layers_to_transform=[1]), tiny_model)
    lora = [n for n, _ in model.named_parameters() if ".lora_A." in n]
    assert lora and all(".layer.1." in n for n in lora)


def test_auto_layers_put_lora_on_the_top_third_and_cache_below(encoder_and_tokenizer, tiny_model: str) -> None:
    encoder, _ = encoder_and_tokenizer
    model = build_classifier(encoder, LABELS, "mean", LoraSettings(), tiny_model)  # default: "auto"
    assert model.lora_settings.layers_to_transform == [1]  # 2 blocks: the top one
    assert model.split == 1
    assert all(".layer.1." in n for n, _ in model.named_parameters() if ".lora_A." in n)


@pytest.mark.parametrize("count, rows, expected", [(6, 0, [4, 5]), (12, 0, [8, 9, 10, 11]), (2, 0, [1]), (1, 0, [0]),
                                                 (6, 9_003, [5]), (12, 9_003, [10, 11])])
def test_auto_layers_scale_with_depth(count: int, rows: int, expected: list[int]) -> None:
    from transformers import BertConfig, BertModel

    from lorafit.models import resolve_layers

    config = BertConfig(hidden_size=8, num_hidden_layers=count, num_attention_heads=2, intermediate_size=8,
                        vocab_size=20)
    assert resolve_layers(BertModel(config), "auto", rows) == expected


def test_auto_layers_put_lora_on_every_block_on_large_data(encoder_and_tokenizer, tiny_model: str) -> None:
    from lorafit.strategy import LARGE_DATA_ROWS

    encoder, _ = encoder_and_tokenizer
    model = build_classifier(encoder, LABELS, "mean", LoraSettings(), tiny_model, rows=LARGE_DATA_ROWS)
    assert model.lora_settings.layers_to_transform == [0, 1]
    assert model.split == 0 and model.frozen_blocks == 0  # nothing frozen below, so nothing cached
    assert {n.split(".layer.")[1].split(".")[0] for n, _ in model.named_parameters() if ".lora_A." in n} == {"0", "1"}


def test_layers_out_of_range_are_refused(encoder_and_tokenizer, tiny_model: str) -> None:
    encoder, _ = encoder_and_tokenizer
    with pytest.raises(ConfigError, match="2 blocks"):
        build_classifier(encoder, LABELS, "mean", LoraSettings(layers_to_transform=[5]), tiny_model)


# ------------------------------------------------------------------------------------------ pooling
def test_mean_pooling_ignores_padding_and_is_unit_length() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]], [[0.0, 2.0], [0.0, 2.0], [0.0, 2.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    pooled = pool(hidden, mask, "mean")
    torch.testing.assert_close(pooled, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_cls_pooling_takes_the_first_state() -> None:
    hidden = torch.tensor([[[3.0, 4.0], [9.0, 9.0]]])
    pooled = pool(hidden, torch.ones(1, 2, dtype=torch.long), "cls")
    torch.testing.assert_close(pooled, torch.tensor([[0.6, 0.8]]))


def test_embed_gives_unit_vectors(built) -> None:
    model, tokenizer = built
    with torch.no_grad():
        vectors = model.eval().embed(**_batch(tokenizer, TEXTS))
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(len(TEXTS)))


# ------------------------------------------------------------------------------------------- hashing
def test_weights_hash_is_stable_and_sensitive(tiny_model_dir: Path) -> None:
    from transformers import AutoModel

    a = AutoModel.from_pretrained(tiny_model_dir)
    b = AutoModel.from_pretrained(tiny_model_dir)
    assert weights_hash(a) == weights_hash(b)
    with torch.no_grad():
        b.embeddings.word_embeddings.weight[5, 0] += 1e-3
    assert weights_hash(a) != weights_hash(b)


def test_weights_hash_of_scalar_buffers() -> None:
    module = torch.nn.Module()
    module.register_buffer("scale", torch.tensor(2.0))
    other = torch.nn.Module()
    other.register_buffer("scale", torch.tensor(3.0))
    assert weights_hash(module) != weights_hash(other)


def test_weights_hash_of_empty_tensors() -> None:
    module = torch.nn.Module()
    module.register_buffer("scale", torch.tensor(2.0))
    plain = weights_hash(module)
    module.register_buffer("nothing", torch.zeros(0, 4))
    assert weights_hash(module) != plain
