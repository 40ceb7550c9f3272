"""What a training checkpoint costs on the default model: size on disk and time to write and to read it back.

MiniLM-L6 with the default LoRA settings and a 77-label head (BANKING77's), AdamW moments filled by one step.

    .venv/bin/python bench/checkpoint_cost.py --out bench/results/checkpoint_cost.jsonl
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Sink  # noqa: E402
from lorafit.checkpoint import Checkpoints, TrainingState, optimizer_tensors, rng_snapshot  # noqa: E402
from lorafit.config import LoraSettings  # noqa: E402
from lorafit.models import build_classifier, load_encoder, resolve_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="bench/results/checkpoint_cost.jsonl")
    args = parser.parse_args()
    encoder, tokenizer = load_encoder("minilm")
    model = build_classifier(encoder, [f"c{i}" for i in range(77)], "mean", LoraSettings(), resolve_model("minilm"))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    batch = tokenizer(["a short text to fill the optimizer state"] * 4, return_tensors="pt")
    torch.nn.functional.cross_entropy(model(**batch), torch.zeros(4, dtype=torch.long)).backward()
    optimizer.step()
    trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    tensors, groups = optimizer_tensors(optimizer)
    rng, python_rng = rng_snapshot()
    tensors.update(rng)
    tensors.update({f"trainable/{k}": v for k, v in trainable.items()})
    tensors.update({f"best/{k}": v.clone() for k, v in trainable.items()})
    info = {"optimizer": groups, "python_rng": python_rng, "history": [{"step": i} for i in range(50)]}
    plan = Checkpoints(tempfile.mkdtemp(prefix="ckpt-"), 200, {"settings": {}})
    writes, reads = [], []
    for step in range(1, args.repeats + 1):
        started = time.perf_counter()
        path = plan.save(TrainingState(step, 0, step, {}, dict(tensors), dict(info)))
        writes.append(time.perf_counter() - started)
        started = time.perf_counter()
        plan.load()
        reads.append(time.perf_counter() - started)
    size = sum(f.stat().st_size for f in path.iterdir())
    Sink(args.out, " ".join(["python"] + sys.argv)).keep({
        "bench": "checkpoint_cost", "model": "minilm", "labels": 77,
        "trainable_parameters": sum(p.numel() for p in params), "checkpoint_mb": round(size / 2**20, 2),
        "write_ms_median": round(1e3 * statistics.median(writes), 1),
        "read_and_verify_ms_median": round(1e3 * statistics.median(reads), 1), "repeats": args.repeats})


if __name__ == "__main__":
    main()
