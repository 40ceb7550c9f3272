"""Caching what is frozen: when LoRA sits only in the top encoder layers, the layers below never
change, so their output is computed once per text and every epoch runs only the top layers.

Works for encoders that keep their blocks in ``encoder.layer`` (BERT, RoBERTa, XLM-R, ELECTRA, ...)
or ``transformer.layer`` (DistilBERT) and accept ``inputs_embeds``; other models train uncached.
"""
from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from lorafit.batching import PAD_MULTIPLE, collate, padded_width, sorted_batches
from lorafit.data import Encoded
from lorafit.inference import DTYPES, autocast, bf16_copy
from lorafit.memory import release_free_memory


def block_list(model: nn.Module) -> tuple[nn.Module, str] | None:
    """``(parent, attribute)`` of the model's list of transformer blocks, or None when unknown."""
    for parent_name in ("encoder", "transformer"):
        parent = getattr(model, parent_name, None)
        if isinstance(getattr(parent, "layer", None), nn.ModuleList):
            return parent, "layer"
    return None


def split_layer(model: nn.Module, layers_to_transform: list[int] | None) -> int:
    """How many bottom blocks are frozen and cacheable (0: nothing to cache, or an unsupported model)."""
    if not layers_to_transform or block_list(model) is None or not hasattr(model, "embeddings"):
        return 0
    return min(layers_to_transform)


class _PassThrough(nn.Module):
    """Stands in for the embeddings: the cached hidden states come in as ``inputs_embeds``."""

    def forward(self, input_ids=None, inputs_embeds=None, **_: object) -> torch.Tensor:
        return inputs_embeds


def _with_blocks(model: nn.Module, blocks: slice) -> nn.Module:
    """A shallow copy of ``model`` whose block list holds only ``blocks`` (the same block objects)."""
    parent, attr = block_list(model)
    view = copy.copy(model)
    view._modules = dict(model._modules)
    new_parent = copy.copy(parent)
    new_parent._modules = dict(parent._modules)
    new_parent._modules[attr] = nn.ModuleList(list(getattr(parent, attr))[blocks])
    for name, module in model._modules.items():
        if module is parent:
            view._modules[name] = new_parent
    return view


def top_model(model: nn.Module, split: int) -> nn.Module:
    """A view of ``model`` that starts at block ``split``: same block objects (and LoRA), no embeddings."""
    view = _with_blocks(model, slice(split, None))
    view._modules["embeddings"] = _PassThrough()
    if "pooler" in view._modules:
        view._modules["pooler"] = None
    return view


def bottom_model(model: nn.Module, split: int) -> nn.Module:
    """A view of ``model`` with only its bottom ``split`` blocks: enough for the hidden states entering
    block ``split``."""
    return _with_blocks(model, slice(None, split))


@contextlib.contextmanager
def adapters_off(model: nn.Module) -> Iterator[None]:
    """Run ``model`` as its base model: peft's LoRA layers skip their adapter branch (their weights and
    ``requires_grad`` flags are left as they were). The cache pass needs the base model's output only, and
    the adapter branch of every LoRA layer (two small matmuls, dropout, scaling, an add) made it 1.13x slower
    (``bench/cache_pass.py``)."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and not m.disable_adapters]
    flags = {p: p.requires_grad for m in layers for p in m.parameters()}
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)
        for p, flag in flags.items():
            p.requires_grad_(flag)


def base_layers_only(model: nn.Module) -> None:
    """Replace every peft LoRA layer of ``model`` by its base layer, in place: the model
    :func:`adapters_off` runs, with nothing of peft left (for a copy that is then lowered to bf16)."""
    from peft.tuners.lora import LoraLayer

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                setattr(parent, name, child.get_base_layer())


def base_pass(model: nn.Module, precision: str) -> tuple[nn.Module, str]:
    """``(module, autocast precision)`` for a pass that needs ``model``'s base model only (LoRA's branches
    off): in bf16 a copy of it with bf16 weights and no LoRA layers, run without autocast
    (:func:`lorafit.inference.bf16_copy`); else ``model`` itself at ``precision``, or under bf16 autocast
    when ``LORAFIT_CACHE_BF16_COPY=0``. Run it inside :func:`adapters_off` ``(model)``."""
    if precision == "bf16" and os.environ.get("LORAFIT_CACHE_BF16_COPY", "1") != "0":
        return bf16_copy(model, prepare=base_layers_only), "fp32"  # bf16 weights: no autocast
    return model, precision


class PrefixCache:
    """The hidden states entering block ``split`` for every text, stored flat (tokens x hidden)."""

    def __init__(self, states: torch.Tensor, offsets: np.ndarray, lengths: np.ndarray, multiple: int) -> None:
        self.states, self.offsets, self.lengths, self.multiple = states, offsets, lengths, multiple

    def batch(self, index: np.ndarray, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """``inputs_embeds`` and ``attention_mask`` for rows ``index``, padded to a multiple of ``multiple``."""
        rows = [self.states[self.offsets[i]:self.offsets[i] + self.lengths[i]] for i in index]
        longest = max(len(r) for r in rows)
        embeds = nn.functional.pad(nn.utils.rnn.pad_sequence(rows, batch_first=True),
                                   (0, 0, 0, padded_width(longest, self.multiple) - longest)).to(dtype)
        mask = torch.zeros(embeds.shape[:2], dtype=torch.long)
        for j, i in enumerate(index):
            mask[j, :self.lengths[i]] = 1
        return {"inputs_embeds": embeds, "attention_mask": mask}


@torch.inference_mode()
def build_cache(model: nn.Module, encoded: Encoded, split: int, pad_id: int, batch_size: int,
                precision: str, device: torch.device, pooling: str | None = None,
                multiple: int = PAD_MULTIPLE
                ) -> tuple[PrefixCache, np.ndarray | None]:
    """Run the base encoder once over every text and keep the hidden states entering block ``split``.

    With ``pooling``, the same pass also returns the base model's pooled final embeddings (what the probe
    head is fitted on); without it only the bottom ``split`` blocks run. The pass, and the cache's batches
    later, pad to a multiple of ``multiple`` tokens (:func:`lorafit.batching.pad_multiple`).

    In bf16 the pass runs a copy of the base model with bf16 weights (and, on a CPU, oneDNN-fused linear
    layers: :func:`lorafit.inference.bf16_copy`), as bf16 prediction does, instead of autocast, which casts
    every fp32 weight on each call and runs the layer norms in fp32: 10.3-10.6 s against 16.5-17.5 s in a batch-16
    fit of BANKING77 (BENCHMARKS.md, "The cache pass through a bf16 copy"). ``LORAFIT_CACHE_BF16_COPY=0`` turns
    it off.
    """
    from lorafit.models import pool

    was_training = model.training
    model.eval()
    runner, run_precision = base_pass(model if pooling else bottom_model(model, split), precision)
    dtype = DTYPES[precision]
    offsets = np.concatenate([[0], np.cumsum(encoded.lengths)[:-1]]).astype(np.int64)
    states = torch.empty((int(encoded.lengths.sum()), model.config.hidden_size), dtype=dtype)
    features = np.zeros((len(encoded), model.config.hidden_size), dtype=np.float32) if pooling else None
    try:
        with adapters_off(model):
            for index in sorted_batches(encoded.lengths, batch_size):
                batch = {k: v.to(device) for k, v in collate(encoded, index, pad_id, multiple).items()}
                with autocast(run_precision, device):
                    out = runner(**batch, output_hidden_states=True)
                hidden = out.hidden_states[split].to(dtype).cpu()
                for j, i in enumerate(index):
                    states[offsets[i]:offsets[i] + encoded.lengths[i]] = hidden[j, :encoded.lengths[i]]
                if features is not None:
                    features[index] = pool(out.last_hidden_state, batch["attention_mask"], pooling).cpu().numpy()
                del out
    finally:
        model.train(was_training)
        release_free_memory()
    return PrefixCache(states, offsets, encoded.lengths, multiple), features
