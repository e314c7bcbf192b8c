"""The benchmark scripts that a person runs rarely must still run: the GPU check's dry run on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_passes_on_the_cpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    assert figures["pipeline"]["preset"] == "micro" and set(figures["pipeline"]["learns"]) >= {"mlm", "grpo"}
    assert figures["mfu"]["mfu"] > 0 and figures["mfu"]["achieved_tflops"] > 0
    assert set(figures["generation_tokens_per_s"]) == {"1", "64"}
    assert all(v > 0 for v in figures["generation_tokens_per_s"].values())
