"""Dropout with a cheap random mask on CPUs.

torch draws a CPU dropout mask one Mersenne-Twister number per element (``bernoulli_``): on a 2-core CPU
that was 29% of a BANKING77 training step, more than the LoRA blocks' matrix multiplications
(BENCHMARKS.md, "Fast dropout"). :class:`FastDropout` takes one 64-bit seed from torch's generator per
call (so ``torch.manual_seed`` and a checkpoint's saved RNG state still decide every mask) and expands it
with numpy's SFC64 into 16 random bits per element, four elements per generator step. The drop rate is
``p`` rounded to a multiple of 1/65536; kept values are scaled by ``1 / (1 - p)`` as in ``nn.Dropout``.
On other devices (CUDA's dropout is already fast) it is ``nn.functional.dropout``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A boolean mask of ``shape``: each element True with probability ``1 - p`` (to 1/65536)."""
    n = math.prod(shape)
    seed = int(torch.randint(0, 2**62, (1,)).item())
    bits = np.random.SFC64(seed).random_raw((n + 3) // 4).view(np.int16)[:n]
    threshold = min(round(p * 65536), 65535) - 32768  # int16 bits are uniform over [-32768, 32767]
    return torch.from_numpy(bits).view(shape) >= threshold


class FastDropout(nn.Module):
    """``nn.Dropout`` (same ``p``, same scaling, identity in eval mode) with :func:`keep_mask` on CPUs."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, True)
        # one float mask, scaled once: the product's backward reuses it (a boolean mask would be cast twice)
        return x * keep_mask(x.shape, self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every ``nn.Dropout`` with ``p > 0`` inside ``model`` (the encoder's and LoRA's) for a
    :class:`FastDropout` of the same ``p``; returns how many. Weights and saved state are untouched.

    Attention-probability dropout runs inside the attention kernel from the module's ``p`` and stays
    torch's own."""
    swaps = [(parent, name, child.p) for parent in model.modules() for name, child in parent.named_children()
             if type(child) is nn.Dropout and child.p > 0]
    for parent, name, p in swaps:
        fast = FastDropout(p)
        fast.train(parent.training)
        setattr(parent, name, fast)  # registers in _modules, also inside ModuleDict / Sequential
    return len(swaps)
