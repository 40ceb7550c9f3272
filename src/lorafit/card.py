"""The model card (``README.md``) written into every run directory."""
from __future__ import annotations


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def model_card(manifest: dict, metrics: dict) -> str:
    """Markdown: data, labels, settings, metrics (with the data they were measured on) and how to load."""
    labels = manifest["labels"]
    data = manifest.get("data", {})
    train, val = data.get("train", {}), data.get("validation") or {}
    lora, cfg = manifest["lora"], manifest["train_config"]
    val_metrics = metrics.get("validation", {})
    shown = ", ".join(f"`{x}`" for x in labels[:20]) + (f" and {len(labels) - 20} more" if len(labels) > 20 else "")
    return f"""# lorafit text classifier

A LoRA adapter and linear head on top of `{manifest['base_model']['name']}`
({cfg['pooling']} pooling, L2-normalised), trained with lorafit {manifest['lorafit_version']}.

## Data
- Training: {train.get('source', '?')}, {train.get('rows', '?')} rows ({train.get('dropped_empty', 0)} empty texts dropped, {train.get('truncated', 0)} truncated at {cfg['max_length']} tokens)
- Validation: {f"{val.get('source', '?')}, {val.get('rows', '?')} rows" if val else 'none (trained on every row; the last state is kept)'}
- Labels ({len(labels)}): {shown}

## Settings
LoRA r={lora['r']}, lora_alpha={lora['lora_alpha']}, lora_dropout={lora['lora_dropout']}, bias={lora['bias']},
target_modules={lora['target_modules'] or 'all linear layers of the encoder blocks'},
layers_to_transform={lora['layers_to_transform'] or 'all blocks'} ({metrics.get('strategy', '')});
epochs={cfg['epochs']}, batch_size={cfg['batch_size']}, learning_rate={cfg['learning_rate']},
head initialised from a linear probe: {cfg['probe_init']}, training precision {manifest.get('train_precision', '?')}.

## Metrics (validation data above, best checkpoint by {cfg['metric']})
| accuracy | macro-F1 | best step | train time | samples/s |
|---|---|---|---|---|
| {_pct(val_metrics.get('accuracy'))} | {_pct(val_metrics.get('macro_f1'))} | {metrics.get('best_step', '-')} | {metrics.get('train_wall_seconds', 0):.1f} s | {metrics.get('train_samples_per_second', 0):.1f} |

## Intended use
Classifying short texts like the training data into the labels above. It has not been evaluated
on other domains, and its scores are softmax probabilities, not guarantees.

## How to load
```python
from lorafit import Classifier
clf = Classifier.load("THIS_DIRECTORY")
clf.predict(["some text"]), clf.predict_proba(["some text"])
```
With plain transformers + peft, see "Loading a run without lorafit" in lorafit's README.
"""
