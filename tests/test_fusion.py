"""oneDNN-fused linear layers for bf16 CPU inference: the same numbers as the layers they replace."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lorafit.fusion import FusedLinear, FusedResidual, enabled, fuse_linears

pytestmark = pytest.mark.skipif(not enabled(), reason="this torch has no oneDNN fused linear operators")


@pytest.fixture
def tiny_bert(tiny_model_dir) -> nn.Module:
    from transformers import AutoModel

    return AutoModel.from_pretrained(tiny_model_dir).eval()


def test_fused_linear_computes_the_linear_layer_and_its_gelu_and_residual_sum() -> None:
    torch.manual_seed(0)
    linear, x, residual = nn.Linear(16, 24), torch.randn(3, 5, 16), torch.randn(3, 5, 24)
    with torch.inference_mode():
        torch.testing.assert_close(FusedLinear(linear)(x), linear(x))
        torch.testing.assert_close(FusedLinear(linear, "gelu")(x), nn.functional.gelu(linear(x)))
        torch.testing.assert_close(FusedLinear(linear)(x, residual=residual), linear(x) + residual)
        bf16 = copy.deepcopy(linear).bfloat16()
        torch.testing.assert_close(FusedLinear(bf16, "gelu")(x.bfloat16()).float(),
                                   nn.functional.gelu(linear(x)), atol=0.05, rtol=0.05)
    assert FusedLinear(linear).weight is linear.weight  # the same tensors, no copy


def test_a_fused_bf16_encoder_gives_the_unfused_encoders_outputs(tiny_bert: nn.Module) -> None:
    ids = torch.randint(5, 100, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.inference_mode():
        fp32 = tiny_bert(input_ids=ids, attention_mask=mask).last_hidden_state
        lowered = copy.deepcopy(tiny_bert).bfloat16()
        plain = lowered(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        assert fuse_linears(lowered, skip="pooler") == 2 * 6  # two blocks of six linear layers; the pooler kept
        fused = lowered(input_ids=ids, attention_mask=mask).last_hidden_state.float()
    assert type(lowered.pooler.dense) is nn.Linear
    assert sum(isinstance(m, FusedResidual) for m in lowered.modules()) == 2 * 2
    assert all(type(m.intermediate.intermediate_act_fn) is nn.Identity for m in lowered.encoder.layer)
    torch.testing.assert_close(fused, plain, atol=0.1, rtol=0.05)  # fused GELU: one bf16 rounding fewer
    assert (fused - fp32).abs().mean() <= 1.5 * (plain - fp32).abs().mean()


def test_only_exact_gelu_is_fused_and_unmerged_lora_layers_are_left_alone(tiny_bert: nn.Module) -> None:
    from peft import LoraConfig, get_peft_model

    for layer in tiny_bert.encoder.layer:
        layer.intermediate.intermediate_act_fn = nn.GELU(approximate="tanh")  # oneDNN's gelu post-op is erf
    peft_model = get_peft_model(tiny_bert, LoraConfig(r=2, target_modules=["query", "value"]))
    fuse_linears(peft_model, skip="none")
    layer = peft_model.base_model.model.encoder.layer[0]
    assert isinstance(layer.intermediate.dense, FusedLinear) and layer.intermediate.dense.activation == "none"
    assert isinstance(layer.intermediate.intermediate_act_fn, nn.GELU)
    assert hasattr(layer.attention.self.query, "lora_A")  # unmerged: its LoRA branch still has to run
    assert isinstance(layer.attention.self.key, FusedLinear)
    peft_model.merge_adapter()
    fuse_linears(peft_model, skip="none")
    assert isinstance(layer.attention.self.query, FusedLinear)  # merged: its base layer is the whole layer


def test_lorafit_fused_linears_0_turns_it_off(tiny_bert: nn.Module, monkeypatch) -> None:
    monkeypatch.setenv("LORAFIT_FUSED_LINEARS", "0")
    assert not enabled() and fuse_linears(tiny_bert, skip="pooler") == 0
    assert not any(isinstance(m, FusedLinear) for m in tiny_bert.modules())


@pytest.mark.parametrize("family", ["roberta", "electra", "distilbert", "deberta-v2", "mpnet"])
def test_other_encoder_families_fuse_and_keep_their_outputs(family: str) -> None:
    """Families with BERT's blocks take every fusion; the others (other layer names, other output blocks) keep
    their own code there and get fused linear layers only, with the same outputs either way."""
    from transformers import AutoConfig, AutoModel

    sizes = {"distilbert": dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64)}.get(
        family, dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
    torch.manual_seed(0)
    model = AutoModel.from_config(AutoConfig.for_model(family, vocab_size=120, **sizes)).eval().bfloat16()
    ids = torch.randint(5, 100, (3, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.inference_mode():
        plain = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        assert fuse_linears(model, skip="pooler") >= 2 * 6
        fused = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
    residuals = sum(isinstance(m, FusedResidual) for m in model.modules())
    assert residuals == (2 * 2 if family in ("roberta", "electra") else 0)
    torch.testing.assert_close(fused, plain, atol=0.05, rtol=0.05)
