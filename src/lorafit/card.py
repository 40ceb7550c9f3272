"""The model card (``README.md``) written into every run directory."""
from __future__ import annotations

from lorafit.config import REGRESSION, SINGLE_LABEL
from lorafit.rundir import predict_length_of
from lorafit.tasks import format_metric

PLAIN_PEFT = '''```python
import json, torch
from transformers import AutoModel, AutoTokenizer
from peft import PeftModel

run = "THIS_DIRECTORY"
meta = json.load(open(f"{run}/lorafit.json"))
labels = meta["labels"]                                   # id2label, in id order
tokenizer = AutoTokenizer.from_pretrained(run)
base = AutoModel.from_pretrained(meta["base_model"]["path"])
base.classifier = torch.nn.Linear(base.config.hidden_size, len(labels))   # shape only; weights come from the adapter
model = PeftModel.from_pretrained(base, run).eval()

batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=meta["predict_max_length"], return_tensors="pt")
with torch.no_grad():
    hidden = model(**batch).last_hidden_state
    if meta["pooling"] == "mean":
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    else:                                                  # "cls"
        pooled = hidden[:, 0]
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
{ANSWER}
```'''
ANSWERS = {
    "single_label_classification": '''    probs = (model.classifier(pooled) / meta["calibration"]["temperature"]).softmax(-1)
print({labels[i]: float(p) for i, p in enumerate(probs[0])})''',
    "multi_label_classification": '''    scores = model.classifier(pooled).sigmoid()           # one independent score per label
thresholds = meta["task_settings"]["thresholds"] or [0.5] * len(labels)   # tuned per label on validation data
print([labels[i] for i, s in enumerate(scores[0]) if s >= thresholds[i]])''',
    "regression": '''    value = model.classifier(pooled)[:, 0]             # in the target's units (the scaling is in the head)
print(float(value[0]))'''}
"""The last lines of :data:`PLAIN_PEFT` per task: how the head's output becomes the answer."""


def _examples(manifest: dict) -> tuple[str, str]:
    """Example inputs for the card's code: lorafit's (``clf.predict``) and the tokenizer's arguments."""
    if manifest.get("text_pairs"):
        return '[("first text", "second text")]', '["first text"], ["second text"]'
    return '["some text"]', '["some text"]'


def _data(manifest: dict) -> str:
    data, cfg = manifest.get("data", {}), manifest["train_config"]
    train, val, test = data.get("train") or {}, data.get("validation"), data.get("test")
    auto = " (`auto`: the 99th percentile of the training texts' token lengths)" if manifest.get("max_length_auto") else ""
    pair = manifest.get("text_pair_column")
    lines = [f"- Input: text pairs, columns `{manifest.get('text_column')}` and `{pair}`, encoded together as "
             "`tokenizer(text, text_pair)`"] if manifest.get("text_pairs") else []
    added = train.get("label_example_rows", 0)
    added = f", plus {added} label examples made with `{cfg.get('label_template')}`" if added else ""
    lines += [f"- Training: {train.get('source', '?')}, {train.get('rows', '?')} rows{added} "
             f"({train.get('dropped_empty', 0)} empty texts dropped, {train.get('truncated', 0)} truncated at "
             f"max_length {cfg['max_length']} tokens{auto})",
             f"- Validation: {val.get('source', '?')}, {val.get('rows', '?')} rows" if val
             else "- Validation: none (trained on every row; the last state is kept)"]
    if test:
        lines.append(f"- Test (checked for leakage only): {test.get('source', '?')}, {test.get('rows', '?')} rows")
    warnings = (manifest.get("data_check") or {}).get("warnings") or []
    lines += [f"- Data warning: {w}" for w in warnings]
    return "\n".join(lines)


def _metrics_table(val_metrics: dict, metrics: dict) -> str:
    """The metrics row of the card: accuracy / macro-F1 for single-label runs, the task's own otherwise."""
    shown = {"accuracy": val_metrics.get("accuracy"), "macro_f1": val_metrics.get("macro_f1")} \
        if not val_metrics or "accuracy" in val_metrics else val_metrics
    names = [name.replace("macro_f1", "macro-F1") for name in shown]
    values = ["-" if v is None else format_metric(k, v) for k, v in shown.items()]
    return (f"| {' | '.join(names)} | best step | train time | samples/s |\n|{'---|' * (len(names) + 3)}\n"
            f"| {' | '.join(values)} | {metrics.get('best_step', '-')} | {metrics.get('train_wall_seconds', 0):.1f} s | "
            f"{metrics.get('train_samples_per_second', 0):.1f} |")


def _interpolation(cfg: dict) -> str:
    """The WiSE-FT step, when the run took one (``wise_alpha`` below 1)."""
    alpha = cfg.get("wise_alpha", 1.0)
    return "" if alpha >= 1.0 else f"weights moved back towards that start with wise_alpha={alpha} (WiSE-FT), "


def _averaging(metrics: dict) -> str:
    """The moving average of the weights, when the run kept one (``ema_decay`` above 0)."""
    decay = metrics.get("ema_decay", 0.0)
    return f"weights an exponential moving average with decay {decay:.4g}, " if decay > 0 else ""


def epochs_text(cfg: dict, metrics: dict) -> str:
    """The epochs trained (``min_steps`` may have added some), and the setting when it was ``auto``."""
    trained = metrics.get("epochs", cfg["epochs"])
    return f"{trained} (auto)" if cfg["epochs"] == "auto" else str(trained)


def model_card(manifest: dict, metrics: dict) -> str:
    """Markdown: data, labels, settings, metrics (with the data they were measured on), use and how to load."""
    labels = manifest["labels"]
    lora, cfg = manifest["lora"], manifest["train_config"]
    val_metrics = metrics.get("validation", {})
    val = (manifest.get("data") or {}).get("validation")
    measured_on = f"on the validation data ({val.get('source', '?')}, {val.get('rows', '?')} rows)" if val \
        else "none: there was no validation data, so nothing was measured; run `lorafit evaluate` on labeled data"
    example, tokenizer_args = _examples(manifest)
    shown = ", ".join(f"`{x}`" for x in labels[:20]) + (f" and {len(labels) - 20} more" if len(labels) > 20 else "")
    task = manifest.get("task", SINGLE_LABEL)
    plain = PLAIN_PEFT.replace("{ANSWER}", ANSWERS[task]).replace("TEXTS", tokenizer_args)
    load_calls = f"clf.predict({example})" if task == REGRESSION else \
        f"clf.predict({example}), clf.predict_proba({example})"  # regression has no probabilities
    intro = "" if task == SINGLE_LABEL else f"Task: {task}. "
    world = manifest.get("world_size", 1)
    processes = f" in {world} processes (data-parallel)" if world > 1 else ""
    return f"""# lorafit text classifier

{intro}A LoRA adapter and linear head on top of `{manifest['base_model']['name']}`
({cfg['pooling']} pooling, L2-normalised), trained with lorafit {manifest['lorafit_version']}.
`report.html` (next to this file) shows the training curves, the confusion matrix, per-class F1,
calibration and the most confident mistakes.

## Data
{_data(manifest)}

## Labels ({len(labels)})
{shown}

## Settings
LoRA r={lora['r']}, lora_alpha={lora['lora_alpha']}, lora_dropout={lora['lora_dropout']}, bias={lora['bias']},
target_modules={lora['target_modules'] or 'all linear layers of the encoder blocks'},
layers_to_transform={lora['layers_to_transform'] or 'all blocks'} ({metrics.get('strategy', '')});
epochs={epochs_text(cfg, metrics)}, batch_size={cfg['batch_size']}, learning_rate={cfg['learning_rate']},
max_length={cfg['max_length']} (predictions: {predict_length_of(manifest)}), seed={cfg['seed']}, head initialised from a linear probe: {cfg['probe_init']},
{_averaging(metrics)}{_interpolation(cfg)}training precision {manifest.get('train_precision', '?')}{processes}, calibration temperature
{manifest.get('calibration', {}).get('temperature', 1.0)}.

## Metrics
Measured {measured_on}, best checkpoint by {cfg['metric']}:

{_metrics_table(val_metrics, metrics)}

The validation data also picked the checkpoint, so these numbers are slightly optimistic; measure on
held-out data with `lorafit evaluate THIS_DIRECTORY test.csv --report test_report.html`.

## Intended use and limitations
Classifying short texts like the training data into the labels above. Every text gets one of these
labels, even when none fits: there is no "other" class unless the training data had one. It has not
been evaluated on other domains or languages, texts longer than {predict_length_of(manifest)} tokens are cut,
and its scores are softmax probabilities (see the reliability diagram in `report.html`), not guarantees.

## How to load
With lorafit:
```python
from lorafit import Classifier
clf = Classifier.load("THIS_DIRECTORY")
{load_calls}
```
With plain transformers + peft (the head is lorafit's mean-pooled linear layer, so
`AutoPeftModelForSequenceClassification` refuses this directory on purpose):
{plain}
"""
