"""lorafit leaves OpenMP's wait policy to libgomp's default (spin, then sleep) or to the user: PASSIVE, which
it set until 2026-11-30, made small training steps twice as slow on an idle machine (BENCHMARKS.md, ninth
session)."""
from __future__ import annotations

import os
import subprocess
import sys


def _policy_after_import(env: dict) -> str:
    code = "import lorafit, os; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_import_leaves_the_wait_policy_to_libgomp_and_the_user() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy_after_import(env) == "unset"
    assert _policy_after_import({**env, "OMP_WAIT_POLICY": "PASSIVE"}) == "PASSIVE"
