"""lorafit.flops: the FLOP counting rule and the matmul peak measurement."""
from __future__ import annotations

import numpy as np
import torch

from lorafit.flops import block_shape, forward_flops, matmul_peak_gflops


def test_forward_flops_counts_projections_and_attention() -> None:
    hidden, ffn = 8, 32
    per_token = 2 * (4 * hidden * hidden + 2 * hidden * ffn)
    flops = forward_flops(np.array([1, 3]), hidden, ffn, blocks=2)
    assert flops.shape == (2,)
    assert flops[0] == 2 * (per_token + 4 * hidden * 1)
    assert flops[1] == 2 * (3 * per_token + 4 * hidden * 9)
    assert forward_flops(np.array([5]), hidden, ffn, blocks=0)[0] == 0


def test_block_shape_reads_bert_and_distilbert_configs() -> None:
    from transformers import BertConfig, DistilBertConfig

    assert block_shape(BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2)) == (32, 64, 2)
    assert block_shape(DistilBertConfig(dim=48, hidden_dim=96, n_layers=3, n_heads=2)) == (48, 96, 3)


def test_matmul_peak_is_a_positive_rate() -> None:
    rate = matmul_peak_gflops("fp32", torch.device("cpu"), size=128, seconds=0.05)
    assert 0.01 < rate < 1e5
