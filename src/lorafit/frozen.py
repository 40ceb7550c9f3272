"""Frozen linear weights kept in the autocast dtype for the training steps.

Under bf16 (or fp16) autocast every ``F.linear`` casts its fp32 weight and bias to the low dtype. torch caches
that cast only for leaf tensors that require a gradient, so the frozen base weights of the trained blocks are
cast again on every step: on BANKING77 at batch 16 (one LoRA block over five cached ones), about 1.8 M weights,
a tenth of the step's memory copies in a profile. :class:`FrozenCasts` makes each of those casts once and swaps the low-dtype
tensors in for the steps only (``with casts.applied():``), so evaluation, checkpoints and saving still see the
fp32 weights. The step computes exactly what it computed before: autocast would have made the same casts.
``LORAFIT_FROZEN_CASTS=0`` turns it off.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

from lorafit.inference import DTYPES


class FrozenCasts:
    """Low-dtype copies of the frozen weights and biases of the ``nn.Linear`` layers in ``blocks`` (peft's base
    layers included), for ``precision`` ``bf16`` or ``fp16``; nothing for ``fp32`` or when turned off."""

    def __init__(self, blocks: list[nn.Module], precision: str) -> None:
        self.pairs: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []
        if precision not in ("bf16", "fp16") or os.environ.get("LORAFIT_FROZEN_CASTS", "1") == "0":
            return
        for block in blocks:
            for module in block.modules():
                if type(module) is not nn.Linear:
                    continue
                for param in (module.weight, module.bias):
                    if param is not None and not param.requires_grad and param.dtype == torch.float32:
                        self.pairs.append((param, param.data, param.data.to(DTYPES[precision])))

    def __len__(self) -> int:
        return len(self.pairs)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The low-dtype tensors in the parameters while inside, the fp32 ones again on the way out."""
        for param, _, low in self.pairs:
            param.data = low
        try:
            yield
        finally:
            for param, full, _ in self.pairs:
                param.data = full
