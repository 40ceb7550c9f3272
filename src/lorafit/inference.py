"""Batched forward passes: precision choice, autocast, length-sorted batches in input order."""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable

import numpy as np
import torch

from lorafit.batching import collate, sorted_batches
from lorafit.data import Encoded
from lorafit.fusion import fuse_linears
from lorafit.memory import release_free_memory

INFERENCE_PRECISION = "fp32"
"""Evaluation and prediction run in fp32 by default, so lorafit's probabilities equal plain transformers +
peft's; ``bf16`` (or ``auto``) is an opt-in for speed (see :func:`check_inference_precision`)."""


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""The torch dtype of each resolved precision."""


def check_inference_precision(precision: str) -> str:
    """``fp32``, ``bf16``, ``fp16`` (CUDA only) or ``auto`` (the fastest native one), else a ConfigError."""
    from lorafit.config import PRECISIONS
    from lorafit.errors import ConfigError

    if precision not in PRECISIONS:
        raise ConfigError(f"prediction precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def set_inference_precision(predictor: object, precision: str) -> None:
    """Make ``predictor`` (a :class:`lorafit.Classifier`, a merged export's predictor) predict at ``precision``.
    An ONNX export's precision was fixed when it was exported: ``auto`` leaves it so, and anything but ``fp32`` is
    a ConfigError there."""
    from lorafit.errors import ConfigError

    check_inference_precision(precision)
    if hasattr(predictor, "inference_precision"):
        predictor.inference_precision = precision
    elif precision not in ("fp32", "auto"):
        raise ConfigError(f"--precision {precision} applies to run directories and merged exports; an ONNX "
                          "export's precision is fixed when it is exported (--quantize int8)")


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively: AVX-512 BF16 / AMX on CPU, bf16-capable CUDA GPUs."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                    or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` becomes ``bf16`` where the hardware runs it natively, else ``fp16`` on a CUDA GPU (training
    scales its loss) and ``fp32`` on a CPU. ``fp16`` off CUDA is a ConfigError: CPUs run it emulated, slower
    than fp32 and without the loss scaling that keeps small gradients from vanishing."""
    from lorafit.errors import ConfigError

    if precision == "auto":
        if bf16_supported(device):
            return "bf16"
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision fp16 needs a CUDA GPU, and this runs on the {device.type}; use bf16 (where "
                          "the CPU has AVX-512 BF16 or AMX), fp32, or auto")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 or fp16 autocast for ``bf16`` / ``fp16``, a no-op for ``fp32``."""
    if precision in ("bf16", "fp16"):
        return torch.autocast(device_type=device.type, dtype=DTYPES[precision])
    return contextlib.nullcontext()


class InferenceModels:
    """The module a predictor runs at each precision, and the autocast it runs under.

    fp32 (and fp16, under autocast) run the model itself, as does bf16 for a model whose ``runs_in`` attribute says
    it is bf16 already (a served adapter on a shared bf16 base, :mod:`lorafit.registry`). Otherwise bf16 runs a
    copy whose weights are bf16, made on first use (and again when the predictor's model is replaced), without
    autocast: autocast would cast every fp32 weight again on each call and run the layer norms in fp32 between bf16
    matmuls. On the Intel CPU (AMX) the copy ran BANKING77's test set 1.35-1.38x faster than bf16 autocast over the
    fp32 weights (BENCHMARKS.md, "Prediction throughput, tenth session"). The head (the attribute ``head``) keeps
    fp32 weights: it sees the fp32 pooled vector. ``prepare`` readies the copy first (merging LoRA into the base
    weights, so the copy runs one matmul per layer); a module-level function, so that a predictor holding this
    stays picklable. On a CPU the copy's linear layers then run through oneDNN with bias, GELU and residual sums
    fused into the matmuls (:func:`lorafit.fusion.fuse_linears`). The fp32 model is left as it was.
    """

    def __init__(self, head: str, prepare: Callable[[torch.nn.Module], None] | None = None) -> None:
        self.head, self.prepare = head, prepare
        self._source: torch.nn.Module | None = None
        self._bf16: torch.nn.Module | None = None

    def clear(self) -> None:
        """Drop the copy and the model it was made from (both are freed once nothing else holds them)."""
        self._source = self._bf16 = None

    def get(self, model: torch.nn.Module, precision: str) -> tuple[torch.nn.Module, str]:
        """``(module, autocast precision)`` for ``model`` at the resolved ``precision``."""
        if precision != "bf16":
            return model, precision
        if getattr(model, "runs_in", None) == "bf16":
            return model, "fp32"  # bf16 already (a served adapter on a shared bf16 base): it runs as it is
        if self._source is not model:
            self._source, self._bf16 = model, bf16_copy(model, self.prepare, head=self.head)
        return self._bf16, "fp32"  # bf16 weights already: no autocast


def bf16_copy(model: torch.nn.Module, prepare: Callable[[torch.nn.Module], None] | None = None,
              head: str | None = None) -> torch.nn.Module:
    """An eval-mode copy of ``model`` for inference: ``prepare`` applied to it first, then bf16 weights (the
    top-level child ``head``, if named, stays fp32) and, on a CPU, oneDNN-fused linear layers
    (:func:`lorafit.fusion.fuse_linears`). ``model`` is left as it was."""
    lowered = copy.deepcopy(model).eval()
    if prepare is not None:
        prepare(lowered)
    lowered.to(torch.bfloat16)
    if head is not None:
        getattr(lowered, head).float()
    fuse_linears(lowered, skip=head)
    return lowered


def token_batches(encoded: Encoded, pad_id: int, multiple: int) -> Callable[[np.ndarray], dict[str, torch.Tensor]]:
    """A batch maker over tokenised texts (for :func:`forward_all` and training), each batch padded to a
    multiple of ``multiple`` tokens (:func:`lorafit.batching.pad_multiple`)."""
    return lambda index: collate(encoded, index, pad_id, multiple)


def map_sorted(lengths: np.ndarray, make_batch: Callable[[np.ndarray], dict], batch_size: int,
               run: Callable[[dict], np.ndarray]) -> np.ndarray:
    """``run`` over length-sorted batches of the rows; its float32 rows come back in input order."""
    out: np.ndarray | None = None
    for index in sorted_batches(lengths, batch_size):
        values = run(make_batch(index))
        if out is None:
            out = np.zeros((len(lengths), values.shape[1]), dtype=np.float32)
        out[index] = values
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


@torch.inference_mode()
def forward_all(model: torch.nn.Module, lengths: np.ndarray, make_batch: Callable[[np.ndarray], dict],
                batch_size: int, precision: str, device: torch.device, method: str = "forward",
                **options: object) -> np.ndarray:
    """Run ``model.<method>(**batch, **options)`` over every row in length-sorted batches, input order kept."""
    def run(batch: dict) -> np.ndarray:
        with autocast(precision, device):
            return getattr(model, method)(**{k: v.to(device) for k, v in batch.items()}, **options).float().cpu().numpy()

    was_training = model.training
    model.eval()
    try:
        return map_sorted(lengths, make_batch, batch_size, run)
    finally:
        release_free_memory()
        model.train(was_training)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (float64, stable)."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function of ``logits`` (float64, stable): multi-label probabilities."""
    return 0.5 * (1.0 + np.tanh(0.5 * logits.astype(np.float64)))
