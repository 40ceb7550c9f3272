"""Batch prediction throughput (texts/s) on one test set, every method measured interleaved in one process.

Methods, all on the same trained lorafit run:
  - the PEFT boilerplate's one-text-at-a-time ``predict()`` (../shared/reference/peft-boilerplate.md,
    "Step 4", reproduced verbatim below), on the run's PEFT model as the boilerplate leaves it (LoRA not
    merged), and on the merged export; measured on the first --boilerplate-texts texts;
  - transformers ``pipeline("text-classification")`` with batching (--pipeline-batch) on the merged export;
  - lorafit: ``Classifier.predict_proba`` on the run directory and the merged export in torch (fp32, and
    the bf16 opt-in, a copy with bf16 weights, only on CPUs with native bf16), the ONNX export fp32 and int8 (onnxruntime), each
    with length-sorted batches.
Rounds are interleaved (every method once per round) so a busy neighbour slows all alike; medians and
ratios are reported. The int8-vs-fp32 label agreement and every path's accuracy are measured on the
whole test set.

Usage: python bench/predict_speed.py RUN_DIR TEST.csv OUT.jsonl [--rounds 3] [--boilerplate-texts 300]
(RUN_DIR from `lorafit train`, e.g. on BANKING77's train.csv; the exports are written to a temp dir.)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from common import Sink, machine

model = tokenizer = None  # the boilerplate's predict() reads these two globals, as in its notebook


# From ../shared/reference/peft-boilerplate.md, "Step 4: Inference with Softmax Scores" (verbatim).
def predict(text):
    inputs = tokenizer(text, return_tensors="pt", truncation=True).to(model.device)
    with torch.no_grad():
        logits = model(**inputs).logits
        probs = torch.nn.functional.softmax(logits, dim=-1)
    return probs


class PeftWithLogits(torch.nn.Module):
    """The run's PEFT model (LoRA unmerged, lorafit's head) behind the boilerplate's ``model(**inputs).logits``."""

    def __init__(self, classifier: torch.nn.Module) -> None:
        super().__init__()
        self.inner = classifier.eval()

    @property
    def device(self) -> torch.device:
        return next(self.inner.parameters()).device

    def forward(self, **inputs: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.inner(**inputs))


def boilerplate(the_model, the_tokenizer):
    def run(texts: list[str]) -> list[int]:
        global model, tokenizer
        model, tokenizer = the_model, the_tokenizer
        return [int(predict(text).argmax()) for text in texts]
    return run


BF16_MERGED = "lorafit merged export (torch bf16)"


def methods(run_dir: str, work: Path, pipeline_batch: int, threads: int) -> dict:
    """name -> (function texts -> label ids, whether it gets the boilerplate subset)."""
    from transformers import AutoModelForSequenceClassification, pipeline

    from lorafit import Classifier
    from lorafit.export import export_merged, export_onnx
    from lorafit.inference import bf16_supported
    from lorafit.exported import load_merged
    from lorafit.onnx_model import load_onnx

    export_merged(run_dir, work / "merged")
    export_onnx(run_dir, work / "onnx")
    export_onnx(run_dir, work / "int8", quantize="int8")
    clf = Classifier.load(run_dir)
    index = {label: i for i, label in enumerate(clf.classes_)}
    merged_hf = AutoModelForSequenceClassification.from_pretrained(work / "merged", trust_remote_code=True).eval()
    merged_tok = load_merged(work / "merged").tokenizer
    pipe = pipeline("text-classification", model=str(work / "merged"), tokenizer=merged_tok, trust_remote_code=True)
    merged, onnx, int8 = load_merged(work / "merged"), load_onnx(work / "onnx", threads), load_onnx(work / "int8", threads)

    def labels(predictor):
        return lambda texts: [index[label] for label in predictor.predict(texts)]

    bf16 = {}
    if bf16_supported(torch.device("cpu")):  # elsewhere torch emulates bf16, far slower than fp32: not a path
        clf_bf16, merged_bf16 = Classifier.load(run_dir), load_merged(work / "merged")
        clf_bf16.inference_precision = merged_bf16.inference_precision = "bf16"
        bf16 = {"lorafit Classifier (run dir, torch bf16)": (labels(clf_bf16), False),
                BF16_MERGED: (labels(merged_bf16), False)}
    return {
        "boilerplate predict(), PEFT model": (boilerplate(PeftWithLogits(clf.model), clf.tokenizer), True),
        "boilerplate predict(), merged export": (boilerplate(merged_hf, merged_tok), True),
        f"transformers pipeline, merged export, batch_size={pipeline_batch}": (
            lambda texts: [index[r["label"]] for r in pipe(texts, batch_size=pipeline_batch, truncation=True)], False),
        "lorafit Classifier (run dir, torch fp32)": (labels(clf), False),
        "lorafit merged export (torch fp32)": (labels(merged), False),
        **bf16,
        "lorafit ONNX fp32": (labels(onnx), False),
        "lorafit ONNX int8": (labels(int8), False),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir"); p.add_argument("test"); p.add_argument("out")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--boilerplate-texts", type=int, default=300)
    p.add_argument("--pipeline-batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1,
                   help="torch and onnxruntime intra-op threads for every method (1: steady on a shared machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    test = pd.read_csv(args.test, dtype=str, keep_default_na=False)
    texts, gold = test["text"].tolist(), test["label"].tolist()
    sink = Sink(args.out, "python bench/predict_speed.py " + " ".join(sys.argv[1:]))
    sink.facts.update({**machine(("torch", "transformers", "peft", "onnxruntime")), "threads": args.threads})
    with tempfile.TemporaryDirectory() as work:
        table = methods(args.run_dir, Path(work), args.pipeline_batch, args.threads)
        speeds: dict[str, list[float]] = {name: [] for name in table}
        predictions: dict[str, list[int]] = {}
        for round_ in range(args.rounds):
            for name, (run, subset) in table.items():
                batch = texts[:args.boilerplate_texts] if subset else texts
                start = time.perf_counter()
                predictions[name] = run(batch)
                speeds[name].append(len(batch) / (time.perf_counter() - start))
                print(f"round {round_ + 1}: {name}: {speeds[name][-1]:.1f} texts/s", file=sys.stderr, flush=True)
        from lorafit import Classifier

        classes = Classifier.load(args.run_dir).classes_
    summarise(sink, table, speeds, predictions, classes, texts, gold, args)


def summarise(sink: Sink, table: dict, speeds: dict, predictions: dict, classes: list[str], texts: list[str],
              gold: list[str], args: argparse.Namespace) -> None:
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    for name, (_, subset) in table.items():
        n = args.boilerplate_texts if subset else len(texts)
        accuracy = float(np.mean([classes[i] == g for i, g in zip(predictions[name], gold[:n])]))
        sink.keep({"method": name, "texts": n, "texts_per_s_median": round(medians[name], 1),
                   "texts_per_s_rounds": [round(v, 1) for v in speeds[name]], "accuracy": round(accuracy, 4)})
    lorafit = {k: v for k, v in medians.items() if k.startswith("lorafit")}
    fastest = max(lorafit, key=lorafit.get)
    pipeline_name = next(k for k in medians if k.startswith("transformers pipeline"))
    fp32, int8 = np.array(predictions["lorafit ONNX fp32"]), np.array(predictions["lorafit ONNX int8"])
    bf16 = np.array(predictions[BF16_MERGED]) if BF16_MERGED in predictions else None
    sink.keep({"summary": True, "rounds": args.rounds, "fastest_lorafit": fastest,
               "fastest_lorafit_texts_per_s": round(medians[fastest], 1),
               "x_boilerplate_peft": round(medians[fastest] / medians["boilerplate predict(), PEFT model"], 1),
               "x_boilerplate_merged": round(medians[fastest] / medians["boilerplate predict(), merged export"], 1),
               "x_pipeline": round(medians[fastest] / medians[pipeline_name], 2),
               "int8_vs_fp32_label_agreement": round(float(np.mean(fp32 == int8)), 4),
               "int8_disagreements": int(np.sum(fp32 != int8)),
               "bf16_vs_fp32_label_agreement": None if bf16 is None else round(float(np.mean(fp32 == bf16)), 4),
               "test_rows": len(texts)})


if __name__ == "__main__":
    main()
