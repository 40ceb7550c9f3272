"""lorafit.batching: length-bucketed training batches, length-sorted inference batches, padding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lorafit.batching import PAD_MULTIPLE, bucketed_batches, collate, pad_multiple, padded_width, sorted_batches
from lorafit.data import Encoded


def _padding(lengths: np.ndarray, batches: list[np.ndarray]) -> int:
    """Pad tokens a batching wastes: each batch pads to its longest row."""
    return int(sum(lengths[b].max() * len(b) - lengths[b].sum() for b in batches))


@pytest.mark.parametrize("n,batch_size", [(1, 4), (7, 3), (100, 8), (1000, 16), (2000, 4)])
def test_bucketed_batches_cover_every_index_once(n: int, batch_size: int) -> None:
    lengths = np.random.default_rng(0).integers(3, 120, n)
    batches = bucketed_batches(lengths, batch_size, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(n))
    assert all(1 <= len(b) <= batch_size for b in batches)


def test_bucketing_off_gives_plain_shuffled_batches() -> None:
    lengths = np.random.default_rng(0).integers(3, 120, 100)
    batches = bucketed_batches(lengths, 16, np.random.default_rng(1), bucketing=False)
    order = np.random.default_rng(1).permutation(len(lengths))
    assert [b.tolist() for b in batches] == [order[i:i + 16].tolist() for i in range(0, 100, 16)]


def test_bucketed_batches_pad_far_less_than_random_batches() -> None:
    lengths = np.random.default_rng(0).integers(3, 120, 1600)
    bucketed = bucketed_batches(lengths, 16, np.random.default_rng(1))
    order = np.random.default_rng(1).permutation(len(lengths))
    random_batches = [order[i:i + 16] for i in range(0, len(order), 16)]
    assert _padding(lengths, bucketed) < 0.2 * _padding(lengths, random_batches)
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in bucketed])
    assert spread < 5  # length-homogeneous inside a batch


def test_bucketed_batches_are_seeded_and_shuffled_between_epochs() -> None:
    lengths = np.random.default_rng(0).integers(3, 60, 200)
    a = bucketed_batches(lengths, 8, np.random.default_rng(5))
    b = bucketed_batches(lengths, 8, np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    rng = np.random.default_rng(5)
    first, second = bucketed_batches(lengths, 8, rng), bucketed_batches(lengths, 8, rng)
    assert not all(np.array_equal(x, y) for x, y in zip(first, second))
    # Not simply sorted by length overall: the batch order is shuffled.
    maxima = [int(lengths[x].max()) for x in first]
    assert maxima != sorted(maxima)


@pytest.mark.parametrize("batch_size,max_tokens", [(64, 100), (8, 16384), (128, 50), (5, 1)])
def test_sorted_batches_cover_all_respect_max_tokens_and_sort(batch_size: int, max_tokens: int) -> None:
    lengths = np.random.default_rng(2).integers(1, 40, 300)
    batches = sorted_batches(lengths, batch_size, max_tokens=max_tokens)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(300))
    assert np.all(np.diff(lengths[flat]) >= 0)  # ascending length
    for b in batches:
        assert len(b) <= batch_size
        assert len(b) == 1 or lengths[b].max() * len(b) <= max_tokens


def test_sorted_batches_short_texts_go_in_full_batches() -> None:
    lengths = np.array([5] * 20 + [100] * 4)
    batches = sorted_batches(lengths, batch_size=10, max_tokens=200)
    assert [len(b) for b in batches] == [10, 10, 2, 2]


def test_sorted_batches_of_nothing() -> None:
    assert sorted_batches(np.zeros(0, dtype=np.int64), 8) == []


def test_collate_pads_and_masks() -> None:
    encoded = Encoded([[2, 10, 11, 3], [2, 12, 3], [2, 3]], [[0, 0, 0, 0], [0, 1, 1], [0, 1]])
    batch = collate(encoded, np.array([1, 0, 2]), pad_id=0)
    assert batch["input_ids"].dtype == torch.long
    pad = [0] * (PAD_MULTIPLE - 4)  # widths are rounded up to a multiple of PAD_MULTIPLE
    assert batch["input_ids"].tolist() == [[2, 12, 3, 0] + pad, [2, 10, 11, 3] + pad, [2, 3, 0, 0] + pad]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0] + pad, [1, 1, 1, 1] + pad, [1, 1, 0, 0] + pad]
    assert batch["token_type_ids"].tolist() == [[0, 1, 1, 0] + pad, [0, 0, 0, 0] + pad, [0, 1, 0, 0] + pad]


@pytest.mark.parametrize("longest", [1, 7, 8, 9, 127])
def test_padded_width_is_the_next_multiple(longest: int) -> None:
    width = padded_width(longest)
    assert width % PAD_MULTIPLE == 0 and longest <= width < longest + PAD_MULTIPLE


def test_collate_without_token_types_and_custom_pad() -> None:
    encoded = Encoded([[5, 6, 7], [5]])
    batch = collate(encoded, np.array([0, 1]), pad_id=99)
    assert set(batch) == {"input_ids", "attention_mask"}
    pad = [99] * (PAD_MULTIPLE - 3)
    assert batch["input_ids"].tolist() == [[5, 6, 7] + pad, [5, 99, 99] + pad]
    assert batch["attention_mask"].sum().item() == 4


def test_collate_pads_to_the_longest_row_only_with_multiple_one() -> None:
    encoded = Encoded([[5, 6, 7], [5]])
    batch = collate(encoded, np.array([0, 1]), pad_id=99, multiple=1)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 99, 99]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize("setting,precision,device,expected", [
    ("auto", "fp32", "cpu", 1),  # fp32 on a CPU: exact lengths, no padded work
    ("auto", "bf16", "cpu", PAD_MULTIPLE),  # oneDNN builds a bf16 kernel per shape
    ("auto", "fp16", "cuda", PAD_MULTIPLE),
    ("auto", "fp32", "cuda", PAD_MULTIPLE),
    (4, "fp32", "cpu", 4),  # an explicit setting wins
    (1, "bf16", "cpu", 1),
])
def test_pad_multiple_rounds_only_where_kernels_want_it(setting, precision: str, device: str, expected: int) -> None:
    assert pad_multiple(setting, precision, torch.device(device)) == expected
