# Copied unchanged from lorafit's shared reference recipes (../shared/reference/reference_recipe.py, lorafit maintainers).
"""The recipe of peft-boilerplate.md (beside this file), as written, on a local model and CSV data.

Only the changes needed to run it at all: transformers v5 spells
`evaluation_strategy` as `eval_strategy`; the model comes from a local
directory; tokenization uses dynamic padding (DataCollatorWithPadding), the
kindest reading of "assumes you already have a tokenized dataset".
Usage: python reference_recipe.py MODEL_DIR TRAIN.csv TEST.csv OUT [epochs] [max_train] [eval_steps]
Prints a JSON line with train samples/s, wall time and final test accuracy.
"""
import json, sys, time
import numpy as np, torch
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          EarlyStoppingCallback, Trainer, TrainingArguments)
from peft import get_peft_model, LoraConfig, TaskType

model_dir, train_csv, test_csv, out = sys.argv[1:5]
epochs = float(sys.argv[5]) if len(sys.argv) > 5 else 5
max_train = int(sys.argv[6]) if len(sys.argv) > 6 else 0
eval_steps = int(sys.argv[7]) if len(sys.argv) > 7 else 20
ds = load_dataset("csv", data_files={"train": train_csv, "test": test_csv})
if max_train:
    ds["train"] = ds["train"].shuffle(seed=0).select(range(min(max_train, len(ds["train"]))))
labels = sorted(set(ds["train"]["label"]))
l2i = {l: i for i, l in enumerate(labels)}
tokenizer = AutoTokenizer.from_pretrained(model_dir)
tokenized = ds.map(lambda b: {**tokenizer(b["text"], truncation=True), "labels": [l2i[x] for x in b["label"]]},
                   batched=True, remove_columns=["text", "label"])
model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(labels))
config = LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=32, lora_dropout=0.1, bias="none")
model = get_peft_model(model, config)
model.print_trainable_parameters()

def compute_metrics(eval_pred):
    predictions, labels_ = eval_pred
    predictions = np.argmax(predictions, axis=1)
    return {"accuracy": (predictions == labels_).mean()}

args = TrainingArguments(output_dir=out, per_device_train_batch_size=16, num_train_epochs=epochs,
                         learning_rate=2e-4, eval_strategy="steps", eval_steps=eval_steps, save_steps=eval_steps,
                         load_best_model_at_end=True, metric_for_best_model="accuracy",
                         save_total_limit=2, report_to=[], disable_tqdm=True, logging_steps=10**9)
trainer = Trainer(model=model, args=args, train_dataset=tokenized["train"], eval_dataset=tokenized["test"],
                  data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=compute_metrics,
                  callbacks=[EarlyStoppingCallback(early_stopping_patience=2)])
t0 = time.time()
res = trainer.train()
wall = time.time() - t0
ev = trainer.evaluate()
print(json.dumps({"train_wall_s": round(wall, 1), "train_samples_per_s": round(res.metrics["train_samples_per_second"], 1),
                  "steps": res.global_step, "test_accuracy": round(float(ev["eval_accuracy"]), 4),
                  "torch_threads": torch.get_num_threads()}))
