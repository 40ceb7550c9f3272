"""FastDropout: nn.Dropout's distribution and scaling, masks decided by torch's seed, swapped in by training."""
from __future__ import annotations

import torch
from torch import nn

from lorafit import Classifier
from lorafit.dropout import FastDropout, keep_mask, use_fast_dropout


def test_keep_mask_drops_at_rate_p():
    torch.manual_seed(0)
    for p in (0.1, 0.5, 0.9):
        mask = keep_mask(torch.Size((200, 500)), p)
        assert mask.dtype == torch.bool and mask.shape == (200, 500)
        assert abs((~mask).float().mean().item() - p) < 0.005  # 100,000 draws: sd of the rate 0.0016 at most


def test_keep_mask_bits_are_not_shared_between_elements():
    """Neighbouring elements (which share a 64-bit generator step) are independent."""
    torch.manual_seed(1)
    mask = keep_mask(torch.Size((400_000,)), 0.5).view(-1, 4).float()
    both = (mask[:, 0] * mask[:, 1]).mean().item()
    assert abs(both - 0.25) < 0.005


def test_masks_follow_torch_seed():
    torch.manual_seed(3)
    a, b = keep_mask(torch.Size((64, 64)), 0.1), keep_mask(torch.Size((64, 64)), 0.1)
    torch.manual_seed(3)
    assert torch.equal(a, keep_mask(torch.Size((64, 64)), 0.1))
    assert not torch.equal(a, b)


def test_fast_dropout_scales_like_nn_dropout_and_is_identity_in_eval():
    torch.manual_seed(0)
    drop, x = FastDropout(0.25), torch.ones(100, 100, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))
    y.sum().backward()  # the gradient flows through the kept elements only, scaled the same
    assert torch.equal(x.grad != 0, kept) and torch.allclose(x.grad[kept], torch.full_like(y[kept], 1 / 0.75))
    drop.eval()
    assert drop(x) is x
    assert FastDropout(0.0).train()(x) is x


def test_use_fast_dropout_swaps_every_dropout_with_its_p():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2), nn.ModuleDict({"a": nn.Dropout(0.3), "b": nn.Dropout(0.0)}))
    assert use_fast_dropout(model) == 2
    assert isinstance(model[1], FastDropout) and model[1].p == 0.2
    assert isinstance(model[2]["a"], FastDropout) and model[2]["a"].p == 0.3
    assert type(model[2]["b"]) is nn.Dropout  # p = 0 does nothing either way


def test_training_uses_fast_dropout_unless_turned_off(tiny_model, synthetic):
    texts, labels = synthetic
    fast = Classifier(model=tiny_model, epochs=1, min_steps=0, validation_fraction=0).fit(texts, labels)
    assert any(isinstance(m, FastDropout) for m in fast.model.modules())
    assert not any(type(m) is nn.Dropout and m.p > 0 for m in fast.model.modules())
    plain = Classifier(model=tiny_model, epochs=1, min_steps=0, validation_fraction=0,
                       fast_dropout=False).fit(texts, labels)
    assert not any(isinstance(m, FastDropout) for m in plain.model.modules())
    assert any(type(m) is nn.Dropout and m.p > 0 for m in plain.model.modules())
