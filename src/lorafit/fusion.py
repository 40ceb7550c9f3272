"""oneDNN-fused linear layers for bf16 inference on a CPU.

torch's eager ``nn.Linear`` on a CPU first copies the broadcast bias into the output and then multiplies
into it; BERT's feed-forward block then makes a second pass over its widest activation for GELU, and its
output blocks a third for the residual sum. oneDNN applies bias, GELU and the residual sum inside the
matmul ("post-ops"), through the ``mkldnn::_linear_pointwise`` operators torch ships for its own compiler
(inductor). :func:`fuse_linears` swaps them into an inference copy of a model, never the model being
trained: the operators have no backward. On BANKING77's test set the fused bf16 copy ran 1.20x the unfused
one at one thread and 1.07x at two (BENCHMARKS.md, "Fused bf16 prediction"). ``LORAFIT_FUSED_LINEARS=0``
turns it off.
"""
from __future__ import annotations

import functools
import os

import torch
from torch import nn

RESIDUAL_BLOCKS = frozenset(f"{family}{kind}" for family in ("Bert", "Roberta", "XLMRoberta", "Camembert", "Electra")
                            for kind in ("Output", "SelfOutput"))
"""transformers classes whose ``forward(hidden_states, input_tensor)`` is ``LayerNorm(dropout(dense(hidden_states))
+ input_tensor)`` (BERT's code, copied by these families): their sum is fused into the matmul."""


def enabled() -> bool:
    """Whether fusion is on (``LORAFIT_FUSED_LINEARS`` is not ``0``) and this torch has the operators."""
    return os.environ.get("LORAFIT_FUSED_LINEARS", "1") != "0" and _operators_work()


@functools.cache
def _operators_work() -> bool:
    """torch built with oneDNN, with the fused linear operators, and they run (checked once per process)."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    try:
        x, w = torch.ones(2, 4, dtype=torch.bfloat16), torch.ones(3, 4, dtype=torch.bfloat16)
        torch.ops.mkldnn._linear_pointwise(x, w, None, "gelu", [], "none")
        torch.ops.mkldnn._linear_pointwise.binary(x, torch.ones(2, 3, dtype=torch.bfloat16), w, None, "add")
        return True
    except (RuntimeError, NotImplementedError):
        return False


class FusedLinear(nn.Module):
    """``nn.Linear`` (the same weight and bias tensors) through oneDNN, with ``activation`` (``"none"`` or
    ``"gelu"``, the exact erf form) applied inside the matmul."""

    def __init__(self, linear: nn.Linear, activation: str = "none") -> None:
        super().__init__()
        self.weight, self.bias, self.activation = linear.weight, linear.bias, activation
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``activation(x @ W.T + b)``, or with ``residual``: ``x @ W.T + b + residual``."""
        flat = x.reshape(-1, self.in_features)
        if residual is not None:
            out = torch.ops.mkldnn._linear_pointwise.binary(flat, residual.reshape(-1, self.out_features), self.weight,
                                                           self.bias, "add")
        else:
            out = torch.ops.mkldnn._linear_pointwise(flat, self.weight, self.bias, self.activation, [],
                                                     "none" if self.activation == "gelu" else "")
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class FusedResidual(nn.Module):
    """One of :data:`RESIDUAL_BLOCKS` in eval mode: ``LayerNorm(dense(hidden_states) + input_tensor)`` with the
    sum inside the matmul (dropout is the identity in eval)."""

    def __init__(self, dense: FusedLinear, layer_norm: nn.Module) -> None:
        super().__init__()
        self.dense, self.LayerNorm = dense, layer_norm

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden_states, residual=input_tensor))


def _plain_linear(module: nn.Module) -> nn.Linear | None:
    """``module`` if it is an ``nn.Linear``; the base layer of a peft LoRA layer whose LoRA is merged into it
    (its forward then just calls the base layer); else None."""
    if type(module) is nn.Linear:
        return module
    base = getattr(module, "base_layer", None)
    if type(base) is nn.Linear and getattr(module, "merged", False):
        return base
    return None


def _exact_gelu(module: nn.Module | None) -> bool:
    """transformers' ``GELUActivation`` (erf form) or ``nn.GELU()``: what oneDNN's gelu post-op computes."""
    if isinstance(module, nn.GELU):
        return module.approximate == "none"
    return type(module).__name__ == "GELUActivation" and getattr(module, "act", None) is nn.functional.gelu


def fuse_linears(model: nn.Module, skip: str | None = None) -> int:
    """Swap ``model``'s linear layers (merged LoRA layers included) for :class:`FusedLinear`, in place, for
    inference only; the top-level child ``skip``, if named (the fp32 head), is left alone. A linear ``dense`` beside an
    exact-GELU ``intermediate_act_fn`` (BERT's feed-forward block) takes the GELU in; the residual blocks of
    :data:`RESIDUAL_BLOCKS` take their sum in. Returns the number of layers swapped (0 where it is off)."""
    if not enabled():
        return 0
    head = getattr(model, skip, None) if skip else None
    kept = {id(m) for m in head.modules()} if isinstance(head, nn.Module) else set()
    swapped = 0
    for parent in list(model.modules()):
        if id(parent) in kept or hasattr(parent, "base_layer"):
            continue  # the head, and inside a peft LoRA layer (a merged one is swapped whole from its parent)
        for name, child in list(parent.named_children()):
            linear = _plain_linear(child)
            if linear is None or id(child) in kept or linear.weight.device.type != "cpu":
                continue
            if name == "dense" and _exact_gelu(getattr(parent, "intermediate_act_fn", None)):
                setattr(parent, name, FusedLinear(linear, "gelu"))
                parent.intermediate_act_fn = nn.Identity()
            else:
                setattr(parent, name, FusedLinear(linear))
            swapped += 1
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ in RESIDUAL_BLOCKS and isinstance(getattr(child, "dense", None), FusedLinear):
                setattr(parent, name, FusedResidual(child.dense, child.LayerNorm))
    return swapped
