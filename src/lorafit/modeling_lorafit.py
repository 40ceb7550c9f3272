"""lorafit's classifier as transformers custom code: an encoder, lorafit's pooling and a linear head.

This file is copied into every merged export (``lorafit export --format merged``) and named in its
``config.json`` ``auto_map``, so plain transformers loads the export with ``trust_remote_code=True``::

    model = AutoModelForSequenceClassification.from_pretrained(export_dir, trust_remote_code=True)

It must import nothing but torch and transformers. The head sees the L2-normalised mean (or [CLS])
token state, which no standard ``*ForSequenceClassification`` class computes; its own ``model_type``
(``lorafit``) makes the standard loaders refuse the directory instead of answering with another head.
The calibration temperature is already folded into the head, so the logits are calibrated.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class LorafitConfig(PretrainedConfig):
    """The base encoder's configuration (``encoder``, a dict) plus lorafit's pooling rule."""

    model_type = "lorafit"

    def __init__(self, encoder: dict | None = None, pooling: str = "mean", **kwargs) -> None:
        self.encoder = dict(encoder or {})
        self.pooling = pooling
        super().__init__(**kwargs)
        if self.encoder:
            self.hidden_size = self.encoder.get("hidden_size")

    def encoder_config(self) -> PretrainedConfig:
        """The base encoder's own configuration object (e.g. a ``BertConfig``)."""
        settings = dict(self.encoder)
        return AutoConfig.for_model(settings.pop("model_type"), **settings)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str, normalize: bool = True) -> torch.Tensor:
    """One vector per text: the mean of its real tokens' states (``mean``) or its first ([CLS]) state
    (``cls``), L2-normalised unless ``normalize`` is False (the head always sees it normalised). Computed in fp32
    whatever ``hidden``'s dtype (a bf16 model's states are summed in fp32)."""
    hidden = hidden.float()
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return nn.functional.normalize(pooled, dim=-1) if normalize else pooled


class LorafitForSequenceClassification(PreTrainedModel):
    """Encoder -> lorafit pooling -> ``classifier`` (linear); ``forward`` returns calibrated logits."""

    config_class = LorafitConfig
    base_model_prefix = "encoder"

    def __init__(self, config: LorafitConfig) -> None:
        super().__init__(config)
        self.encoder = AutoModel.from_config(config.encoder_config())
        self.classifier = nn.Linear(config.encoder["hidden_size"], config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if module is getattr(self, "classifier", None):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled, L2-normalised vector the head sees, one per text."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        return pool(hidden, attention_mask, self.config.pooling)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss transformers uses for the config's ``problem_type`` (cross-entropy when it is unset)."""
        if self.config.problem_type == "regression":
            return nn.functional.mse_loss(logits.squeeze(-1), labels.float())
        if self.config.problem_type == "multi_label_classification":
            return nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
        return nn.functional.cross_entropy(logits, labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                return_dict: bool | None = None, **kwargs) -> SequenceClassifierOutput:
        logits = self.classifier(self.embed(input_ids, attention_mask, token_type_ids))
        loss = None if labels is None else self._loss(logits, labels)
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)
