"""Model FLOPs utilisation: the FLOPs a training run needs (from its real token counts) over the
matmul peak of this machine, measured in the same run.

Counting rule: a transformer block's forward pass over a text of ``L`` real tokens costs
``L * 2 * (4 h^2 + 2 h f)`` for its projections (hidden size ``h``, feed-forward size ``f``) plus
``4 L^2 h`` for attention scores and mixing. Padding is not counted: it is waste, not work. A LoRA
training step runs the forward pass from the lowest LoRA block up and a backward pass that costs
about the same again: the frozen weights need gradients for their inputs, not for themselves (the
LoRA matrices' own gradients are under 1% and left out). So those blocks count 2 x forward; frozen
blocks below them that are recomputed at every step (cache off) count forward only.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from lorafit.inference import DTYPES

BACKWARD_FACTOR = 2.0
"""Forward + backward of a LoRA step with frozen base weights, in units of one forward pass."""


def forward_flops(lengths: np.ndarray, hidden: int, intermediate: int, blocks: int) -> np.ndarray:
    """Forward FLOPs of ``blocks`` transformer blocks for each text of ``lengths`` real tokens."""
    lengths = np.asarray(lengths, dtype=np.float64)
    projections = 2.0 * (4 * hidden * hidden + 2 * hidden * intermediate) * lengths
    attention = 4.0 * hidden * lengths ** 2
    return blocks * (projections + attention)


def block_shape(config) -> tuple[int, int, int]:
    """(hidden size, feed-forward size, number of blocks) of a transformers encoder config."""
    hidden = int(getattr(config, "hidden_size", getattr(config, "dim", 0)))
    intermediate = int(getattr(config, "intermediate_size", getattr(config, "hidden_dim", 4 * hidden)))
    blocks = int(getattr(config, "num_hidden_layers", getattr(config, "n_layers", 0)))
    return hidden, intermediate, blocks


def matmul_peak_gflops(precision: str, device: torch.device, size: int = 1024, seconds: float = 0.3) -> float:
    """The best rate of square matmuls in the training precision, in GFLOP/s (about 0.3 s of work).

    The operands are made in the training dtype once (what a model's bf16 matmuls see under autocast
    is kernel time, not the casting), and timed in groups of four calls; the best group counts.
    """
    dtype = DTYPES[precision]
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    flops = 4 * 2.0 * size ** 3
    best = 0.0
    with torch.no_grad():
        torch.matmul(a, b)  # warm-up: kernel selection, caches
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            for _ in range(4):
                torch.matmul(a, b)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = max(best, flops / (time.perf_counter() - start))
    return best / 1e9
