"""lorafit.frozen: the frozen linear weights held in the autocast dtype during training steps only."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lorafit.frozen import FrozenCasts
from test_training import _trainer


def _blocks() -> list[nn.Module]:
    frozen, trained = nn.Linear(4, 3), nn.Linear(3, 2)
    frozen.requires_grad_(False)
    return [nn.Sequential(frozen, nn.LayerNorm(3), trained)]


def test_casts_hold_low_dtype_weights_inside_and_give_the_fp32_ones_back() -> None:
    blocks = _blocks()
    frozen, norm, trained = blocks[0]
    before = frozen.weight.data
    casts = FrozenCasts(blocks, "bf16")
    assert len(casts) == 2  # the frozen linear's weight and bias; not the layer norm, not the trained linear
    with casts.applied():
        assert frozen.weight.dtype == frozen.bias.dtype == torch.bfloat16
        assert torch.equal(frozen.weight.float(), before.bfloat16().float())
        assert norm.weight.dtype == trained.weight.dtype == torch.float32
    assert frozen.weight.data_ptr() == before.data_ptr() and frozen.bias.dtype == torch.float32


def test_casts_give_the_weights_back_when_the_step_fails() -> None:
    blocks = _blocks()
    casts = FrozenCasts(blocks, "bf16")
    with pytest.raises(RuntimeError), casts.applied():
        raise RuntimeError("step failed")
    assert blocks[0][0].weight.dtype == torch.float32


def test_nothing_is_cast_in_fp32_or_when_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(FrozenCasts(_blocks(), "fp32")) == 0
    monkeypatch.setenv("LORAFIT_FROZEN_CASTS", "0")
    assert len(FrozenCasts(_blocks(), "bf16")) == 0


def _bf16_fit(tiny_model: str, **settings: object) -> tuple[dict, list, object]:
    torch.manual_seed(0)  # the same LoRA and head initialisation in both runs
    trainer, data = _trainer(tiny_model, epochs=1, patience=0, precision="bf16", **settings)
    seen = []
    lora_layer = next(m for m in trainer.model.modules() if hasattr(m, "base_layer"))
    lora_layer.register_forward_pre_hook(lambda module, args: seen.append(module.base_layer.weight.dtype))
    result = trainer.fit(*data)
    state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    return state, seen, result


@pytest.mark.parametrize("cache_frozen", [True, False])
def test_bf16_training_with_cast_weights_trains_exactly_the_same_model(tiny_model: str, cache_frozen: bool,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Autocast made the same casts on every step: the trained weights are bit for bit the same."""
    cast_state, cast_seen, cast_result = _bf16_fit(tiny_model, cache_frozen=cache_frozen)
    monkeypatch.setenv("LORAFIT_FROZEN_CASTS", "0")
    plain_state, plain_seen, plain_result = _bf16_fit(tiny_model, cache_frozen=cache_frozen)
    assert torch.bfloat16 in cast_seen and torch.bfloat16 not in plain_seen  # the steps saw cast weights
    assert torch.float32 in cast_seen  # and evaluation the fp32 ones
    assert cast_state.keys() == plain_state.keys()
    assert all(torch.equal(cast_state[k], plain_state[k]) for k in cast_state)
    assert all(v.dtype != torch.bfloat16 for v in cast_state.values())  # what is kept and saved is fp32
    assert np.allclose([h["train_loss"] for h in cast_result.history if h["train_loss"] is not None],
                       [h["train_loss"] for h in plain_result.history if h["train_loss"] is not None], rtol=0, atol=0)

