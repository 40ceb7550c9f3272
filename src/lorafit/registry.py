"""Several run directories in one process, sharing one copy of each base encoder's weights.

Each run directory is a LoRA adapter plus a linear head on a base encoder. Runs trained on the same
base (same weights hash) are loaded onto ONE encoder: the first through ``PeftModel.from_pretrained``,
the others with ``load_adapter`` under their own adapter names. The heads are NOT attached as peft's
``modules_to_save`` copies here: runs may have different label sets (heads of different shapes), and
a ``modules_to_save`` wrapper answers with whichever copy is active, the wrong-head pitfall of
mixed-adapter serving (peft#1960). Each run gets its own ``nn.Linear`` head, read from its
``adapter_model.safetensors``, and every forward pass activates its adapter and runs under the base's
lock, so two adapters never interleave on the shared encoder.

Runs whose adapter trains biases (``bias`` other than ``none``) carry base-layer biases in their
adapter file, which would overwrite the shared ones: each such run gets its own copy of the base.

At ``precision="bf16"`` each shared base, its adapters included, is turned to bf16 in place once every run is
attached, so the runs still share one copy (now half the size); the heads stay fp32 and see fp32 pooled vectors.
Unlike a single run's bf16 prediction (a merged, fused copy per model), the adapters stay unmerged: one base
serves them all.

Example:
    >>> models = load_runs([("intents", Path("runs/banking")), ("tone", Path("runs/sst2"))])  # doctest: +SKIP
    >>> models[0].backend.predict_proba(["I lost my card"]).shape                              # doctest: +SKIP
    (1, 77)
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from lorafit.config import REGRESSION, LoraSettings
from lorafit.errors import RunDirError
from lorafit.models import _quiet_peft, pool

logger = logging.getLogger(__name__)

HEAD_PREFIX = "base_model.model.classifier."
"""Where peft saves the ``modules_to_save`` head inside ``adapter_model.safetensors``."""


class Backend(Protocol):
    """What the service needs of a model: its labels and probabilities for a list of texts (or of
    ``(text, text_pair)`` pairs where ``pairs_`` is true).

    :class:`lorafit.Classifier` is one; an ONNX export directory can be another.
    """

    classes_: list[str]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Probabilities, shape ``(len(texts), len(classes_))``, columns in ``classes_`` order."""
        ...


@dataclass
class ServedModel:
    """A named model as the service lists it."""

    name: str
    """The name requests use (``"model": name``)."""
    backend: Backend
    """Answers ``predict_proba``; must be safe to call from one worker thread at a time."""
    base_model: str
    """The base encoder it was trained on (alias, hub id or directory, as at training time)."""
    task: str
    """``single_label_classification``, ``multi_label_classification`` or ``regression``."""
    precision: str = "fp32"
    """What it predicts in: ``fp32``, ``bf16`` (as :func:`load_runs` resolved it), or for an ONNX export ``onnx``."""

    @property
    def pairs(self) -> bool:
        """Whether the model takes ``(text, text_pair)`` pairs (it was trained on pairs)."""
        return bool(getattr(self.backend, "pairs_", False))

    @property
    def labels(self) -> list[str]:
        """The model's labels in probability-column order."""
        return list(self.backend.classes_)

    def outputs(self, texts: list[str]) -> np.ndarray:
        """What the service answers from, one row per text: probabilities (sigmoid scores for multi-label),
        or for regression the predicted value in a column of its own."""
        if self.task == REGRESSION:
            return np.asarray(self.backend.predict(texts), dtype=np.float64).reshape(-1, 1)
        return self.backend.predict_proba(texts)

    def decide(self, probs: np.ndarray, threshold: float | None = None) -> list:
        """Labels for rows of probabilities: the backend's own rule (abstaining below its threshold, or
        ``threshold`` when given) where it has one, else the most probable label."""
        decide = getattr(self.backend, "decide", None)
        if decide is not None:
            return decide(probs, threshold)
        return [self.labels[i] for i in probs.argmax(1)]


class SharedBase:
    """One base encoder in memory, with LoRA adapters attached to it by name."""

    def __init__(self, encoder: nn.Module, weights_hash: str) -> None:
        self.encoder = encoder
        """The base ``AutoModel`` (LoRA layers are injected into it in place)."""
        self.weights_hash = weights_hash
        """The base weights' hash, checked against each run's record."""
        self.peft_model: nn.Module | None = None
        self.lock = threading.RLock()
        """Held for every forward pass: the active adapter is state of the shared encoder."""
        self.runs_in = "fp32"
        """The precision of the encoder's weights (``bf16`` after :meth:`lower`)."""

    def lower(self, precision: str) -> None:
        """Turn the encoder and every attached adapter to ``precision`` (``bf16``) in place, for inference."""
        from lorafit.inference import DTYPES

        with self.lock:
            self.encoder.to(DTYPES[precision])
            self.runs_in = precision

    def attach(self, run_dir: Path, labels: list[str], pooling: str, settings: LoraSettings) -> "AdapterClassifier":
        """Load ``run_dir``'s LoRA weights as a new adapter and its head as a separate linear layer.

        Adapters are named ``adapter_0``, ``adapter_1``, ... (peft keeps them in module dictionaries, whose
        keys cannot hold every model name, e.g. one with a dot).
        """
        from peft import LoraConfig, PeftModel

        config = LoraConfig.from_pretrained(str(run_dir))
        config.modules_to_save = None  # the head is kept per adapter, outside peft (see the module docstring)
        config.inference_mode = True
        with self.lock, _quiet_peft():
            name = f"adapter_{len(self.peft_model.peft_config) if self.peft_model is not None else 0}"
            if self.peft_model is None:
                self.peft_model = PeftModel.from_pretrained(self.encoder, str(run_dir), adapter_name=name,
                                                            config=config).eval()
            else:
                self.peft_model.add_adapter(name, config)
                self.peft_model.load_adapter(str(run_dir), adapter_name=name)
        return AdapterClassifier(self, name, load_head(run_dir, labels, self.encoder.config.hidden_size),
                                 pooling, settings)

    def activate(self, name: str) -> None:
        """Make ``name`` the adapter the encoder runs (call with :attr:`lock` held)."""
        if self.peft_model.active_adapter != name:
            self.peft_model.set_adapter(name)


def load_head(run_dir: Path, labels: list[str], hidden_size: int) -> nn.Linear:
    """The run's classification head, read from its adapter file (clear error when it is absent)."""
    from safetensors.torch import load_file

    weights = load_file(str(run_dir / "adapter_model.safetensors"))
    weight, bias = weights.get(HEAD_PREFIX + "weight"), weights.get(HEAD_PREFIX + "bias")
    if weight is None or bias is None or tuple(weight.shape) != (len(labels), hidden_size):
        found = None if weight is None else tuple(weight.shape)
        raise RunDirError(f"{run_dir}/adapter_model.safetensors has no head for {len(labels)} labels "
                          f"(expected {HEAD_PREFIX}weight of shape {(len(labels), hidden_size)}, found {found}); "
                          "the run directory is damaged")
    head = nn.Linear(hidden_size, len(labels))
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return head.eval().requires_grad_(False)


class AdapterClassifier(nn.Module):
    """One adapter of a :class:`SharedBase` with its own head; the same ``forward``/``embed`` as
    :class:`lorafit.models.LoraClassifier`, so :class:`lorafit.Classifier` runs it unchanged."""

    def __init__(self, shared: SharedBase, adapter_name: str, head: nn.Linear, pooling: str,
                 lora_settings: LoraSettings) -> None:
        super().__init__()
        self.shared = shared
        self.adapter_name = adapter_name
        self.head = head
        self.pooling = pooling
        self.lora_settings = lora_settings

    @property
    def encoder(self) -> nn.Module:
        """The shared base encoder (LoRA layers of every attached adapter injected)."""
        return self.shared.encoder

    @property
    def runs_in(self) -> str:
        """The shared base's precision: a bf16 base runs as it is (:class:`lorafit.inference.InferenceModels`)."""
        return self.shared.runs_in

    def embed(self, attention_mask: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        with self.shared.lock:
            self.shared.activate(self.adapter_name)
            hidden = self.shared.peft_model(attention_mask=attention_mask, **inputs).last_hidden_state
        return pool(hidden, attention_mask, self.pooling)

    def forward(self, attention_mask: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(attention_mask, **inputs))


def parse_spec(spec: str) -> tuple[str, Path]:
    """``"name=path"`` or ``"path"`` (named after the directory) -> ``(name, path)``."""
    name, sep, rest = spec.partition("=")
    if sep and name and not Path(spec).exists() and "/" not in name:
        return name, Path(rest)
    path = Path(spec)
    return path.resolve().name, path


def load_runs(specs: list[tuple[str, Path]], precision: str = "fp32") -> list[ServedModel]:
    """Load every ``(name, run_dir)``; runs on the same base share one encoder in memory. An export directory
    (``lorafit export``, merged or ONNX) is served as it is.

    ``precision``: ``fp32`` (plain transformers' numbers), ``bf16`` (shared bases turned to bf16, see the module
    docstring; merged exports predict through their bf16 copy) or ``auto`` (bf16 where the CPU runs it
    natively; an ONNX export keeps its own). ``fp16`` (CUDA only) and ``bf16`` with an ONNX export are
    ConfigErrors."""
    from lorafit.classifier import Classifier
    from lorafit.exported import is_export, load_predictor
    from lorafit.inference import check_inference_precision, resolve_precision, set_inference_precision
    from lorafit.rundir import read_manifest

    resolved = resolve_precision(check_inference_precision(precision), torch.device("cpu"))  # served on the CPU

    names = [name for name, _ in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RunDirError(f"model name(s) {', '.join(repeated)} given twice; name them apart with NAME=RUN_DIR")
    bases: dict[str, SharedBase] = {}
    used: set[SharedBase] = set()  # the bases attached runs share (own copies included), by identity
    served = []
    for name, path in specs:
        if is_export(path):  # a merged or ONNX export: its own weights, nothing to share
            predictor = load_predictor(path)
            set_inference_precision(predictor, precision)  # auto leaves an ONNX export as it was exported
            served.append(ServedModel(name, predictor, str(predictor.manifest.get("base_model", {}).get("name", "")),
                                      predictor.manifest.get("task", ""),
                                      resolved if hasattr(predictor, "inference_precision") else "onnx"))
            continue
        manifest = read_manifest(path)
        clf = Classifier.from_manifest(path, manifest)
        shared = _base_for(bases, Path(path), clf.base, own=clf.lora.bias != "none")
        clf.model = shared.attach(Path(path), clf.classes_, manifest["pooling"], clf.lora)
        clf.inference_precision = resolved
        used.add(shared)
        served.append(ServedModel(name, clf, str(clf.base.get("name", "")), manifest.get("task", ""), resolved))
    if resolved != "fp32":
        for shared in used:
            shared.lower(resolved)
    logger.info("loaded %d model(s) on %d shared base(s), %s", len(served), len(bases), resolved)
    return served


def _base_for(bases: dict[str, SharedBase], path: Path, base: dict, own: bool) -> SharedBase:
    """The loaded base for a run (loading it on first use), checked against the run's weights hash.

    ``own``: the run's adapter trains biases, so it gets a private copy instead of the shared one.
    """
    from lorafit.models import base_location, check_base_hash
    from lorafit.models import load_encoder, weights_hash

    where = base_location(base)
    shared = None if own else bases.get(where)
    if shared is None:
        encoder, _ = load_encoder(where)
        shared = SharedBase(encoder, weights_hash(encoder))
        if own:
            logger.info("%s trains biases: it gets its own copy of the base model", path)
        else:
            bases[where] = shared
    check_base_hash(path, base, where, shared.weights_hash)
    return shared
