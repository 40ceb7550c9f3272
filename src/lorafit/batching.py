"""Batches that waste little padding: length-bucketed for training, length-sorted for inference."""
from __future__ import annotations

import itertools

import numpy as np
import torch

from lorafit.data import Encoded

BUCKET_BATCHES = 50
"""Training batches are formed inside windows of this many batches, sorted by length."""

PAD_MULTIPLE = 8
"""bf16/fp16 batches (and GPU batches) are padded to a multiple of this many tokens. Every distinct input shape
makes oneDNN build (and keep) a new bf16 kernel and its buffers: with free lengths a BANKING77 run meets
dozens of shapes and resident memory grows by hundreds of MiB; multiples of 8 leave about ten. fp32 on a
CPU has no such cache, and there the rounding only adds work (see :func:`pad_multiple`)."""


def padded_width(longest: int, multiple: int = PAD_MULTIPLE) -> int:
    """``longest`` rounded up to a multiple of ``multiple``."""
    return -(-longest // multiple) * multiple


def pad_multiple(setting: int | str, precision: str, device: torch.device) -> int:
    """The padding multiple for ``setting`` (``TrainConfig.pad_to_multiple_of``): ``"auto"`` is
    :data:`PAD_MULTIPLE` for bf16/fp16 and on GPUs, 1 (exact lengths) for fp32 on a CPU."""
    if setting != "auto":
        return int(setting)
    return PAD_MULTIPLE if precision in ("bf16", "fp16") or device.type != "cpu" else 1


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                     bucketing: bool = True) -> list[np.ndarray]:
    """Shuffle, then sort by length inside windows of ``BUCKET_BATCHES`` batches, then shuffle the batches.

    Each example appears exactly once per epoch; batches hold texts of similar length, so padding
    (wasted compute) is small while the order stays random from epoch to epoch. Without
    ``bucketing``: consecutive slices of the shuffled order.
    """
    order = rng.permutation(len(lengths))
    if not bucketing:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * BUCKET_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def sorted_batches(lengths: np.ndarray, batch_size: int, max_tokens: int = 4096) -> list[np.ndarray]:
    """Inference batches sorted by length; short texts go in bigger batches (bounded by ``max_tokens``)."""
    order = np.argsort(lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        end = min(start + batch_size, len(order))
        longest = int(lengths[order[end - 1]])
        if longest * (end - start) > max_tokens and end - start > 1:
            end = start + max(1, max_tokens // max(longest, 1))
        batches.append(order[start:end])
        start = end
    return batches


def collate(encoded: Encoded, index: np.ndarray, pad_id: int, multiple: int = PAD_MULTIPLE) -> dict[str, torch.Tensor]:
    """Pad the rows ``index`` of ``encoded`` to their longest, rounded up to a multiple of ``multiple``.

    The rows are laid out in one numpy pass (a per-row tensor copy cost a tenth of a bf16 prediction pass)."""
    lengths = encoded.lengths[index]
    width = padded_width(int(lengths.max()), multiple)
    real = np.arange(width) < lengths[:, None]  # row-major, so the flat ids below fill each row in order
    batch = {"input_ids": _padded([encoded.input_ids[i] for i in index], real, lengths, pad_id),
             "attention_mask": torch.from_numpy(real.astype(np.int64))}
    if encoded.token_type_ids is not None:
        batch["token_type_ids"] = _padded([encoded.token_type_ids[i] for i in index], real, lengths, 0)
    return batch


def _padded(rows: list[list[int]], real: np.ndarray, lengths: np.ndarray, pad: int) -> torch.Tensor:
    """``rows`` in a ``real.shape`` int64 tensor, ``pad`` after each row's end."""
    out = np.full(real.shape, pad, dtype=np.int64)
    out[real] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    return torch.from_numpy(out)
