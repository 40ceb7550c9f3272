"""bench/gpu_train.py: without a CUDA GPU it says so and writes nothing (CI never needs a GPU)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_train.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: the script would train")
def test_without_cuda_the_script_stops_with_a_message(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPT), "train.csv", "test.csv", "--results", str(results)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr and "Nothing was written" in proc.stderr
    assert not results.exists()
