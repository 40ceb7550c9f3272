"""Label agreement of an ONNX int8 export with the fp32 export of the same run, on a labeled test file.

Usage: python bench/int8_agreement.py RUN_DIR TEST.csv OUT.jsonl [--both-widths]
Exports RUN_DIR as ONNX fp32 and int8 (lorafit's default weight width for this CPU: 7 bits where x86 has no
VNNI, see ``lorafit.export.int8_saturates``); with ``--both-widths`` also with 8-bit weights, for the A/B.
Results: bench/results/banking77_int8_avx2.jsonl, summarised in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

from common import Sink


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run"); p.add_argument("test"); p.add_argument("out")
    p.add_argument("--both-widths", action="store_true", help="also export with 8-bit weights")
    a = p.parse_args()
    import lorafit.export as export
    from lorafit.onnx_model import load_onnx

    sink = Sink(a.out, "python " + " ".join(sys.argv))
    test = pd.read_csv(a.test, keep_default_na=False, dtype=str)
    texts, gold = test["text"].tolist(), test["label"].to_numpy()
    with tempfile.TemporaryDirectory() as work:
        export.export_onnx(a.run, Path(work, "fp32"))
        reference = np.array(load_onnx(Path(work, "fp32")).predict(texts))
        widths = [(None, "default")] + ([(False, "8-bit")] if a.both_widths else [])
        for saturates, name in widths:
            target = Path(work, name)
            if saturates is None:
                export.export_onnx(a.run, target, quantize="int8")
            else:
                with mock.patch.object(export, "int8_saturates", lambda *_, **__: saturates):
                    export.export_onnx(a.run, target, quantize="int8")
            labels = np.array(load_onnx(target).predict(texts))
            manifest = pd.read_json(target / export.EXPORT_MANIFEST, typ="series")
            sink.keep({"weights": "7-bit (reduce_range)" if manifest.get("reduce_range") else "8-bit",
                       "lorafit_default": saturates is None, "rows": len(texts),
                       "agreement": float((labels == reference).mean()), "differ": int((labels != reference).sum()),
                       "fp32_accuracy": float((reference == gold).mean()), "int8_accuracy": float((labels == gold).mean()),
                       "fp32_matmuls": int(manifest["fp32_matmuls"])})


if __name__ == "__main__":
    main()
