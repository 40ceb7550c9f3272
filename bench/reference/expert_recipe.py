# Copied unchanged from lorafit's shared reference recipes (../shared/reference/expert_recipe.py, lorafit maintainers).
"""A well-tuned HF Trainer + peft recipe: what an expert writes by hand. lorafit must beat it.

Usage: python expert_recipe.py MODEL_DIR TRAIN.csv TEST.csv OUT [--epochs 3] [--bf16] [--group] [--bs 32]
        [--lr 1e-3] [--targets query,key,value,dense] [--r 16] [--max-train N]
Prints one JSON line: train samples/s, wall, test accuracy.
"""
import argparse, json, time
import numpy as np, torch
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainingArguments)
from peft import get_peft_model, LoraConfig, TaskType

p = argparse.ArgumentParser()
p.add_argument("model_dir"); p.add_argument("train"); p.add_argument("test"); p.add_argument("out")
p.add_argument("--epochs", type=float, default=3); p.add_argument("--bf16", action="store_true")
p.add_argument("--group", action="store_true"); p.add_argument("--bs", type=int, default=32)
p.add_argument("--lr", type=float, default=1e-3); p.add_argument("--targets", default="query,key,value,dense")
p.add_argument("--r", type=int, default=16); p.add_argument("--max-train", type=int, default=0)
a = p.parse_args()
ds = load_dataset("csv", data_files={"train": a.train, "test": a.test})
if a.max_train:
    ds["train"] = ds["train"].shuffle(seed=0).select(range(min(a.max_train, len(ds["train"]))))
labels = sorted(set(ds["train"]["label"])); l2i = {l: i for i, l in enumerate(labels)}
tok = AutoTokenizer.from_pretrained(a.model_dir)
tokd = ds.map(lambda b: {**tok(b["text"], truncation=True, max_length=128), "labels": [l2i[x] for x in b["label"]]},
              batched=True, remove_columns=["text", "label"])
model = AutoModelForSequenceClassification.from_pretrained(a.model_dir, num_labels=len(labels))
cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=a.r, lora_alpha=2 * a.r, lora_dropout=0.1,
                 target_modules=a.targets.split(","), modules_to_save=["classifier", "pooler"])
model = get_peft_model(model, cfg); model.print_trainable_parameters()
args = TrainingArguments(output_dir=a.out, per_device_train_batch_size=a.bs, per_device_eval_batch_size=128,
                         num_train_epochs=a.epochs, learning_rate=a.lr, warmup_steps=0.06, weight_decay=0.01,
                         eval_strategy="no", save_strategy="no", bf16=a.bf16, use_cpu=True, train_sampling_strategy=("group_by_length" if a.group else "random"),
                         report_to=[], disable_tqdm=True, logging_steps=10**9)
tr = Trainer(model=model, args=args, train_dataset=tokd["train"], data_collator=DataCollatorWithPadding(tok))
t0 = time.time(); res = tr.train(); wall = time.time() - t0
t1 = time.time(); pred = tr.predict(tokd["test"]); pwall = time.time() - t1
acc = float((pred.predictions.argmax(-1) == pred.label_ids).mean())
print(json.dumps({"train_wall_s": round(wall, 1), "train_samples_per_s": round(res.metrics["train_samples_per_second"], 1),
                  "test_accuracy": round(acc, 4), "predict_samples_per_s": round(len(tokd["test"]) / pwall, 1),
                  "bf16": a.bf16, "group": a.group, "bs": a.bs, "lr": a.lr, "targets": a.targets, "r": a.r}))
