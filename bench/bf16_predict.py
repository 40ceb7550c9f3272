"""How bf16 prediction should run: autocast over the fp32 weights, or a copy whose weights are bf16.

One merged export (``lorafit export RUN --format merged``), one process, every variant over the same
length-sorted batches of TEST's texts (lorafit's own batching, tokenised once beforehand, so the figures
are the forward passes alone), interleaved over --rounds rounds; texts/s per variant and its label
agreement with fp32. Variants: fp32; bf16 autocast over the fp32 weights (lorafit before the fourteenth
session); bf16 weights without autocast (``lorafit.inference.InferenceModels``) with torch's own linear
layers (the fourteenth session) and with oneDNN's fused ones (``lorafit.fusion``, what lorafit runs now),
and the fusion in steps: bias only, then GELU, then the residual sums; each at exact widths and padded to
multiples of 8 (lorafit's bf16 default); and the unfused bf16 copy with eager attention instead of SDPA, with
SDPA's math kernel instead of its flash kernel, and with the tanh approximation of GELU (within bf16's
rounding of the exact one).

Usage: python bench/bf16_predict.py MERGED_EXPORT TEST.csv OUT.jsonl [--threads 1] [--rounds 3]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import unittest.mock

import numpy as np
import pandas as pd
import torch

from common import Sink


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("export"); p.add_argument("test"); p.add_argument("out")
    p.add_argument("--threads", type=int, default=1); p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from lorafit.data import tokenize
    from lorafit.exported import load_merged
    from lorafit import fusion
    from lorafit.inference import InferenceModels, map_sorted, token_batches

    texts = pd.read_csv(a.test, dtype=str, keep_default_na=False)["text"].tolist()
    merged = load_merged(a.export)
    encoded = tokenize(merged.tokenizer, texts, merged.max_length)
    fp32 = merged.model.eval()
    fused, _ = merged._models.get(fp32, "bf16")  # the copy lorafit predicts with
    steps = {}
    for step, (gelu, residual) in {"bias": (lambda _: False, frozenset()),
                                   "bias, GELU": (fusion._exact_gelu, frozenset())}.items():
        with unittest.mock.patch.object(fusion, "_exact_gelu", gelu), \
                unittest.mock.patch.object(fusion, "RESIDUAL_BLOCKS", residual):
            steps[step] = InferenceModels("classifier").get(fp32, "bf16")[0]
    with unittest.mock.patch.dict(os.environ, {"LORAFIT_FUSED_LINEARS": "0"}):
        bf16 = InferenceModels("classifier").get(fp32, "bf16")[0]  # the fourteenth session's copy
    eager, tanh = copy.deepcopy(bf16), copy.deepcopy(bf16)
    eager.encoder.set_attn_implementation("eager")
    eager_tanh = copy.deepcopy(eager)
    for model in (tanh, eager_tanh):
        for block in model.encoder.encoder.layer:
            block.intermediate.intermediate_act_fn = torch.nn.GELU(approximate="tanh")

    def variant(model: torch.nn.Module, autocast: bool, multiple: int, math: bool = False):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        make = token_batches(encoded, merged.tokenizer.pad_token_id, multiple)

        @torch.inference_mode()
        def one(batch: dict) -> np.ndarray:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), \
                    sdpa_kernel(SDPBackend.MATH if math else [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
                return model(**batch).logits.float().numpy()
        return lambda: map_sorted(encoded.lengths, make, 256, one)

    table = {"fp32": variant(fp32, False, 1),
             "bf16 autocast, fp32 weights, exact widths": variant(fp32, True, 1),
             "bf16 autocast, fp32 weights, widths x8": variant(fp32, True, 8),
             "bf16 weights, exact widths": variant(bf16, False, 1),
             "bf16 weights, widths x8": variant(bf16, False, 8),
             "bf16 weights, fused bias, widths x8": variant(steps["bias"], False, 8),
             "bf16 weights, fused bias and GELU, widths x8": variant(steps["bias, GELU"], False, 8),
             "bf16 weights, fused bias, GELU and residual sums, widths x8 (lorafit now)": variant(fused, False, 8),
             "bf16 weights, fused bias, GELU and residual sums, exact widths": variant(fused, False, 1),
             "bf16 weights, widths x8, eager attention": variant(eager, False, 8),
             "bf16 weights, widths x8, SDPA math kernel": variant(bf16, False, 8, math=True),
             "bf16 weights, widths x8, tanh GELU": variant(tanh, False, 8),
             "bf16 weights, exact widths, eager attention, tanh GELU": variant(eager_tanh, False, 1)}
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    sink.facts["threads"] = a.threads
    reference = table["fp32"]().argmax(1)
    speeds: dict[str, list[float]] = {name: [] for name in table}
    agreement: dict[str, float] = {}
    for _ in range(a.rounds):
        for name, run in table.items():
            start = time.perf_counter()
            labels = run().argmax(1)
            speeds[name].append(len(texts) / (time.perf_counter() - start))
            agreement[name] = float(np.mean(labels == reference))
    for name, values in speeds.items():
        sink.keep({"variant": name, "texts": len(texts), "texts_per_s_median": round(statistics.median(values), 1),
                   "texts_per_s_rounds": [round(v, 1) for v in values],
                   "label_agreement_with_fp32": round(agreement[name], 4)})


if __name__ == "__main__":
    main()
